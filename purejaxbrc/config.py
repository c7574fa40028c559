"""Typed configuration of a BRC run, validated before anything is compiled."""

import dataclasses
from dataclasses import dataclass
from typing import Literal


class ConfigError(ValueError):
    """A bad configuration value: reported as one line, exit code 2."""


@dataclass(frozen=True)
class BRCConfig:
    """BRC multi-task SAC. Defaults are the paper's (BRC.md, "Optimisation")."""

    tasks: str = "humanoids"
    """Comma-separated Playground control-suite names and/or sets: humanoids, dmc."""
    num_seeds: int = 1
    """Independent seeds trained in one program (vmap): seeds seed .. seed + num_seeds - 1."""
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
    critic_width: int = 4096
    critic_depth: int = 2
    actor_width: int = 256
    actor_depth: int = 1
    num_atoms: int = 101
    v_max: float = 10.0
    embed_dim: int = 32
    embed_norm: Literal["l2", "l1"] = "l2"
    batch_size: int | None = None
    """Transitions per gradient step, drawn over all tasks; default 256 for one task, 1024 for
    several (the reference's rule)."""
    utd: int = 2
    """Gradient steps per iteration (independent of the number of tasks)."""
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    weight_decay: float = 1e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 0.1
    buffer_capacity: int = 1_000_000
    """Transitions per task (capped at what the run can collect)."""
    critic_matmul_dtype: Literal["float32", "bfloat16"] = "float32"
    chunk_iterations: int = 0
    """Iterations per compiled chunk; 0 picks the largest divisor of eval_every <= 1000."""
    run_dir: str = "runs/brc_mjx"

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

    # -- derived -----------------------------------------------------------------------------
    @property
    def chunk(self) -> int:
        if self.chunk_iterations:
            return self.chunk_iterations
        return max(d for d in range(1, min(self.eval_every, 1000) + 1) if self.eval_every % d == 0)

    @property
    def capacity(self) -> int:
        return min(self.buffer_capacity, self.total_iterations * self.num_envs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """The config stored as `to_dict()` (config.json); fields it lacks take their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"stored config has fields {cls.__name__} does not know: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# Fields that may differ between a run and its resumption: they change where and how often the
# state is saved, never the numbers the run computes.
RESUME_FREE = ("resume", "run_dir", "checkpoint_every", "keep_checkpoints", "buffer_checkpoint")


def config_diff(stored: dict, given: dict, ignore=RESUME_FREE) -> list[str]:
    """`name (stored X, given Y)` for every field that differs, `ignore` left out."""
    names = sorted(k for k in set(stored) | set(given) if k not in ignore and stored.get(k) != given.get(k))
    return [f"{k} (stored {stored.get(k)!r}, given {given.get(k)!r})" for k in names]


def default_batch_size(num_tasks: int) -> int:
    """The reference's rule: 256 transitions per gradient step for one task, 1024 for several."""
    return 256 if num_tasks == 1 else 1024


def with_defaults(config, num_tasks: int):
    """`config` with the fields whose default depends on the tasks filled in (`batch_size`)."""
    if config.batch_size is None:
        config = dataclasses.replace(config, batch_size=default_batch_size(num_tasks))
    return config


def validate(config: BRCConfig, num_tasks: int) -> None:
    """Raise ConfigError with one clear line for the first problem found (on a config
    completed by `with_defaults`)."""
    positive = ("num_seeds", "num_envs", "total_iterations", "eval_every", "eval_episodes",
                "episode_length", "critic_width", "critic_depth", "actor_width", "actor_depth",
                "embed_dim", "batch_size", "utd", "buffer_capacity", "v_max", "lr", "alpha_lr",
                "init_alpha")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(config, name)}")
    for name in ("warmup_iterations", "chunk_iterations", "weight_decay", "seed", "checkpoint_every"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if config.num_atoms < 2:
        raise ConfigError(f"--num-atoms must be >= 2, got {config.num_atoms}")
    if not 0.0 < config.gamma < 1.0:
        raise ConfigError(f"--gamma must be in (0, 1), got {config.gamma}")
    if not 0.0 < config.tau <= 1.0:
        raise ConfigError(f"--tau must be in (0, 1], got {config.tau}")
    if config.buffer_capacity < config.num_envs:
        raise ConfigError(f"--buffer-capacity ({config.buffer_capacity}) must be at least --num-envs "
                          f"({config.num_envs}): every iteration writes one transition per environment")
    if config.warmup_iterations >= config.total_iterations:
        raise ConfigError(f"--warmup-iterations ({config.warmup_iterations}) must be smaller than "
                          f"--total-iterations ({config.total_iterations})")
    filled = num_tasks * min(config.warmup_iterations * config.num_envs, config.capacity)
    if config.batch_size > filled:
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the {filled} transitions "
                          f"the warm-up fills ({num_tasks} tasks x {config.warmup_iterations} "
                          f"iterations x {config.num_envs} envs)")
    if config.total_iterations % config.eval_every:
        raise ConfigError(f"--total-iterations ({config.total_iterations}) must be a multiple of "
                          f"--eval-every ({config.eval_every})")
    if config.eval_every % config.chunk:
        raise ConfigError(f"--eval-every ({config.eval_every}) must be a multiple of "
                          f"--chunk-iterations ({config.chunk})")
    if config.checkpoint_every % config.chunk:
        raise ConfigError(f"--checkpoint-every ({config.checkpoint_every}) must be a multiple of "
                          f"the chunk ({config.chunk} iterations; see --chunk-iterations)")
    if config.keep_checkpoints < 1:
        raise ConfigError(f"--keep-checkpoints must be >= 1, got {config.keep_checkpoints}")
