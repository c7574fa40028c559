"""gymnax discrete-action environments (MinAtar, Pong-misc, Catch-bsuite, CartPole-v1, ...) as one
multi-task environment with the same interface as `MJXTaskSet`.

- Every task runs `num_envs` copies, vmapped; tasks with different dynamics step side by side in
  one trace (a Python loop over tasks, unrolled when traced).
- Auto-reset is gymnax's own: its `step` returns the reset observation when an episode ends and
  the true final one in `info["final_observation"]`, which becomes `EnvStep.next_obs`.
- Episodes end by termination (the game says so: no bootstrap) or truncation (the game's
  `max_steps_in_episode`: bootstrap). A step that is both counts as terminated.
- Observations: a vector `[D]`, a single-channel grid `[H, W]` (stored as `[H, W, 1]`) or an
  image `[H, W, C]`. Across tasks, vectors and image channels are zero-padded at the end to the
  largest size (BRC.md, "Discrete actions from pixels"); images must share `H x W`.
- Games whose observations are binary grids (MinAtar, Pong-misc, Catch-bsuite) are stored as
  uint8 (4x less replay memory); the agent casts to float32. Others are float32.
- Actions are integers `[T, E]`; task `i` has `action_counts[i]` of them, the agent emits
  indices below `action_size = max(action_counts)` and masks the rest. Out-of-range indices are
  clipped into the task's range before stepping (a guard; a correct agent never emits them).
"""

import jax
import jax.numpy as jnp
import numpy as np

from purejaxbrc.envs.base import EnvStep, parse_task_spec, task_keys
from purejaxbrc.padding import pad_last_axis

MINATAR = ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar",
           "Seaquest-MinAtar")
TASK_SETS = {"minatar": MINATAR}
# Observations that are 0/1 grids by construction: exact in uint8.
BINARY_OBS = frozenset(MINATAR + ("Pong-misc", "Catch-bsuite"))


# gymnax is imported where it is used: its import takes seconds, and an MJX run never needs it.
def _make(name: str):
    import gymnax
    if name not in gymnax.registered_envs:
        raise ValueError(f"unknown task {name!r}")
    return gymnax.make(name)


def _describe(name: str, env, params):
    """`(obs_shape as [D] or [H, W, C], num_actions)`; ValueError if the game does not fit."""
    from gymnax.environments import spaces
    space = env.action_space(params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"task {name!r} has a {type(space).__name__} action space; only discrete "
                         f"actions are supported")
    obs, _ = jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)
    if not isinstance(obs, jax.ShapeDtypeStruct) or not 1 <= len(obs.shape) <= 3:
        raise ValueError(f"task {name!r} has observations that are not one array of rank 1-3: "
                         f"{jax.tree.map(lambda x: x.shape, obs)}")
    shape = tuple(obs.shape) + ((1,) if len(obs.shape) == 2 else ())
    return shape, int(space.n)


def all_task_names() -> tuple[str, ...]:
    import gymnax
    return tuple(gymnax.registered_envs)


def resolve_tasks(spec: str) -> tuple[str, ...]:
    """Comma-separated gymnax names and/or set names (`minatar`) -> task names, each checked to
    have discrete actions and array observations compatible with the others."""
    names = parse_task_spec(spec, all_task_names(), TASK_SETS)
    _common_obs_shape(names, [_describe(n, *_make(n))[0] for n in names])
    return names


def _common_obs_shape(names, shapes):
    """The padded shape all tasks share; ValueError for vectors mixed with images or for images
    of different heights and widths."""
    ranks = {len(s) for s in shapes}
    if len(ranks) > 1:
        raise ValueError(f"cannot mix vector and image observations: "
                         f"{', '.join(f'{n} {s}' for n, s in zip(names, shapes))}")
    if len({s[:-1] for s in shapes}) > 1:
        raise ValueError(f"images of different sizes cannot share one network: "
                         f"{', '.join(f'{n} {s[:-1]}' for n, s in zip(names, shapes))}")
    return shapes[0][:-1] + (max(s[-1] for s in shapes),)


