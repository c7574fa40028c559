"""An on-device replay ring buffer with one ring per task.

Every task inserts the same number of transitions per iteration (all tasks step in lockstep),
so one write pointer and one size serve all rings, and drawing a flat index uniformly over
`num_tasks * size` samples uniformly over the union of all tasks' transitions (BRC.md).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array  # raw; normalised when sampled
    terminated: jax.Array  # bool
    truncated: jax.Array  # bool
    next_obs: jax.Array  # the true next observation, also at episode ends


class BufferState(NamedTuple):
    data: Any  # pytree like the items, each leaf [T, capacity, ...]
    ptr: jax.Array  # int32 next write position
    size: jax.Array  # int32 filled positions per task


def init(example_item, num_tasks: int, capacity: int) -> BufferState:
    """An empty buffer for items shaped and typed like `example_item` (no batch axes)."""
    data = jax.tree.map(
        lambda x: jnp.zeros((num_tasks, capacity) + jnp.shape(x), jnp.asarray(x).dtype), example_item)
    return BufferState(data=data, ptr=jnp.int32(0), size=jnp.int32(0))


def add(state: BufferState, items) -> BufferState:
    """Insert `items` with leaves `[T, E, ...]` (E per task) at the write pointer, wrapping."""
    capacity = jax.tree.leaves(state.data)[0].shape[1]
    num_new = jax.tree.leaves(items)[0].shape[1]
    idx = (state.ptr + jnp.arange(num_new, dtype=jnp.int32)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[:, idx].set(x.astype(buf.dtype)), state.data, items)
    return BufferState(
        data=data,
        ptr=(state.ptr + num_new) % capacity,
        size=jnp.minimum(state.size + num_new, capacity),
    )


def sample(state: BufferState, key, batch_size: int):
    """`(items, task_ids)`: a batch drawn uniformly over all stored transitions of all tasks."""
    num_tasks = jax.tree.leaves(state.data)[0].shape[0]
    flat = jax.random.randint(key, (batch_size,), 0, num_tasks * state.size, dtype=jnp.int32)
    task, pos = flat // state.size, flat % state.size
    return jax.tree.map(lambda buf: buf[task, pos], state.data), task
