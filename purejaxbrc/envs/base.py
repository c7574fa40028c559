"""What every multi-task environment adapter returns, so the training loop serves them all."""

import functools
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp


class EnvStep(NamedTuple):
    """One step of every environment, leaves `[T, E, ...]` (tasks, environments per task).

    `obs` is what the agent acts on next: after an episode ends it is already the first
    observation of the new episode. `next_obs` is the true next observation of this step (the
    final one at episode ends), which is what the replay buffer stores for the bootstrap.
    """

    obs: jax.Array
    reward: jax.Array  # float32
    terminated: jax.Array  # bool: no bootstrap
    truncated: jax.Array  # bool: time limit, bootstrap from next_obs
    next_obs: jax.Array


def task_keys(key, task_names, shape):
    """Keys `[T, *shape, 2]`: task `i`'s come from `fold_in(key, crc32(its name))`, so a task's
    episodes do not depend on which other tasks share the run (a transfer run evaluates a
    pretraining task on exactly the episodes its pretrained run did)."""
    per_task = [jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF) for name in task_names]
    return jnp.stack([jax.random.split(k, shape) for k in per_task])


def finite_rows(batch_ndim: int, *arrays):
    """`[*batch]` bool: True where every entry of every array's row is finite. The arrays share
    their first `batch_ndim` axes."""
    ok = [jnp.all(jnp.isfinite(x).reshape(x.shape[:batch_ndim] + (-1,)), axis=-1) for x in arrays]
    return functools.reduce(jnp.logical_and, ok)


def zero_non_finite(x):
    """`x` with NaN and +-inf entries replaced by 0."""
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def parse_task_spec(spec: str, valid, sets: dict) -> tuple[str, ...]:
    """Comma-separated task names and/or set names -> task names, in order, each once.

    An unknown name raises ValueError naming the valid sets and tasks.
    """
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in sets:
            names.extend(sets[part])
        elif part in valid:
            names.append(part)
        else:
            raise ValueError(f"unknown task {part!r}; valid: {', '.join(sorted(sets))} (sets), "
                             f"{', '.join(valid)}")
    if not names:
        raise ValueError("no tasks given")
    if len(set(names)) != len(names):
        raise ValueError(f"task listed twice in {spec!r}")
    return tuple(names)