class GymnaxTaskSet:
    """`T` gymnax games x `E` environments each, padded to common observation and action sizes."""

    def __init__(self, task_names, num_envs: int = 1, max_episode_steps: int | None = None,
                 obs_dtype=None, obs_shape=None):
        """`max_episode_steps` overrides every game's time limit (None: each game's own);
        `obs_dtype` overrides the stored observation dtype (None: uint8 for binary games);
        `obs_shape` pads to this shape instead of the largest task's (a transferred model's
        input; ValueError if a task does not fit)."""
        self.task_names = tuple(task_names)
        self.num_tasks = len(self.task_names)
        self.num_envs = num_envs
        made = [_make(n) for n in self.task_names]
        self.envs = [e for e, _ in made]
        self.params = [p if max_episode_steps is None else p.replace(max_steps_in_episode=max_episode_steps)
                       for _, p in made]
        described = [_describe(n, e, p) for n, e, p in zip(self.task_names, self.envs, self.params)]
        self.obs_shapes = [s for s, _ in described]
        self.action_counts = tuple(a for _, a in described)
        self.obs_shape = _common_obs_shape(self.task_names, self.obs_shapes)
        if obs_shape is not None:
            obs_shape = tuple(obs_shape)
            if len(obs_shape) != len(self.obs_shape) or obs_shape[:-1] != self.obs_shape[:-1] \
                    or obs_shape[-1] < self.obs_shape[-1]:
                raise ValueError(f"observations of shape {self.obs_shape} do not pad to {obs_shape}")
            self.obs_shape = obs_shape
        self.obs_size = int(np.prod(self.obs_shape))
        self.action_size = max(self.action_counts)
        self.episode_lengths = tuple(int(p.max_steps_in_episode) for p in self.params)
        self.episode_length = max(self.episode_lengths)  # the longest possible episode
        if obs_dtype is None:
            obs_dtype = jnp.uint8 if all(n in BINARY_OBS for n in self.task_names) else jnp.float32
        self.obs_dtype = jnp.dtype(obs_dtype)

    def _obs(self, i, obs):
        """Task `i`'s `[E, *own shape]` observations -> `[E, *obs_shape]` in the stored dtype."""
        obs = obs.reshape(obs.shape[:1] + self.obs_shapes[i])  # [H, W] grids gain a channel axis
        return pad_last_axis(obs, self.obs_shape[-1]).astype(self.obs_dtype)

    def task_keys(self, key):
        """`[T, E, 2]`: each environment's key for one reset or step (purejaxbrc.envs.base)."""
        return task_keys(key, self.task_names, (self.num_envs,))

    # -- the functional API ------------------------------------------------------------------
    def reset(self, key):
        keys = self.task_keys(key)
        states, obs = [], []
        for i, (env, params) in enumerate(zip(self.envs, self.params)):
            o, s = jax.vmap(env.reset, in_axes=(0, None))(keys[i], params)
            states.append(s)
            obs.append(self._obs(i, o))
        return tuple(states), jnp.stack(obs)

    def init(self, key):
        """The first state: a reset (cheap here, unlike MJX's, whose `init` defers it)."""
        return self.reset(key)

    def refill(self, state, obs, key):
        """Nothing to do: gymnax resets are cheap, and its `step` auto-resets by itself."""
        del key
        return state, obs

    def step(self, state, action, key):
        """`action` [T, E] integers -> (new state, EnvStep with leaves [T, E, ...])."""
        keys = self.task_keys(key)
        states, obs, next_obs, reward, terminated, truncated = [], [], [], [], [], []
        for i, (env, params) in enumerate(zip(self.envs, self.params)):
            a = jnp.clip(action[i].astype(jnp.int32), 0, self.action_counts[i] - 1)
            o, s, r, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                keys[i], state[i], a, params)
            term = jnp.asarray(term).astype(bool)
            states.append(s)
            obs.append(self._obs(i, o))
            next_obs.append(self._obs(i, info["final_observation"]))
            reward.append(jnp.asarray(r, jnp.float32))
            terminated.append(term)
            truncated.append(jnp.asarray(trunc).astype(bool) & ~term)
        return tuple(states), EnvStep(
            obs=jnp.stack(obs),
            reward=jnp.stack(reward),
            terminated=jnp.stack(terminated),
            truncated=jnp.stack(truncated),
            next_obs=jnp.stack(next_obs),
        )
