"""The thin host loop: compile once, call the same compiled chunk again and again, evaluate,
checkpoint, log. Between evaluations the host reads only a few scalars per member and chunk
(the finite checks, which also pace the progress bar).

The run is built by purejaxbrc.program (plan -> build); its directory is purejaxbrc.rundir's.
Process 0 writes metrics.jsonl, summary.json and the progress; every process writes its own
shards of each checkpoint.

How a run ends (purejaxbrc.cli turns these into the scripts' exit codes):

- 0: done; summary.json written, last checkpoint at the final iteration.
- 2: bad input (ConfigError): one line on stderr, before anything is allocated or written. This
  includes a run that cannot fit in device memory, and every --resume problem.
- 3: a non-finite loss or parameter: the run stops at the end of that chunk, naming iteration,
  quantity and member; the bad state is not saved, so the last checkpoint is the last good one.
- 130 / 143: SIGINT (Ctrl-C) / SIGTERM (to any process): the current chunk finishes (and its
  evaluation if one is due), a checkpoint is written, and the run exits; `--resume` continues
  it. A second Ctrl-C aborts at once without a checkpoint.
"""

import signal
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from purejaxbrc import distributed, program, rundir, sweep, tracking, transfer
from purejaxbrc.checkpoint import Checkpoints, join, lower_fingerprints, split
from purejaxbrc.cli import EXIT_NON_FINITE, RunStopped, exit_on_error
from purejaxbrc.config import ConfigError, Experiment, TransferConfig
from purejaxbrc.program import Built, Population


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


# -- where a run starts ---------------------------------------------------------------------------
class Start(NamedTuple):
    state: object
    iteration: int
    learn_from: int  # first iteration with gradient steps
    wall_s: float  # training time so far, without compiling
    compile_s: float


def fresh_start(built: Built, fresh, source) -> Start:
    """A new run: the fresh state (`fresh`: `Program.fresh_state`), or a transfer run's
    pretrained networks (`source`: purejaxbrc.transfer.source_agent) mapped onto it."""
    state = transfer.initial_state(built, fresh, source)
    return Start(jax.block_until_ready(state), 0, built.plan.experiment.run.warmup_iterations, 0.0, 0.0)


