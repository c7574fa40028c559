"""The program layer: one way to turn an experiment into a compiled population.

    plan(kind, experiment)  -> Plan     tasks resolved, defaults filled in, every input checked
    build(plan)             -> Built    environments, agent, trainer, population, program
    load(run_dir, step)     -> Loaded   a run directory rebuilt, one checkpoint restored

Every entry point builds through these: the experiment scripts (purejaxbrc.run), evaluation,
transfer, rendering and every bench script, so a bench configuration meets the checks and
defaults of a user's run.

The population (seeds x sweep variants, purejaxbrc.sweep) is one program: every per-member
function of purejaxbrc.train is vmapped over each device's members inside a shard_map over all
devices of all processes (purejaxbrc.distributed), with the state's leading member axis split
over the devices.
"""

import contextlib
import dataclasses
import os
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg  # noqa: F401  (loads the OpenBLAS that one_blas_thread limits)
import threadpoolctl

from purejaxbrc import distributed, kinds, rundir, sweep
from purejaxbrc.agent import Agent
from purejaxbrc.checkpoint import Restored, list_steps
from purejaxbrc.config import ConfigError, Experiment, TransferConfig, validate_run, with_defaults
from purejaxbrc.distributed import MEMBERS, SHARED
from purejaxbrc.train import Trainer, make_train


