"""Typed configuration of a BRC run, validated before anything is compiled.

An `Experiment` is a loop config (`RunConfig`: tasks, seeds, budget, replay, checkpoints, the
sweep, devices and hosts) composed with an agent config (`agent.AgentConfig`: `sac.SACConfig` on
control tasks, `dqn.DQNConfig` on discrete games). A transfer run adds a `TransferConfig`. The fields an agent config lists in its `SWEEPABLE` can take
different values within one compiled program (`--sweep`): they are per-member data in the
training state. Every other field is a compile-time constant, among them all that shape the
program (widths, batch size, UTD, chunk length).
"""

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import tyro


class ConfigError(ValueError):
    """A bad configuration value: reported as one line, exit code 2."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require(config, name: str, ok, what: str) -> None:
    """ConfigError `--name must be <what>, got <value>` unless `ok(value)`."""
    value = getattr(config, name)
    if not ok(value):
        raise ConfigError(f"{flag(name)} must be {what}, got {value}")


def positive(config, *names) -> None:
    for name in names:
        require(config, name, lambda v: v > 0, "> 0")


@dataclass(frozen=True)
class RunConfig:
    """The training loop, the run directory and where it runs."""

    tasks: str = "humanoids"
    """Comma-separated task names and/or sets (MJX: humanoids, dmc; gymnax: minatar)."""
    num_seeds: int = 1
    """Seeds seed .. seed + num_seeds - 1, each trained with every sweep variant, in one program."""
    seed: int = 0
    num_envs: int = 1
    """Environments per task; every one steps once per iteration."""
    total_iterations: int = 1_000_000
    """Environment iterations per run, warm-up included."""
    warmup_iterations: int = 5_000
    """Iterations of uniform random actions before learning starts."""
    eval_every: int = 50_000
    eval_episodes: int = 10
    episode_length: int = 1000
    """Time limit of MJX episodes (gymnax games end at their own limits)."""
    batch_size: int | None = None
    """Transitions per gradient step, drawn over all tasks; default 256 for one task, 1024 for
    several (the reference's rule)."""
    utd: int = 2
    """Gradient steps per iteration (independent of the number of tasks)."""
    buffer_capacity: int = 1_000_000
    """Transitions per task (capped at what the run can collect)."""
    chunk_iterations: int = 0
    """Iterations per compiled chunk; 0 picks the largest divisor of eval_every <= 1000."""
    run_dir: str = "runs/brc"

    # -- the population: seeds x hyperparameter variants (purejaxbrc.sweep) --------------------
    sweep: tuple[str, ...] = ()
    """A grid of hyperparameter values, e.g. `--sweep lr=1e-4,3e-4 tau=0.005,0.01`: one variant
    per combination, each trained with every seed, all in one program."""
    sweep_file: str = ""
    """A JSON or YAML list of variants instead of a grid, e.g. `[{"lr": 1e-4}, {"lr": 3e-4,
    "tau": 0.01}]`; a name a variant leaves out takes the flag's value."""

    # -- checkpoints (purejaxbrc.checkpoint) -------------------------------------------------
    checkpoint_every: int = 0
    """Iterations between checkpoints (a multiple of the chunk); 0: only at the end."""
    keep_checkpoints: int = 3
    """How many of the latest checkpoints to keep."""
    resume: bool = False
    """Continue the run in --run-dir from its last complete checkpoint (same flags)."""
    buffer_checkpoint: bool = True
    """Save the replay buffers in checkpoints; --no-buffer-checkpoint: much smaller checkpoints,
    but a resume refills the buffers first and is not bit-exact."""

    # -- experiment tracking (purejaxbrc.tracking) ---------------------------------------------
    track: tuple[Literal["wandb", "tensorboard"], ...] = ()
    """Also log every evaluation to Weights & Biases and/or TensorBoard (`--track wandb
    tensorboard`); metrics.jsonl stays the record. Needs its extra: pip install -e ".[wandb]" or
    ".[tensorboard]"."""

    # -- devices and processes (purejaxbrc.distributed) ----------------------------------------
    vmap_members: bool = True
    """Batch each device's members with vmap (fast); --no-vmap-members runs them one after
    another, so that every member's numbers are bit-identical for any number of devices (XLA
    rounds differently at different batch sizes)."""
    coordinator_address: str = ""
    """host:port of process 0, for a run launched as several processes (one per host); SLURM
    jobs and multi-host TPU slices are detected without it."""
    num_processes: int = 1
    process_id: int = 0

    # -- derived -----------------------------------------------------------------------------
    @property
    def chunk(self) -> int:
        if self.chunk_iterations:
            return self.chunk_iterations
        return max(d for d in range(1, min(self.eval_every, 1000) + 1) if self.eval_every % d == 0)

    @property
    def capacity(self) -> int:
        return min(self.buffer_capacity, self.total_iterations * self.num_envs)


@dataclass(frozen=True)
class Experiment:
    """What a script runs: the loop and the agent. Flags carry no prefix (`--lr`, `--tasks`);
    each script declares `agent` with its agent config's type for the command line
    (purejaxbrc.cli.experiment_type)."""

    run: tyro.conf.OmitArgPrefixes[RunConfig]
    agent: Any  # a purejaxbrc.agent.AgentConfig

    def replace(self, **changes) -> "Experiment":
        """A copy with fields changed by their flag names, wherever they live (`lr=`, `tasks=`)."""
        run_names = {f.name for f in dataclasses.fields(self.run)}
        agent_names = {f.name for f in dataclasses.fields(self.agent)}
        unknown = sorted(set(changes) - run_names - agent_names)
        if unknown:
            raise TypeError(f"no such field: {', '.join(unknown)}")
        return dataclasses.replace(
            self, run=dataclasses.replace(self.run, **{k: v for k, v in changes.items() if k in run_names}),
            agent=dataclasses.replace(self.agent, **{k: v for k, v in changes.items() if k in agent_names}))


@dataclass(frozen=True)
class TransferConfig:
    """Where a transfer run starts from (purejaxbrc.transfer): an explicit input of planning and
    building a run, None for a run trained from scratch."""

    source: Annotated[str, tyro.conf.arg(name="from")] = ""
    """The pretrained run's directory."""
    checkpoint: int | None = None
    """Its checkpoint (iteration) to start from; default: the latest readable one."""
    mode: Literal["finetune", "embedding", "scratch"] = "finetune"
    new_rows: Literal["mean", "fresh"] = "mean"
    """How a new task's embedding row starts: the mean of the pretrained rows, or fresh."""
    temperature: Literal["reset", "carry"] = "reset"
    """SAC's temperature in finetune and embedding runs: restart at --init-alpha as a fresh run
    does (reset), or keep the pretrained one (carry; --init-alpha must then be the pretrained
    run's). DQN has none."""
    # Read from the pretrained run when this run starts, and kept in config.json:
    source_tasks: tyro.conf.Suppress[tuple[str, ...]] = ()
    source_step: tyro.conf.Suppress[int] = -1
    obs_shape: tyro.conf.Suppress[tuple[int, ...]] = ()
    """The pretrained padded observation shape: `(size,)` for MJX, `(H, W, C)` for games."""
    num_actions: tyro.conf.Suppress[int] = 0
    """The pretrained padded action size (MJX) or action count (games)."""

    def rows(self, names) -> np.ndarray:
        """`[T]` int: each task's row in the pretrained embedding table, -1 for a new task."""
        return np.array([self.source_tasks.index(n) if n in self.source_tasks else -1 for n in names])


def default_batch_size(num_tasks: int) -> int:
    """The reference's rule: 256 transitions per gradient step for one task, 1024 for several."""
    return 256 if num_tasks == 1 else 1024


def with_defaults(run: RunConfig, num_tasks: int) -> RunConfig:
    """`run` with the fields whose default depends on the tasks filled in (`batch_size`)."""
    if run.batch_size is None:
        run = dataclasses.replace(run, batch_size=default_batch_size(num_tasks))
    return run


def validate_run(run: RunConfig, num_tasks: int) -> None:
    """Raise ConfigError with one clear line for the first problem found (on a config completed
    by `with_defaults`)."""
    positive(run, "num_seeds", "num_envs", "total_iterations", "eval_every", "eval_episodes",
             "episode_length", "batch_size", "utd", "buffer_capacity", "num_processes")
    for name in ("warmup_iterations", "chunk_iterations", "seed", "checkpoint_every", "process_id"):
        require(run, name, lambda v: v >= 0, ">= 0")
    require(run, "keep_checkpoints", lambda v: v >= 1, ">= 1")
    if run.buffer_capacity < run.num_envs:
        raise ConfigError(f"--buffer-capacity ({run.buffer_capacity}) must be at least --num-envs "
                          f"({run.num_envs}): every iteration writes one transition per environment")
    if run.warmup_iterations >= run.total_iterations:
        raise ConfigError(f"--warmup-iterations ({run.warmup_iterations}) must be smaller than "
                          f"--total-iterations ({run.total_iterations})")
    filled = num_tasks * min(run.warmup_iterations * run.num_envs, run.capacity)
    if run.batch_size > filled:
        raise ConfigError(f"--batch-size {run.batch_size} is larger than the {filled} transitions "
                          f"the warm-up fills ({num_tasks} tasks x {run.warmup_iterations} "
                          f"iterations x {run.num_envs} envs)")
    if run.total_iterations % run.eval_every:
        raise ConfigError(f"--total-iterations ({run.total_iterations}) must be a multiple of "
                          f"--eval-every ({run.eval_every})")
    if run.eval_every % run.chunk:
        raise ConfigError(f"--eval-every ({run.eval_every}) must be a multiple of "
                          f"--chunk-iterations ({run.chunk})")
    if run.checkpoint_every % run.chunk:
        raise ConfigError(f"--checkpoint-every ({run.checkpoint_every}) must be a multiple of "
                          f"the chunk ({run.chunk} iterations; see --chunk-iterations)")
    if run.sweep and run.sweep_file:
        raise ConfigError("give --sweep or --sweep-file, not both")
