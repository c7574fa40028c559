"""The thin host loop: compile once, call the same compiled chunk again and again, evaluate,
checkpoint, log. Between evaluations the host reads only a few scalars per member and chunk
(the finite checks, which also pace the progress bar).

The population (seeds x sweep variants, purejaxbrc.sweep) is one program: every per-member
function of purejaxbrc.train is vmapped over each device's members inside a shard_map over all
devices of all processes (purejaxbrc.distributed), with the state's leading member axis split
over the devices. Process 0 writes metrics.jsonl, summary.json and the progress; every process
writes its own shards of each checkpoint.

How a run ends (`exit_on_error` turns these into the scripts' exit codes):

- 0: done; summary.json written, last checkpoint at the final iteration.
- 2: bad input (ConfigError): one line on stderr, before anything is allocated or written. This
  includes a run that cannot fit in device memory, and every --resume problem.
- 3: a non-finite loss or parameter: the run stops at the end of that chunk, naming iteration,
  quantity and member; the bad state is not saved, so the last checkpoint is the last good one.
- 130 / 143: SIGINT (Ctrl-C) / SIGTERM (to any process): the current chunk finishes (and its
  evaluation if one is due), a checkpoint is written, and the run exits; `--resume` continues
  it. A second Ctrl-C aborts at once without a checkpoint.
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
from purejaxbrc import distributed, kinds, sweep, tracking
from purejaxbrc.checkpoint import Checkpoints, join, split
from purejaxbrc.config import ConfigError
from purejaxbrc.distributed import MEMBERS, SHARED
from purejaxbrc.runlog import RunLog, check_run_dir
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


# XLA:CPU hands dots, reductions and elementwise fusions to YNNPACK by default. Where a device
# vmaps several members, its reductions (LayerNorm, softmax) over the batched shapes run slower
# than XLA's own loops, so YNNPACK is kept to dots: 4 members at width 128, 16.2 vs 14.0
# iterations/s. A device running one member unvmapped is faster with the defaults: 61 vs 53
# it/s at width 128, 17.3 vs 15.6 at 256, 6.55 vs 5.99 at 512 (measured side by side for commit 504d58a). The
# options change only how XLA:CPU runs the program, never its results beyond rounding.
CPU_BATCHED_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def compile_lowered(lowered, batched_members: bool = True):
    """`lowered.compile()`; on the CPU backend with `CPU_BATCHED_OPTIONS` where a device vmaps
    several members (a jaxlib without the option compiles with its defaults)."""
    if jax.default_backend() == "cpu" and batched_members:
        try:
            return lowered.compile(compiler_options=CPU_BATCHED_OPTIONS)
        except jax.errors.JaxRuntimeError as e:
            if not any(name in str(e) for name in CPU_BATCHED_OPTIONS):
                raise
    return lowered.compile()


# -- the population --------------------------------------------------------------------------------
class Population(NamedTuple):
    """Who the members are (purejaxbrc.sweep): member `m` is variant `variant_of[m]` with seed
    `seeds[m]`."""

    seeds: list[int]
    variants: tuple[dict, ...]
    variant_of: list[int]
    keys: np.ndarray  # [members, 2] PRNGKey(seed) of each member
    hparams: dict  # {swept name: float32 [members]}

    @property
    def size(self) -> int:
        return len(self.seeds)


def make_population(run, variants=({},)) -> Population:
    """Seed `seed + s` has key PRNGKey(seed + s), whatever its variant: a population equals
    separate runs, member by member."""
    seeds = sweep.member_seeds(run, variants)
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
    return Population(seeds, tuple(variants), sweep.member_variants(run, variants), keys,
                      sweep.member_hparams(run, variants))


def strong_types(tree):
    """Drop weak types (e.g. gymnax's `time = 0`): a state restored from disk is strongly typed,
    and a fresh state must be too, or the two would compile to different programs."""
    return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), tree)


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


class Program:
    """The training program of one population over the devices: `init`, the guarded `chunk`
    and `evaluate`, each over all members, compiled once. `what` names the population in errors."""

    def __init__(self, trainer, population: Population, what: str = "seeds x variants", batched: bool = True):
        self.trainer, self.population, self.batched = trainer, population, batched
        self.mesh = distributed.member_mesh(population.size, what)
        self.sharding = distributed.member_sharding(self.mesh)
        self.local = population.size // self.mesh.size  # members per device

    def over_members(self, fn, in_specs):
        return distributed.over_members(fn, self.mesh, in_specs, self.local, self.batched)

    def inputs(self):
        """The members' keys and swept hyperparameters as arrays over the mesh."""
        p, put = self.population, lambda x: distributed.global_array(x, self.sharding)  # noqa: E731
        return put(p.keys), {k: put(v) for k, v in p.hparams.items()}

    @property
    def init(self):
        """`(keys, hparams) -> state`: each process builds only its own members."""
        return jax.jit(self.over_members(lambda k, h: strong_types(self.trainer.init(k, h)), (MEMBERS, MEMBERS)))

    def abstract_state(self):
        return jax.eval_shape(self.init, *self.inputs())

    def fresh_state(self):
        return self.init(*self.inputs())

    def compile_chunk(self, state, it, learn_from):
        """`(state, it, learn_from) -> (state, metrics, finite flags)` over all members, the
        state donated, compiled ahead of time for `state`'s shapes."""
        def chunk(state, it, learn_from):
            state, metrics = self.trainer.chunk(state, it, learn_from)
            return state, metrics, finite_flags(state.agent)
        fn = jax.jit(self.over_members(chunk, (MEMBERS, SHARED, SHARED)), donate_argnums=0)
        return compile_lowered(fn.lower(state, jnp.int32(it), jnp.int32(learn_from)),
                               batched_members=self.batched and self.local > 1)

    def compile_evaluate(self, state):
        """`(state, it) -> returns [members, T]` (reads the agent, eval key and hparams)."""
        fn = jax.jit(self.over_members(self.trainer.evaluate, (MEMBERS, SHARED)))
        return fn.lower(state, jnp.int32(0)).compile()

    def compile_train(self):
        """The host-free whole run over all members: `(keys, hparams) -> (state, returns [members, evals, T])`."""
        return jax.jit(self.over_members(self.trainer.train, (MEMBERS, MEMBERS)))


def non_finite(metrics, flags, members) -> str | None:
    """`"critic_loss (member 0: seed 0)"` for the first non-finite metric or agent field, else None.
    `members`: a label per member."""
    for kind, values in (("", metrics), ("parameters in ", flags)):
        for name, v in values.items():
            v = np.asarray(v)
            bad = ~np.isfinite(v) if kind == "" else ~v
            if bad.any():
                return f"{kind}{name} ({', '.join(label for label, b in zip(members, bad) if b)})"
    return None


def member_labels(population: Population) -> list[str]:
    """`seed 0`, or `seed 0, lr=0.0001` in a sweep."""
    return [f"seed {s}" + (f", {sweep.describe(population.variants[v])}" if population.variants[v] else "")
            for s, v in zip(population.seeds, population.variant_of)]


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def memory_needed(abstract) -> dict:
    """Bytes of the training state by part, from its eval_shape (nothing allocated)."""
    size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    return dict(buffers=size(abstract.buffer), networks=size(abstract.agent),
                rest=size(abstract) - size(abstract.buffer) - size(abstract.agent))


def memory_limit() -> tuple[int, str]:
    """One device's memory when it reports one (GPU, TPU), else the host's available RAM."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory per device"
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024, "available host RAM"


def check_memory(abstract, devices: int = 1, limit: tuple[int, str] | None = None) -> None:
    """ConfigError when one device's share of the state alone (replay buffers, networks with
    targets and optimiser states, environments) exceeds its memory; activations come on top.
    On the CPU the devices of one host share its RAM."""
    need = {k: v // devices for k, v in memory_needed(abstract).items()}
    limit_bytes, where = limit or memory_limit()
    if jax.default_backend() == "cpu":
        need = {k: v * jax.local_device_count() for k, v in need.items()}
    total = sum(need.values())
    if total > limit_bytes:
        raise ConfigError(
            f"the run needs at least {_gib(total)} per device ({_gib(need['buffers'])} replay buffers + "
            f"{_gib(need['networks'])} networks and optimiser states + {_gib(need['rest'])} "
            f"environments), more than the {_gib(limit_bytes)} of {where}; lower "
            f"--buffer-capacity, --num-envs, --num-seeds, the sweep or the network widths")


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
                num_processes=jax.process_count())


# -- where a run starts ---------------------------------------------------------------------------
class Start(NamedTuple):
    state: object
    iteration: int
    learn_from: int  # first iteration with gradient steps
    wall_s: float  # training time so far, without compiling
    compile_s: float


def fresh_start(run, program: Program, initial=None) -> Start:
    """`initial(program, fresh state) -> state`: where the population starts (a transfer run's
    pretrained networks); default the fresh state."""
    state = program.fresh_state()
    return Start(initial(program, state) if initial else state, 0, run.warmup_iterations, 0.0, 0.0)


def resumed_start(run, config_dict: dict, program: Program, ckpts: Checkpoints, abstract, log) -> Start:
    """The last readable checkpoint; without buffers, they restart empty and learning pauses
    for a warm-up's worth of iterations to refill them."""
    got = ckpts.restore_latest(abstract, config_dict)
    meta, learn_from = got.meta, got.meta["learn_from"]
    if got.data is None:
        empty = jax.jit(lambda rest: join(rest._replace(buffer=rest.buffer._replace(
            ptr=jnp.zeros_like(rest.buffer.ptr), size=jnp.zeros_like(rest.buffer.size))),
            jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), split(abstract)[1])),
            out_shardings=program.sharding)
        state = empty(got.rest)
        learn_from = max(learn_from, got.step + run.warmup_iterations)
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
    """A tqdm bar on stderr (shown only on a terminal, by process 0): iterations/s, env-steps/s
    (all members, tasks and envs), ETA and the latest mean eval return, averaged since this session's start
    (after compiling). `log` lines print above it."""

    def __init__(self, run, members: int, num_tasks: int, start_it: int, log):
        from tqdm import tqdm
        self._tqdm, self._log = tqdm, log
        self.steps_per_it = members * num_tasks * run.num_envs
        self.bar = tqdm(total=run.total_iterations, initial=start_it, unit="it", file=sys.stderr,
                        dynamic_ncols=True, disable=None if distributed.is_primary() else True,
                        smoothing=0)
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
def run(experiment, env, eval_env, agent, variants=({},), log=print, kind: str | None = None,
        initial=None):
    """Train the population (`num_seeds` seeds x `variants`) in one program; write the run
    directory; return `(summary, final state)`. Raises ConfigError (nothing written) or
    RunStopped. `initial`: see `fresh_start`."""
    config, variants = experiment.run, tuple(variants)
    config_dict = experiment.to_dict(variants)
    trainer = make_train(config, env, eval_env, agent)
    population = make_population(config, variants)
    program = Program(trainer, population, what=f"{config.num_seeds} seeds x {len(variants)} variants",
                      batched=config.vmap_members)
    abstract = program.abstract_state()
    check_memory(abstract, program.mesh.size)
    primary = distributed.is_primary()
    log = log if primary else (lambda msg: None)
    ckpts = Checkpoints(config.run_dir, config.keep_checkpoints, sharding=program.sharding)

    t0 = time.perf_counter()
    start = (resumed_start(config, config_dict, program, ckpts, abstract, log) if config.resume
             else fresh_start(config, program, initial))
    info = run_info(kind)
    tracker = tracking.open_trackers(config.track, config.run_dir, config_dict, info, population,
                                     start.iteration if config.resume else None, primary, log)
    runlog = RunLog(config.run_dir, config_dict, env.task_names, population, extra=info,
                    resume_iteration=start.iteration if config.resume else None, write=primary)
    state, it, learn_from = start.state, start.iteration, start.learn_from
    # Compile ahead of time so compile time is reported apart from run time.
    chunk = program.compile_chunk(state, it, learn_from)
    evaluate = program.compile_evaluate(state)
    compile_s = time.perf_counter() - t0
    log(f"compiled in {compile_s:.1f}s: {env.num_tasks} tasks x {population.size} members "
        f"({config.num_seeds} seeds x {len(variants)} variants) on {program.mesh.size} devices, "
        f"chunk {config.chunk} iterations")
    labels = member_labels(population)

    def save(it, state):
        if it not in ckpts.steps():
            ckpts.save(it, state, dict(kind=kind, config=config_dict, learn_from=learn_from,
                                       wall_s=wall(), compile_s=start.compile_s + compile_s),
                       with_buffer=config.buffer_checkpoint)
        return it

    def evaluate_and_log(it, state, metrics) -> float:
        returns = distributed.to_host(evaluate(state, jnp.int32(it)))  # [members, T]
        tracker.log_eval(runlog.log_eval(it, it * config.num_envs, returns, wall(), metrics))
        per_task = ", ".join(f"{t} {r:.1f}" for t, r in zip(env.task_names, returns.mean(0)))
        progress.log(f"iter {it:>8d}  env-steps/task {it * config.num_envs:>9d}  {wall():7.1f}s  "
                     f"mean eval {returns.mean():8.2f}  ({per_task})")
        return float(returns.mean())

    began = time.perf_counter()
    wall = lambda: start.wall_s + time.perf_counter() - began  # noqa: E731
    last_saved = it if config.resume else None
    progress = Progress(config, population.size, env.num_tasks, it, log)
    try:
        with StopSignals() as stop:
            while it < config.total_iterations:
                state, metrics, flags = chunk(state, jnp.int32(it), jnp.int32(learn_from))
                it += config.chunk
                metrics, flags = distributed.to_host((metrics, flags))  # a few scalars per member
                bad = non_finite(metrics, flags, labels)
                if bad:
                    raise RunStopped(_non_finite_message(bad, it, last_saved, config.run_dir), EXIT_NON_FINITE)
                mean_eval = evaluate_and_log(it, state, metrics) if it % config.eval_every == 0 else None
                progress.update(config.chunk, mean_eval)
                stopping = distributed.any_process(stop.received is not None)
                if stopping or (config.checkpoint_every and it % config.checkpoint_every == 0):
                    last_saved = save(it, state)
                if stopping:
                    signum = stop.received or signal.SIGTERM
                    raise RunStopped(f"{signal.Signals(signum).name}: stopped at iteration {it}; checkpoint "
                                     f"written to {ckpts.dir / str(it)}; continue with --resume", 128 + signum)
            save(it, state)
    finally:
        progress.close()
        tracker.close(sys.exc_info()[1])  # what stopped the run, if anything
    summary = runlog.write_summary(it, it * config.num_envs, wall(), start.compile_s + compile_s)
    log(f"done: mean eval return {summary['mean_eval_return']:.2f} in {wall():.1f}s "
        f"(+{compile_s:.1f}s compile); {config.run_dir}/summary.json")
    return summary, state