def enable_compilation_cache(path: str | None = None) -> None:
    """JAX's persistent compilation cache: a humanoid step compiles once per machine."""
    path = path or os.environ.get("PUREJAXBRC_CACHE", str(Path.home() / ".cache" / "purejaxbrc" / "jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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


# -- the population and its program ------------------------------------------------------
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


# The BLAS libraries loaded, found once here: finding them runs a Python callback per loaded
# library, which on a thread beside one that traces waits for the GIL each time (7 s, measured).
_BLAS = threadpoolctl.ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread():
    """LAPACK on one thread (scipy's OpenBLAS, which jaxlib calls on the CPU) for what runs
    inside, to its end: the networks' orthogonal init (an orgqr per kernel) then gives the same
    numbers on any number of cores, and does not slow down many times over while compiles run:
    OpenBLAS's threads wait for cores that others hold (measured for a 4096 x 4096 QR before
    purejaxbrc.orthogonal: on 2 cores 2.4 s alone, up to 84 s beside a busy process, 4.4 s on
    one thread either way)."""
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


def compile_workers() -> int:
    """Pieces XLA compiles at once: one per core this process may use, up to four."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


class Compiling:
    """XLA compiling a program's pieces on background threads, `workers` at a time, in the order
    they are `add`ed: the caller traces the next piece (Python, which holds the GIL) while the
    ones before it compile (XLA releases it). `get(name)` waits for that piece alone; `seconds`:
    each piece's own compile time; `then_seconds`: the time of each piece's `then`. The threads
    are daemons: Ctrl-C or bad input exits at once, not after a compile."""

    def __init__(self, batched_members: bool, workers: int | None = None):
        self.workers, self.seconds, self.then_seconds, self._end = workers or compile_workers(), {}, {}, {}
        self._batched, self._t0, self._futures = batched_members, time.perf_counter(), {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(self.workers):
            threading.Thread(target=self._work, name=f"compile {i}", daemon=True).start()

    def add(self, name: str, lowered, then=None) -> None:
        """`then(compiled)`, if given, runs on the same thread right after the compile, and `get`
        returns its result: the initial state is computed while the caller traces on."""
        self._futures[name] = Future()
        self._queue.put((name, lowered, then))

    def close(self) -> None:
        """No more pieces: each thread ends once the queue is empty (and lets go of this)."""
        for _ in range(self.workers):
            self._queue.put(None)

    def _work(self):
        while (item := self._queue.get()) is not None:
            name, lowered, then = item
            t = time.perf_counter()
            try:
                out = compile_lowered(lowered, self._batched) if name == "chunk" else lowered.compile()
                self._end[name] = time.perf_counter()
                self.seconds[name] = self._end[name] - t
                if then is not None:
                    out = then(out)
                    self.then_seconds[name] = time.perf_counter() - self._end[name]
            except BaseException as e:  # handed to whoever waits for this piece
                self._futures[name].set_exception(e)
                continue
            self._futures[name].set_result(out)

    def get(self, name: str):
        """The compiled piece `name`, once it is (waits for it alone)."""
        return self._futures[name].result()

    def wall_s(self) -> float:
        """Seconds from this object's creation (right before the first piece is traced) until the
        last piece compiled (waits for them): the tracing included."""
        for f in self._futures.values():
            f.result()
        return max(self._end.values()) - self._t0


class Program:
    """The training program of one population over the devices: `init`, the guarded `chunk`
    and `evaluate`, each a jitted function over all members, built once (a call after
    `eval_shape` or `lower` reuses its trace). `what` names the population in errors."""

    def __init__(self, trainer: Trainer, population: Population, what: str = "seeds x variants", batched: bool = True):
        self.trainer, self.population, self.batched = trainer, population, batched
        self.mesh = distributed.member_mesh(population.size, what)
        self.sharding = distributed.member_sharding(self.mesh)
        self.local = population.size // self.mesh.size  # members per device

        def chunk(state, it, learn_from):
            state, metrics = trainer.chunk(state, it, learn_from)
            return state, metrics, finite_flags(state.agent)
        # `(keys, hparams) -> state`: each process builds only its own members.
        self.init = jax.jit(self.over_members(lambda k, h: strong_types(trainer.init(k, h)), (MEMBERS, MEMBERS)))
        # `(state, it, learn_from) -> (state, metrics, finite flags)`, the state donated.
        self.chunk_fn = self.over_members(chunk, (MEMBERS, SHARED, SHARED))
        self.chunk = jax.jit(self.chunk_fn, donate_argnums=0)
        # `(state, it) -> returns [members, T]` (reads the agent, eval key and hparams).
        self.evaluate_fn = self.over_members(trainer.evaluate, (MEMBERS, SHARED))
        self.evaluate = jax.jit(self.evaluate_fn)

    def over_members(self, fn, in_specs):
        return distributed.over_members(fn, self.mesh, in_specs, self.local, self.batched)

    def inputs(self):
        """The members' keys and swept hyperparameters as arrays over the mesh."""
        p, put = self.population, lambda x: distributed.global_array(x, self.sharding)  # noqa: E731
        return put(p.keys), {k: put(v) for k, v in p.hparams.items()}

    def abstract_state(self):
        """The state's shapes, dtypes and shardings (every leaf split over the members)."""
        shapes = jax.eval_shape(self.init, *self.inputs())
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.sharding), shapes)

    def fresh_state(self, init=None):
        """The members' first state, computed to its end with LAPACK on one thread; `init`: an
        ahead-of-time compiled `self.init` to run instead of compiling it here."""
        with one_blas_thread():
            return jax.block_until_ready((init or self.init)(*self.inputs()))

    def lower_chunk(self, state):
        return self.chunk.lower(state, jnp.int32(0), jnp.int32(0))

    def lower_evaluate(self, state):
        return self.evaluate.lower(state, jnp.int32(0))

    def compile_chunk(self, state):
        """The chunk compiled ahead of time for `state`'s shapes (concrete or abstract)."""
        return compile_lowered(self.lower_chunk(state), batched_members=self.batched and self.local > 1)

    def compile_evaluate(self, state):
        return self.lower_evaluate(state).compile()

    def start_compiling(self, workers: int | None = None) -> Compiling:
        """An empty `Compiling` for this program's pieces (`add` them as they are lowered)."""
        return Compiling(self.batched and self.local > 1, workers)

    def compile_train(self):
        """The host-free whole run over all members: `(keys, hparams) -> (state, returns [members,
        evals, T])`. Its networks' initial values come from LAPACK on as many threads as OpenBLAS
        takes, unless called inside `one_blas_thread()` as `fresh_state` is (widths of 256 and
        more round differently)."""
        return jax.jit(self.over_members(self.trainer.train, (MEMBERS, MEMBERS)))


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




