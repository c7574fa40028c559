"""The kinds of run, named by run_info.json's `kind` (purejaxbrc.kinds.base.Kind):

- "mjx": experiments/brc_mjx.py, SAC (`sac.SACConfig`) on MuJoCo Playground control tasks
- "minatar": experiments/brc_minatar.py, categorical double Q (`dqn.DQNConfig`) on gymnax games
"""

from purejaxbrc.config import ConfigError
from purejaxbrc.kinds.base import Kind
from purejaxbrc.kinds.minatar import MINATAR
from purejaxbrc.kinds.mjx import MJX

KINDS: dict[str, Kind] = {kind.name: kind for kind in (MJX, MINATAR)}


def get(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(f"unknown run kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def resolve_tasks(kind: Kind, spec: str) -> tuple[str, ...]:
    """`kind`'s task names for `spec`; ConfigError naming the valid ones for an unknown name, or
    the kind of run a name belongs to."""
    try:
        return kind.resolve(spec)
    except ValueError as e:
        for other in KINDS.values():
            if other is kind:
                continue
            theirs = set(other.all_task_names())
            for part in (p.strip() for p in spec.split(",")):
                if part in theirs:
                    raise ConfigError(f"task {part!r} is one of the {other.what}; this {kind.name} run "
                                      f"takes {kind.what}")
        raise ConfigError(str(e))
