"""The thin host loop: compile once, call the same compiled chunk again and again, evaluate,
checkpoint, log. Between evaluations the host reads only a few scalars per chunk (the finite
checks, which also pace the progress bar).

How a run ends (`exit_on_error` turns these into the scripts' exit codes):

- 0: done; summary.json written, last checkpoint at the final iteration.
- 2: bad input (ConfigError): one line on stderr, before anything is allocated or written. This
  includes a run that cannot fit in device memory, and every --resume problem.
- 3: a non-finite loss or parameter: the run stops at the end of that chunk, naming iteration
  and quantity; the bad state is not saved, so the last checkpoint is the last good one.
- 130 / 143: SIGINT (Ctrl-C) / SIGTERM: the current chunk finishes (and its evaluation if one
  is due), a checkpoint is written, and the run exits; `--resume` continues it. A second
  Ctrl-C aborts at once without a checkpoint.
"""

import importlib.metadata
import os
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import purejaxbrc
from purejaxbrc.checkpoint import Checkpoints, empty_buffers, join, split
from purejaxbrc.config import ConfigError
from purejaxbrc.runlog import RunLog, check_run_dir  # noqa: F401  (check_run_dir: re-exported)
from purejaxbrc.train import make_train

EXIT_NON_FINITE = 3
PACKAGES = ("jax", "jaxlib", "equinox", "optax", "orbax-checkpoint", "mujoco", "mujoco-mjx",
            "playground", "gymnax", "purejaxbrc")


