"""Per-task reward normalisation (BRC.md, "Per-task reward normalisation").

Rewards are stored raw and multiplied at sampling time by

    scale_i = v_max / (G_i + allowance),   G_i = max(max_t G_t, |min_t G_t|)

where `G_t` are the discounted returns-to-go of every finished episode of task `i`. A truncated
episode bootstraps its last step with `mean(episode rewards) / (1 - gamma)`, a terminated one
with 0, and a task that has not finished an episode yet has scale 0.

To know `G_t` for every step of an episode we keep each environment's current episode rewards.
When an episode ends, the returns-to-go are computed without a sequential scan (which would cost
a 1000-step loop on every iteration on an accelerator): see `returns_to_go`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

_BLOCK = 32  # block size of the two-level returns-to-go computation


class NormalizerState(NamedTuple):
    g_max: jax.Array  # [T] running max of returns-to-go (starts at 0: only |.| matters)
    g_min: jax.Array  # [T] running min
    seen: jax.Array  # [T] bool: the task has finished at least one episode
    rewards: jax.Array  # [T, E, L] current episode's rewards, zero beyond its length
    length: jax.Array  # [T, E] int32 steps so far in the current episode
    reward_sum: jax.Array  # [T, E]


def init(num_tasks: int, num_envs: int, max_episode_steps: int) -> NormalizerState:
    # One slot more than the longest episode holds the bootstrap value as a virtual reward.
    slots = -(-(max_episode_steps + 1) // _BLOCK) * _BLOCK
    return NormalizerState(
        g_max=jnp.zeros((num_tasks,), jnp.float32),
        g_min=jnp.zeros((num_tasks,), jnp.float32),
        seen=jnp.zeros((num_tasks,), jnp.bool_),
        rewards=jnp.zeros((num_tasks, num_envs, slots), jnp.float32),
        length=jnp.zeros((num_tasks, num_envs), jnp.int32),
        reward_sum=jnp.zeros((num_tasks, num_envs), jnp.float32),
    )


def returns_to_go(rewards, gamma: float):
    """`G_t = sum_{k >= t} gamma^(k-t) r_k` along the last axis (a multiple of the block size).

    Within each block of 32 steps a triangular discount matrix gives the in-block returns; a
    second triangular matrix over block heads carries the rest. Two small matmuls, no scan, and
    no division by `gamma^t` (which loses all precision in float32 over 1000 steps).
    """
    *batch, n = rewards.shape
    nb, s = n // _BLOCK, _BLOCK
    hi = jax.lax.Precision.HIGHEST
    x = rewards.reshape(*batch, nb, s)
    i = jnp.arange(s)
    d = jnp.where(i[None, :] >= i[:, None], gamma ** (i[None, :] - i[:, None]).astype(jnp.float32), 0.0)
    within = jnp.einsum("...bk,tk->...bt", x, d, precision=hi)  # returns inside each block
    j = jnp.arange(nb)
    m = jnp.where(j[None, :] >= j[:, None],
                  (gamma ** s) ** (j[None, :] - j[:, None]).astype(jnp.float32), 0.0)
    heads = jnp.einsum("...c,bc->...b", within[..., 0], m, precision=hi)  # G at block starts
    next_heads = jnp.concatenate([heads[..., 1:], jnp.zeros_like(heads[..., :1])], axis=-1)
    tail = gamma ** (s - i).astype(jnp.float32)  # discount from step t to the next block
    return (within + tail * next_heads[..., None]).reshape(*batch, n)


def update(state: NormalizerState, reward, terminated, truncated, gamma: float) -> NormalizerState:
    """Record one step of every environment (`[T, E]` inputs) and close finished episodes."""
    slots = jnp.arange(state.rewards.shape[-1])
    rewards = jnp.where(slots == state.length[..., None], reward[..., None], state.rewards)
    length = state.length + 1
    reward_sum = state.reward_sum + reward

    truncated = truncated & ~terminated  # a step that terminates never bootstraps
    done = terminated | truncated
    bootstrap = jnp.where(truncated, reward_sum / length / (1.0 - gamma), 0.0)
    g = returns_to_go(jnp.where(slots == length[..., None], bootstrap[..., None], rewards), gamma)
    in_episode = slots < length[..., None]
    ep_max = jnp.max(jnp.where(in_episode, g, -jnp.inf), axis=-1)
    ep_min = jnp.min(jnp.where(in_episode, g, jnp.inf), axis=-1)

    g_max = jnp.maximum(state.g_max, jnp.max(jnp.where(done, ep_max, -jnp.inf), axis=-1))
    g_min = jnp.minimum(state.g_min, jnp.min(jnp.where(done, ep_min, jnp.inf), axis=-1))
    return NormalizerState(
        g_max=g_max,
        g_min=g_min,
        seen=state.seen | jnp.any(done, axis=-1),
        rewards=jnp.where(done[..., None], 0.0, rewards),
        length=jnp.where(done, 0, length),
        reward_sum=jnp.where(done, 0.0, reward_sum),
    )


def scale(state: NormalizerState, v_max: float, allowance=0.0):
    """Per-task multiplier `[T]` for raw rewards; 0 until a task has finished an episode."""
    denom = jnp.maximum(state.g_max, jnp.abs(state.g_min)) + allowance
    ok = state.seen & (denom > 0)
    return jnp.where(ok, v_max / jnp.where(ok, denom, 1.0), 0.0)


def entropy_allowance(alpha, target_entropy, gamma):
    """`-alpha * H_target / (2 (1 - gamma))`: room on the support for SAC's entropy bonus
    (`alpha * A_max / (4 (1 - gamma))` at the default target entropy `-A_max / 2`)."""
    return -alpha * target_entropy / (2.0 * (1.0 - gamma))