def resumed_start(built: Built, abstract, log) -> Start:
    """The last readable checkpoint; without buffers, they restart empty and learning pauses
    for a warm-up's worth of iterations to refill them."""
    run, p = built.plan.experiment.run, built.program
    got = rundir.restore(run.run_dir, abstract, built.plan.config, sharding=p.sharding)
    meta, learn_from = got.meta, got.meta["learn_from"]
    if got.data is None:
        empty = jax.jit(lambda rest: join(rest._replace(buffer=rest.buffer._replace(
            ptr=jnp.zeros_like(rest.buffer.ptr), size=jnp.zeros_like(rest.buffer.size))),
            jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), split(abstract)[1])),
            out_shardings=p.sharding)
        state = empty(got.rest)
        learn_from = max(learn_from, got.step + run.warmup_iterations)
        print(f"note: checkpoint {got.step} holds no replay buffers (--no-buffer-checkpoint): they "
              f"restart empty and learning pauses until iteration {learn_from} to refill them; "
              f"this resume is not bit-exact", file=sys.stderr)
    else:
        state = join(got.rest, got.data)
    log(f"resuming from checkpoint {got.step} ({Checkpoints(run.run_dir).dir})")
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
        self._log = log
        self.steps_per_it = members * num_tasks * run.num_envs
        self.bar = tqdm(total=run.total_iterations, initial=start_it, unit="it", file=sys.stderr,
                        dynamic_ncols=True, disable=None if distributed.is_primary() else True,
                        smoothing=0)
        self._start_it, self._t0, self._eval = start_it, time.perf_counter(), None

    def log(self, msg: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
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
def run(built: Built, log=print):
    """Train the built population in one program; write the run directory; return `(summary,
    final state)`. Raises ConfigError (nothing written) or RunStopped."""
    plan, prog, population, env = built.plan, built.program, built.population, built.env
    config, config_dict, kind = plan.experiment.run, plan.config, plan.kind.name
    abstract = prog.abstract_state()
    program.check_memory(abstract, prog.mesh.size)
    primary = distributed.is_primary()
    log = log if primary else (lambda msg: None)

    # Compile ahead of time (compile time is reported apart from run time). Whatever may fail on
    # bad input (a checkpoint, a transfer's source) is read first. Each piece starts compiling
    # in the background as soon as it is traced, while the next is traced. A fresh run's initial
    # state (the networks' init: an orgqr per kernel, 23 s of CPU for the paper's critic; the
    # replay buffers; MJX's environments start in the first chunk) is built on init's compile
    # thread right after that compile, while the chunk is still being traced.
    t0 = time.perf_counter()
    resumed = resumed_start(built, abstract, log) if config.resume else None
    source = None if config.resume else transfer.source_agent(built, abstract)
    read_s = time.perf_counter() - t0
    compiling = prog.start_compiling()
    try:
        t_trace = time.perf_counter()
        if not config.resume:
            compiling.add("init", prog.init.lower(*prog.inputs()), then=prog.fresh_state)
        compiling.add("chunk", prog.lower_chunk(abstract))
        compiling.add("evaluate", prog.lower_evaluate(abstract))
        fingerprints = {f"fingerprint {k}": v for k, v in lower_fingerprints(abstract, config.buffer_checkpoint).items()}
        for name, lowered in fingerprints.items():
            compiling.add(name, lowered)
        traced_s = time.perf_counter() - t_trace
    finally:
        compiling.close()
    fresh = None if config.resume else compiling.get("init")
    t_state = time.perf_counter()
    start = resumed or fresh_start(built, fresh, source)
    state_s = read_s + compiling.then_seconds.get("init", 0.0) + time.perf_counter() - t_state
    chunk, evaluate = compiling.get("chunk"), compiling.get("evaluate")
    compile_s = time.perf_counter() - t0
    ckpts = Checkpoints(config.run_dir, config.keep_checkpoints, sharding=prog.sharding,
                        fingerprinters={k.split()[-1]: compiling.get(k) for k in fingerprints})
    info, resume_iteration = rundir.run_info(kind), start.iteration if config.resume else None
    # The trackers open (process 0) before the run directory is first written: one that cannot
    # start leaves a fresh run's directory as it was, and every process stops with it.
    tracker = together(lambda: tracking.open_trackers(config.track, config.run_dir, config_dict, info, population,
                                                      resume_iteration, primary, log))
    runlog = rundir.RunLog(config.run_dir, config_dict, env.task_names, population, extra=info,
                           resume_iteration=resume_iteration, write=primary)
    state, it, learn_from = start.state, start.iteration, start.learn_from
    pieces = ", ".join(f"{name} {s:.1f}s" for name, s in compiling.seconds.items())
    log(f"traced and compiled in {compiling.wall_s():.1f}s (tracing {traced_s:.1f}s of it; each piece's compile: "
        f"{pieces}; {compiling.workers} at a time), {'restored' if config.resume else 'initial state built'} "
        f"in {state_s:.1f}s: "
        f"{env.num_tasks} tasks x {population.size} members "
        f"({config.num_seeds} seeds x {len(population.variants)} variants) on {prog.mesh.size} devices, "
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


def together(fn):
    """`fn()` on every process; when it raises ConfigError on any of them (a check that only
    process 0 makes, say), every process raises one, so none waits on the others forever."""
    try:
        out, problem = fn(), None
    except ConfigError as e:
        out, problem = None, e
    if distributed.any_process(problem is not None):
        raise problem or ConfigError("another process of this run stopped on bad input (its error line says why)")
    return out


def main(kind: str, experiment: Experiment, transfer_config: TransferConfig | None = None, log=print):
    """What an experiment script does: join the other processes (if any), plan (every input
    checked; a transfer run against its source), build, train. Bad input: one line, exit code 2."""
    exit_on_error(lambda: distributed.initialize(experiment.run))
    plan = exit_on_error(lambda: program.plan(kind, experiment) if transfer_config is None
                         else transfer.plan(kind, experiment, transfer_config))
    exit_on_error(lambda: together(lambda: tracking.check_installed(plan.experiment.run.track)))
    exit_on_error(lambda: rundir.check_same_config(plan.config))
    exit_on_error(lambda: rundir.check_run_dir(plan.experiment.run.run_dir, plan.config,
                                               resume=plan.experiment.run.resume))
    distributed.barrier("run dir checked")  # before process 0 writes into it
    program.enable_compilation_cache()
    t0 = time.perf_counter()
    built = exit_on_error(lambda: program.build(plan))
    if distributed.is_primary():
        log(f"built {len(plan.names)} tasks' environments and the agent in {time.perf_counter() - t0:.1f}s")
    return exit_on_error(lambda: run(built, log=log))