class RunStopped(Exception):
    """The run stopped before its end; `code` is the process exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def enable_compilation_cache(path: str | None = None) -> None:
    """JAX's persistent compilation cache: a humanoid step compiles once per machine."""
    path = path or os.environ.get("PUREJAXBRC_CACHE", str(Path.home() / ".cache" / "purejaxbrc" / "jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def exit_on_error(fn):
    """Run `fn()`; a ConfigError becomes one line on stderr and exit code 2, a RunStopped its
    message and code."""
    try:
        return fn()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunStopped as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.code)


exit_on_config_error = exit_on_error  # the older name


def seed_keys(seed: int, num_seeds: int):
    """Seed `seed + i` has key PRNGKey(seed + i): a vmapped run equals separate runs."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])


# -- the state: built, sized and checked ---------------------------------------------------------
def strong_types(tree):
    """Drop weak types (e.g. gymnax's `time = 0`): a state restored from disk is strongly typed,
    and a fresh state must be too, or the two would compile to different programs."""
    return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), tree)


def vmapped_init(trainer):
    return jax.vmap(lambda key: strong_types(trainer.init(key)))


def finite_flags(agent_state):
    """Per field of the agent state (networks, targets, optimiser states, temperature): are all
    its float entries finite? Scalars, so the host check costs no transfer."""
    def finite(tree):
        leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
        return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)
    fields = getattr(agent_state, "_fields", None)
    if fields is None:
        return {"params": finite(agent_state)}
    return {name: finite(getattr(agent_state, name)) for name in fields}


def guarded_chunk(trainer):
    def chunk(state, it, learn_from):
        state, metrics = trainer.chunk(state, it, learn_from)
        return state, metrics, finite_flags(state.agent)
    return chunk


# XLA:CPU hands dots, reductions and elementwise fusions to YNNPACK by default. At our layer
# sizes its reductions (LayerNorm, softmax) run several times slower than XLA's own loops, most
# of all under the seed vmap: keeping YNNPACK to dots made a one-seed learning iteration 28%
# faster here (README, "Performance"). Options only change how XLA:CPU runs the program.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def compile_lowered(lowered):
    """`lowered.compile()`, with `CPU_COMPILER_OPTIONS` on the CPU backend where this XLA knows
    them (a jaxlib without the option compiles with its defaults)."""
    if jax.default_backend() == "cpu":
        try:
            return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
        except jax.errors.JaxRuntimeError as e:
            if not any(name in str(e) for name in CPU_COMPILER_OPTIONS):
                raise
    return lowered.compile()


def compile_chunk(trainer, state, it, learn_from):
    """The guarded chunk over the seed axis with the state donated, compiled ahead of time for
    `state`'s shapes: `(state, it, learn_from) -> (state, metrics, finite flags)`.

    Many seeds are vmapped. One seed runs the chunk itself on the squeezed state: a vmap of
    size one turns every dot into a batched dot, which XLA:CPU runs more slowly.
    """
    chunk = guarded_chunk(trainer)
    if jax.tree.leaves(state)[0].shape[0] == 1:
        def over_seeds(state, it, learn_from):
            out = chunk(jax.tree.map(lambda x: x[0], state), it, learn_from)
            return jax.tree.map(lambda x: x[None], out)
    else:
        over_seeds = jax.vmap(chunk, in_axes=(0, None, None))
    lowered = jax.jit(over_seeds, donate_argnums=0).lower(state, jnp.int32(it), jnp.int32(learn_from))
    return compile_lowered(lowered)


def non_finite(metrics, flags, seeds) -> str | None:
    """`"critic_loss (seed 0)"` for the first non-finite metric or agent field, else None."""
    for kind, values in (("", metrics), ("parameters in ", flags)):
        for name, v in values.items():
            v = np.asarray(v)
            bad = ~np.isfinite(v) if kind == "" else ~v
            if bad.any():
                return f"{kind}{name} (seed {', '.join(str(s) for s, b in zip(seeds, bad) if b)})"
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def memory_needed(abstract) -> dict:
    """Bytes of the training state by part, from its eval_shape (nothing allocated)."""
    size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    return dict(buffers=size(abstract.buffer), networks=size(abstract.agent),
                rest=size(abstract) - size(abstract.buffer) - size(abstract.agent))


def memory_limit() -> tuple[int, str]:
    """The device's memory when it reports one (GPU, TPU), else the host's available RAM."""
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024, "available host RAM"


def check_memory(abstract, limit: tuple[int, str] | None = None) -> None:
    """ConfigError when the state alone (replay buffers, networks with targets and optimiser
    states, environments) exceeds the memory there is; activations come on top of it."""
    need = memory_needed(abstract)
    total = sum(need.values())
    limit_bytes, where = limit or memory_limit()
    if total > limit_bytes:
        raise ConfigError(
            f"the run needs at least {_gib(total)} ({_gib(need['buffers'])} replay buffers + "
            f"{_gib(need['networks'])} networks and optimiser states + {_gib(need['rest'])} "
            f"environments), more than the {_gib(limit_bytes)} of {where}; lower "
            f"--buffer-capacity, --num-envs, --num-seeds or the network widths")


def run_info(kind: str | None) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["purejaxbrc"] = versions["purejaxbrc"] or purejaxbrc.__version__  # run from a checkout
    device = jax.devices()[0]
    return dict(kind=kind, versions=versions, device=str(device.device_kind),
                backend=jax.default_backend(), num_devices=jax.device_count(),
                jax=jax.__version__)  # `jax` kept for readers of the first run_info.json


# -- where a run starts ---------------------------------------------------------------------------
class Start(NamedTuple):
    state: object
    iteration: int
    learn_from: int  # first iteration with gradient steps
    wall_s: float  # training time so far, without compiling
    compile_s: float


def fresh_start(config, init, keys) -> Start:
    # Committed to the device like a restored state, so both lower to the same program (and
    # a resumed run finds the fresh run's compiled chunk in the persistent cache).
    state = jax.device_put(jax.jit(init)(keys), jax.devices()[0])
    return Start(state, 0, config.warmup_iterations, 0.0, 0.0)


def resumed_start(config, ckpts: Checkpoints, abstract, log) -> Start:
    """The last readable checkpoint; without buffers, they restart empty and learning pauses
    for a warm-up's worth of iterations to refill them."""
    got = ckpts.restore_latest(abstract, config.to_dict())
    meta, learn_from = got.meta, got.meta["learn_from"]
    if got.data is None:
        rest = got.rest._replace(buffer=got.rest.buffer._replace(
            ptr=jnp.zeros_like(got.rest.buffer.ptr), size=jnp.zeros_like(got.rest.buffer.size)))
        state = join(rest, empty_buffers(split(abstract)[1]))
        learn_from = max(learn_from, got.step + config.warmup_iterations)
        print(f"note: checkpoint {got.step} holds no replay buffers (--no-buffer-checkpoint): they "
              f"restart empty and learning pauses until iteration {learn_from} to refill them; "
              f"this resume is not bit-exact", file=sys.stderr)
    else:
        state = join(got.rest, got.data)
    log(f"resuming from checkpoint {got.step} ({ckpts.dir})")
    return Start(state, got.step, learn_from, meta["wall_s"], meta["compile_s"])


# -- signals and progress -----------------------------------------------------------------------
class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop after the current chunk; a second SIGINT aborts."""

    def __init__(self):
        self.received = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this chunk and writing a checkpoint "
              f"(Ctrl-C again aborts without one)", file=sys.stderr)

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: signals keep their default meaning
                pass
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


class Progress:
    """A tqdm bar on stderr (shown only on a terminal): iterations/s, env-steps/s (all seeds,
    tasks and envs), ETA and the latest mean eval return, averaged since this session's start
    (after compiling). `log` lines print above it."""

    def __init__(self, config, num_tasks: int, start_it: int, log):
        from tqdm import tqdm
        self._tqdm, self._log = tqdm, log
        self.steps_per_it = config.num_seeds * num_tasks * config.num_envs
        self.bar = tqdm(total=config.total_iterations, initial=start_it, unit="it", file=sys.stderr,
                        dynamic_ncols=True, disable=None, smoothing=0)
        self._start_it, self._t0, self._eval = start_it, time.perf_counter(), None

    def log(self, msg: str) -> None:
        with self._tqdm.external_write_mode(file=sys.stderr):
            self._log(msg)

    def update(self, iterations: int, mean_eval=None) -> None:
        if mean_eval is not None:
            self._eval = mean_eval
        if self.bar.disable:
            return
        rate = (self.bar.n + iterations - self._start_it) / max(time.perf_counter() - self._t0, 1e-9)
        post = f"env-steps/s {rate * self.steps_per_it:,.0f}"
        if self._eval is not None:
            post += f", eval {self._eval:.2f}"
        self.bar.set_postfix_str(post, refresh=False)
        self.bar.update(iterations)

    def close(self):
        self.bar.close()


# -- the loop ------------------------------------------------------------------------------------
def run(config, env, eval_env, agent, log=print, kind: str | None = None):
    """Train `config.num_seeds` seeds in one program; write the run directory; return
    `(summary, final state)`. Raises ConfigError (nothing written) or RunStopped."""
    trainer = make_train(config, env, eval_env, agent)
    seeds = list(range(config.seed, config.seed + config.num_seeds))
    keys = seed_keys(config.seed, config.num_seeds)
    init = vmapped_init(trainer)
    abstract = jax.eval_shape(init, keys)
    check_memory(abstract)
    ckpts = Checkpoints(config.run_dir, config.keep_checkpoints)

    t0 = time.perf_counter()
    start = resumed_start(config, ckpts, abstract, log) if config.resume else fresh_start(config, init, keys)
    runlog = RunLog(config.run_dir, config.to_dict(), env.task_names, seeds, extra=run_info(kind),
                    resume_iteration=start.iteration if config.resume else None)
    state, it, learn_from = start.state, start.iteration, start.learn_from
    # Compile ahead of time so compile time is reported apart from run time.
    it0 = jnp.int32(it)
    chunk = compile_chunk(trainer, state, it0, learn_from)
    eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.eval_key, it0)
    evaluate = jax.jit(jax.vmap(trainer.evaluate)).lower(state.agent, eval_keys).compile()
    compile_s = time.perf_counter() - t0
    log(f"compiled in {compile_s:.1f}s: {env.num_tasks} tasks x {config.num_seeds} seeds, "
        f"chunk {config.chunk} iterations")

    def save(it, state):
        if it not in ckpts.steps():
            ckpts.save(it, state, dict(kind=kind, config=config.to_dict(), learn_from=learn_from,
                                       wall_s=wall(), compile_s=start.compile_s + compile_s),
                       with_buffer=config.buffer_checkpoint)
        return it

    def evaluate_and_log(it, state, metrics) -> float:
        eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.eval_key, jnp.int32(it))
        returns = np.asarray(evaluate(state.agent, eval_keys))  # [seeds, T]
        runlog.log_eval(it, it * config.num_envs, returns, wall(), metrics)
        per_task = ", ".join(f"{t} {r:.1f}" for t, r in zip(env.task_names, returns.mean(0)))
        progress.log(f"iter {it:>8d}  env-steps/task {it * config.num_envs:>9d}  {wall():7.1f}s  "
                     f"mean eval {returns.mean():8.2f}  ({per_task})")
        return float(returns.mean())

    began = time.perf_counter()
    wall = lambda: start.wall_s + time.perf_counter() - began  # noqa: E731
    last_saved = it if config.resume else None
    progress = Progress(config, env.num_tasks, it, log)
    try:
        with StopSignals() as stop:
            while it < config.total_iterations:
                state, metrics, flags = chunk(state, jnp.int32(it), jnp.int32(learn_from))
                it += config.chunk
                metrics, flags = jax.device_get((metrics, flags))  # a few scalars per seed
                bad = non_finite(metrics, flags, seeds)
                if bad:
                    raise RunStopped(_non_finite_message(bad, it, last_saved, config.run_dir), EXIT_NON_FINITE)
                mean_eval = evaluate_and_log(it, state, metrics) if it % config.eval_every == 0 else None
                progress.update(config.chunk, mean_eval)
                if stop.received or (config.checkpoint_every and it % config.checkpoint_every == 0):
                    last_saved = save(it, state)
                if stop.received:
                    name = signal.Signals(stop.received).name
                    raise RunStopped(f"{name}: stopped at iteration {it}; checkpoint written to "
                                     f"{ckpts.dir / str(it)}; continue with --resume",
                                     128 + stop.received)
            save(it, state)
    finally:
        progress.close()
    summary = runlog.write_summary(it, it * config.num_envs, wall(), start.compile_s + compile_s)
    log(f"done: mean eval return {summary['mean_eval_return']:.2f} in {wall():.1f}s "
        f"(+{compile_s:.1f}s compile); {config.run_dir}/summary.json")
    return summary, state


def _non_finite_message(what: str, it: int, last_saved, run_dir) -> str:
    kept = (f"the last good checkpoint (iteration {last_saved}) is kept" if last_saved is not None
            else "no checkpoint had been written")
    return f"error: non-finite {what} at iteration {it}; stopped without saving this state; {kept} in {run_dir}"
