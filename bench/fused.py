"""Measuring the fused training loop: the population's compiled chunk (the program the run loop
calls), built through purejaxbrc.program like a user's run, timed apart from its compile.

    started = start_fused("mjx", experiment)   # plan, build, compile, warm-up, one learning chunk
    wall, cores = started.advance(3)           # three more learning chunks
    record = measure_fused("mjx", experiment, timed_chunks=3)

FLOPs of a gradient step are counted from the configuration (`counted_update_flops`: the matmul
shapes), and XLA's own count is added where the backend gives one (`xla_update_flops`, None
otherwise): on a GPU under jax 0.11, `cost_analysis()` returns None.
"""

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from bench.device import cpu_seconds, peak_flops, peak_memory
from purejaxbrc import kinds, program
from purejaxbrc.config import Experiment, default_batch_size


def bench_config(base: Experiment, *, chunk: int, **overrides) -> Experiment:
    """`base` with chunks of `chunk` iterations, room for many timed chunks and no evaluation;
    the warm-up is completed by `start_fused` to whole chunks that fill one batch."""
    return base.replace(warmup_iterations=chunk, chunk_iterations=chunk, eval_every=chunk,
                        total_iterations=1_000_000 * chunk, eval_episodes=1, **overrides)


def with_full_warmup(kind: str, experiment: Experiment) -> Experiment:
    """`experiment` whose warm-up (whole chunks, at least two) collects at least one batch: a
    batch may not be drawn from fewer transitions (purejaxbrc.config.validate_run). The first
    chunk also starts MJX's environments (their first resets), so the env-only rate is timed
    on the others."""
    run = experiment.run
    tasks = len(kinds.resolve_tasks(kinds.get(kind), run.tasks))
    batch = run.batch_size or default_batch_size(tasks)
    chunks = max(2, math.ceil(run.warmup_iterations / run.chunk), math.ceil(batch / (tasks * run.num_envs * run.chunk)))
    return experiment.replace(warmup_iterations=chunks * run.chunk)


# -- FLOPs ----------------------------------------------------------------------------------------
def counted_update_flops(agent, batch: int) -> float:
    """FLOPs of one gradient step of one member counted from the matmul shapes (the agent's own
    count: `Agent.update_flops`); XLA's count adds the elementwise work (within a few percent at
    width 512: tests/test_bench.py)."""
    return agent.update_flops(batch)


def xla_update_flops(built: program.Built, state) -> float | None:
    """XLA's FLOP count of one lowered `agent.update` of one member, or None where the backend's
    cost analysis gives none."""
    agent, run = built.agent, built.plan.experiment.run
    one = lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype)  # noqa: E731  (drop the member axis)
    agent_state = jax.tree.map(one, state.agent)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((run.batch_size,) + x.shape[3:], x.dtype),
                         state.buffer.data)  # leaves [members, tasks, capacity, ...]
    tasks = jax.ShapeDtypeStruct((run.batch_size,), jnp.int32)
    scale = jax.ShapeDtypeStruct((len(built.plan.names),), jnp.float32)
    key = jax.ShapeDtypeStruct(state.key.shape[1:], state.key.dtype)
    hp = agent.config.hyperparameters({})
    try:
        cost = jax.jit(lambda *args: agent.update(*args, hp)).lower(agent_state, batch, tasks, scale, key).cost_analysis()
    except Exception:  # a backend without a cost model
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    flops = cost.get("flops") if isinstance(cost, dict) else None
    return float(flops) if flops else None


# -- the chunk ------------------------------------------------------------------------------------
@dataclass
class Started:
    """A compiled chunk past its warm-up: `advance` runs learning chunks from where it stands."""

    built: program.Built
    chunk: Callable  # the compiled chunk: (state, it, learn_from) -> (state, metrics, finite flags)
    state: object
    it: int
    init_s: float  # building the first state (networks, buffers; MJX: no physics)
    first_chunk_s: float  # the first warm-up chunk, which also starts MJX's environments
    compile_s: float
    env_only_s: float  # seconds per warm-up chunk (act, step, insert; no gradient steps)

    @property
    def experiment(self) -> Experiment:
        return self.built.plan.experiment

    def advance(self, chunks: int) -> tuple[float, float]:
        """Run `chunks` (> 0) chunks; their wall seconds and the cores this process kept busy."""
        if chunks <= 0:
            raise ValueError(f"advance({chunks}): at least one chunk")
        learn_from = jnp.int32(self.experiment.run.warmup_iterations)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        for _ in range(chunks):
            self.state, metrics, _ = self.chunk(self.state, jnp.int32(self.it), learn_from)
            self.it += self.experiment.run.chunk
        jax.block_until_ready((self.state, metrics))
        wall = time.perf_counter() - t0
        return wall, (cpu_seconds() - cpu0) / wall