def _non_finite_message(what: str, it: int, last_saved, run_dir) -> str:
    kept = (f"the last good checkpoint (iteration {last_saved}) is kept" if last_saved is not None
            else "no checkpoint had been written")
    return f"error: non-finite {what} at iteration {it}; stopped without saving this state; {kept} in {run_dir}"


def main(kind: str, experiment, log=print):
    """What an experiment script does: join the other processes (if any), check every input,
    build, train. Bad input: one line, exit code 2."""
    exit_on_error(lambda: distributed.initialize(experiment.run))
    experiment, names, variants = exit_on_error(lambda: kinds.prepare(kind, experiment))
    exit_on_error(lambda: distributed.check_same_config(experiment.to_dict(variants)))
    exit_on_error(lambda: check_run_dir(experiment.run.run_dir, experiment.to_dict(variants),
                                        resume=experiment.run.resume))
    distributed.barrier("run dir checked")  # before process 0 writes into it
    enable_compilation_cache()
    env, eval_env, agent = kinds.get(kind).build(experiment, names)
    initial = None
    if getattr(experiment, "transfer", None) is not None:
        from purejaxbrc import transfer
        initial = lambda program, state: transfer.initial_state(experiment, names, program, state)  # noqa: E731
    return exit_on_error(lambda: run(experiment, env, eval_env, agent, variants, log=log, kind=kind,
                                     initial=initial))
