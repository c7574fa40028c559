"""Configuration of a discrete BRC run (gymnax games, `purejaxbrc.dqn`).

`DQNConfig` extends `BRCConfig`, so the shared training loop, host loop, run directory and
validation all read it unchanged. The SAC-only fields (actor, temperature) and `episode_length`
(gymnax games carry their own time limit) are hidden from the command line and left out of
`config.json`.
"""

import dataclasses
from dataclasses import dataclass

import tyro

from purejaxbrc.config import BRCConfig, ConfigError, validate

UNUSED = ("actor_width", "actor_depth", "alpha_lr", "init_alpha", "episode_length")


@dataclass(frozen=True)
class DQNConfig(BRCConfig):
    """BRC categorical double Q-learning on gymnax games (BRC.md, "Discrete actions from pixels")."""

    tasks: str = "minatar"
    """Comma-separated gymnax names with discrete actions and/or the set minatar."""
    num_envs: int = 64
    """Environments per task; every one steps once per iteration."""
    total_iterations: int = 100_000
    warmup_iterations: int = 1_000
    eval_every: int = 5_000
    eps_start: float = 1.0
    """Exploration epsilon at iteration 0 (warm-up iterations count)."""
    eps_end: float = 0.05
    eps_decay: int = 10_000
    """Iterations over which epsilon decays linearly from eps_start to eps_end."""
    conv_channels: tuple[int, ...] = (16,)
    """Output channels of each 3x3 VALID conv + ReLU (image observations only)."""
    run_dir: str = "runs/brc_minatar"

    actor_width: tyro.conf.Suppress[int] = 256
    actor_depth: tyro.conf.Suppress[int] = 1
    alpha_lr: tyro.conf.Suppress[float] = 3e-4
    init_alpha: tyro.conf.Suppress[float] = 0.1
    episode_length: tyro.conf.Suppress[int] = 1000

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in UNUSED:
            d.pop(name)
        d["conv_channels"] = list(self.conv_channels)
        return d


def validate_dqn(config: DQNConfig, num_tasks: int) -> None:
    """The shared checks, then the discrete ones; ConfigError with one line for the first."""
    validate(config, num_tasks)
    for name in ("eps_start", "eps_end"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(config, name)}")
    if config.eps_decay <= 0:
        raise ConfigError(f"--eps-decay must be > 0, got {config.eps_decay}")
    if any(c <= 0 for c in config.conv_channels):
        raise ConfigError(f"--conv-channels must all be > 0, got {' '.join(map(str, config.conv_channels))}")