def start_fused(kind: str, experiment: Experiment) -> Started:
    """Plan and build the run (the checks and defaults of a user's run), build its first state,
    compile the chunk, run the warm-up chunks (env only, timed) and one learning chunk, untimed."""
    built = program.build(program.plan(kind, with_full_warmup(kind, experiment)))
    run = built.plan.experiment.run
    t0 = time.perf_counter()
    state = jax.block_until_ready(built.program.fresh_state())
    init_s = time.perf_counter() - t0
    learn_from = jnp.int32(run.warmup_iterations)
    t0 = time.perf_counter()
    chunk = built.program.compile_chunk(state)
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    state, _, _ = jax.block_until_ready(chunk(state, jnp.int32(0), learn_from))
    first_chunk_s = time.perf_counter() - t0
    warmup = range(run.chunk, run.warmup_iterations, run.chunk)
    assert len(warmup) >= 1, "with_full_warmup plans at least two warm-up chunks"
    t0 = time.perf_counter()
    for it in warmup:  # random actions, no updates
        state, _, _ = chunk(state, jnp.int32(it), learn_from)
    jax.block_until_ready(state)
    env_only_s = (time.perf_counter() - t0) / len(warmup)
    started = Started(built, chunk, state, run.warmup_iterations, init_s, first_chunk_s, compile_s, env_only_s)
    started.advance(1)  # the first learning chunk
    return started


def measure_fused(kind: str, experiment: Experiment, timed_chunks: int, report=None) -> dict:
    """`start_fused`, then time `timed_chunks` learning chunks. `report(**figures)` receives the
    figures as they exist: compile and env-only rates, then the timed rates, then what takes
    more work that might fail (memory, the matmul ceiling for MFU), so none is lost to a later
    failure."""
    report = report or (lambda **figures: None)
    started = start_fused(kind, experiment)
    run, names, agent = started.experiment.run, started.built.plan.names, started.built.agent
    steps_per_it = run.num_seeds * len(names) * run.num_envs
    record = dict(
        kind=kind, tasks=list(names), num_tasks=len(names), num_seeds=run.num_seeds,
        num_envs=run.num_envs, agent=dataclasses.asdict(started.experiment.agent),
        critic_width=started.experiment.agent.critic_width, batch_size=run.batch_size, utd=run.utd,
        matmul_dtype=started.experiment.agent.critic_matmul_dtype,
        chunk_iterations=run.chunk, warmup_iterations=run.warmup_iterations,
        init_s=started.init_s, first_chunk_s=started.first_chunk_s, compile_s=started.compile_s,
        env_only_iterations_per_s=run.chunk / started.env_only_s,
        env_only_env_steps_per_s=run.chunk * steps_per_it / started.env_only_s)
    report(**record)

    run_s, cores = started.advance(timed_chunks)
    its = timed_chunks * run.chunk
    grad_steps_per_s = its * run.utd * run.num_seeds / run_s
    counted = counted_update_flops(agent, run.batch_size)
    timed = dict(
        timed_iterations=its, run_s=run_s, iterations_per_s=its / run_s, env_steps_per_s=its * steps_per_it / run_s,
        grad_steps_per_s=grad_steps_per_s,
        # The split of an iteration: the env-only chunks' seconds per iteration (act, step, insert,
        # normaliser) against a learning iteration's; the rest is the gradient steps.
        env_s_per_iteration=started.env_only_s / run.chunk, learning_s_per_iteration=run_s / its,
        env_share=(started.env_only_s / run.chunk) / (run_s / its), cores=cores,
        update_flops=counted, flops_source="counted from the matmul shapes of one agent.update (per seed)",
        achieved_flops_per_s=counted * grad_steps_per_s)
    record.update(timed)
    report(**timed)

    memory, memory_source = peak_memory(started.chunk)
    xla = xla_update_flops(started.built, started.state)
    more = dict(peak_memory_bytes=memory, peak_memory_source=memory_source,
                **({"xla_update_flops": xla} if xla is not None else {}))
    record.update(more)
    report(**more)
    peak, peak_source = peak_flops(started.experiment.agent.critic_matmul_dtype)
    mfu = dict(peak_flops_per_s=peak, peak_flops_source=peak_source, mfu=counted * grad_steps_per_s / peak)
    record.update(mfu)
    report(**mfu)
    return record