# -- plan, build, load ----------------------------------------------------------------------------
class Plan(NamedTuple):
    """An experiment resolved once; every later step reads this."""

    kind: kinds.Kind
    experiment: Experiment  # task-dependent defaults filled in
    names: tuple[str, ...]  # the tasks
    variants: tuple[dict, ...]  # the sweep: one {name: value} per variant ({} without one)
    transfer: TransferConfig | None  # where a transfer run starts (complete: purejaxbrc.transfer)
    config: dict  # config.json

    def with_transfer(self, transfer: TransferConfig) -> "Plan":
        return self._replace(transfer=transfer,
                             config=rundir.config_dict(self.experiment, self.variants, transfer))


def plan(kind: str, experiment: Experiment, transfer: TransferConfig | None = None) -> Plan:
    """Resolve the tasks and the sweep and check every input: ConfigError (one line) before
    anything is compiled or written. A `transfer` must already be complete
    (purejaxbrc.transfer.plan completes and checks it against its source)."""
    spec = kinds.get(kind)
    names = kinds.resolve_tasks(spec, experiment.run.tasks)
    experiment = dataclasses.replace(experiment, run=with_defaults(experiment.run, len(names)))
    validate_run(experiment.run, len(names))
    experiment.agent.validate()
    variants = sweep.resolve(experiment.run, experiment.agent, spec.agent_config)
    spec.check(experiment, names)
    return Plan(spec, experiment, names, variants, transfer, rundir.config_dict(experiment, variants, transfer))


def stored_plan(stored: rundir.Stored) -> Plan:
    """The plan of a run directory's run, as it was checked when it started."""
    names = kinds.resolve_tasks(stored.kind, stored.experiment.run.tasks)
    return Plan(stored.kind, stored.experiment, names, stored.variants, stored.transfer, stored.config)


class Built(NamedTuple):
    """A planned run, built: nothing compiled yet."""

    plan: Plan
    env: Any
    eval_env: Any
    agent: Agent
    trainer: Trainer
    population: Population
    program: Program


def build(plan: Plan, eval_episodes: int | None = None) -> Built:
    """The environments, agent, trainer, population and program of `plan`; `eval_episodes`
    overrides the evaluation's episodes per task and member."""
    experiment, run = plan.experiment, plan.experiment.run
    if eval_episodes is not None:
        experiment = dataclasses.replace(experiment, run=dataclasses.replace(run, eval_episodes=eval_episodes))
    env, eval_env, agent = plan.kind.build(experiment, plan.names, plan.transfer)
    trainer = make_train(run, env, eval_env, agent)
    population = make_population(run, plan.variants)
    program = Program(trainer, population, what=f"{run.num_seeds} seeds x {len(plan.variants)} variants",
                      batched=run.vmap_members)
    return Built(plan, env, eval_env, agent, trainer, population, program)


class Loaded(NamedTuple):
    """A run directory rebuilt and one of its checkpoints restored."""

    built: Built
    restored: Restored


def load(run_dir, step: int | None = None, with_buffer: bool = False, episodes: int | None = None) -> Loaded:
    """Rebuild the run in `run_dir` and restore checkpoint `step` (default: the latest readable
    one, falling back past damaged ones) onto this machine's devices; `episodes` overrides the
    evaluation episodes. ConfigError for a missing run dir or checkpoint."""
    stored = rundir.read_config(run_dir)
    if not list_steps(run_dir):
        raise ConfigError(f"run dir {run_dir} has no checkpoint")
    rundir.check_step(run_dir, step)
    built = build(stored_plan(stored), eval_episodes=episodes)
    program = built.program
    restored = rundir.restore(run_dir, program.abstract_state(), stored.config, step, with_buffer=with_buffer,
                              sharding=program.sharding, read_only=True)
    return Loaded(built, restored)
