"""Zero-padding across tasks of different sizes (BRC.md, "Multi-task mechanics").

Observations (vectors, or image channels) are zero-padded at the end of their last axis to the
largest size; the agent emits the largest action and each task reads only its first entries.
"""

import jax.numpy as jnp


def pad_last_axis(x, size: int):
    """Zero-pad the last axis of `x` at the end up to `size`."""
    missing = size - x.shape[-1]
    if missing < 0:
        raise ValueError(f"cannot pad last axis of size {x.shape[-1]} down to {size}")
    if missing == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, missing)])


def task_action(action, action_dim: int):
    """The first `action_dim` entries of a padded continuous action."""
    return action[..., :action_dim]


def valid_action_mask(action_counts, max_actions: int):
    """`[T, max_actions]` bool: which discrete actions exist in each task."""
    return jnp.arange(max_actions)[None, :] < jnp.asarray(action_counts)[:, None]
