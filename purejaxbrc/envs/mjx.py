"""MuJoCo Playground control-suite tasks as one multi-task environment.

- Loaded with the pure-JAX MJX backend (`impl="jax"`).
- Episodes end after `episode_length` steps (truncation: Playground's raw `step` never ends
  them) or when the physics diverges (termination: Playground's `done`).
- Auto-reset: when an episode ends the state is replaced by a fresh reset, and the step still
  reports the true final observation in `next_obs`.
- Tasks whose physics are identical (HumanoidStand/Walk/Run share one MJX model) step in one
  batched physics call; each task's own code then computes its reward and observation.
"""

import contextlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxbrc.envs.base import EnvStep, parse_task_spec
from purejaxbrc.padding import pad_last_axis, task_action

TASK_SETS = {
    "humanoids": ("HumanoidStand", "HumanoidWalk", "HumanoidRun"),
}


def all_task_names() -> tuple[str, ...]:
    from mujoco_playground import dm_control_suite
    return tuple(dm_control_suite.ALL_ENVS)


def resolve_tasks(spec: str) -> tuple[str, ...]:
    """Comma-separated Playground names and/or set names (`humanoids`, `dmc`) -> task names."""
    valid = all_task_names()
    return parse_task_spec(spec, valid, dict(TASK_SETS, dmc=valid))


def load_task(name: str):
    from mujoco_playground import registry
    return registry.load(name, config_overrides={"impl": "jax"})


class MJXEnvState(NamedTuple):
    groups: tuple  # per physics group: Playground State with leaves [G, E, ...]
    t: jax.Array  # [T, E] int32 steps into the current episode


def _same_physics(a, b) -> bool:
    """True when two environments step identical MJX models with the same substeps."""
    if type(a) is not type(b) or a.n_substeps != b.n_substeps:
        return False
    la, ta = jax.tree.flatten(a.mjx_model)
    lb, tb = jax.tree.flatten(b.mjx_model)
    if ta != tb:
        return False
    return all(np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(la, lb))


@contextlib.contextmanager
def _precomputed_physics(data_next):
    """While tracing `env.step`, make its one `mjx_env.step` call return `data_next`.

    Every control-suite task's `step` is `physics -> reward -> observation`; substituting the
    physics lets a group of tasks share one batched physics call and still run each task's
    own reward code, without copying that code here.
    """
    from mujoco_playground._src import mjx_env
    calls = []

    def substitute(model, data, action, n_substeps=1):
        calls.append(n_substeps)
        return data_next

    original = mjx_env.step
    mjx_env.step = substitute
    try:
        yield
    finally:
        mjx_env.step = original
    if len(calls) != 1:
        raise RuntimeError(f"expected one physics call per env.step, saw {len(calls)}")


class MJXTaskSet:
    """`T` control-suite tasks x `E` environments each, padded to common sizes."""

    def __init__(self, task_names, num_envs: int = 1, episode_length: int = 1000):
        self.task_names = tuple(task_names)
        self.num_tasks = len(self.task_names)
        self.num_envs = num_envs
        self.episode_length = episode_length
        self.envs = [load_task(n) for n in self.task_names]
        self.obs_dims = [int(e.observation_size) for e in self.envs]
        self.action_dims = [int(e.action_size) for e in self.envs]
        self.obs_size = max(self.obs_dims)
        self.action_size = max(self.action_dims)
        self.groups: list[list[int]] = []  # task indices sharing one physics call
        for i, env in enumerate(self.envs):
            for g in self.groups:
                if _same_physics(self.envs[g[0]], env):
                    g.append(i)
                    break
            else:
                self.groups.append([i])
        self._order = np.argsort([i for g in self.groups for i in g])  # group order -> task order

    # -- helpers over the [G, E] layout of a group -------------------------------------------
    def _reset_group(self, group, keys):
        """keys [G, E, 2] -> stacked State [G, E, ...]."""
        states = [jax.vmap(self.envs[i].reset)(keys[k]) for k, i in enumerate(group)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def _group_obs(self, group, states):
        return [pad_last_axis(states.obs[k], self.obs_size) for k in range(len(group))]

    def _to_task_order(self, per_group_lists):
        flat = [x for lst in per_group_lists for x in lst]
        return jnp.stack([flat[j] for j in self._order])

    def _step_group(self, group, states, actions):
        """One batched physics call for the group, then each task's own step code."""
        first = self.envs[group[0]]
        acts = jnp.stack([task_action(actions[i], self.action_dims[i]) for i in group])  # [G, E, A]
        from mujoco_playground._src import mjx_env
        physics = jax.vmap(jax.vmap(lambda d, a: mjx_env.step(first.mjx_model, d, a, first.n_substeps)))
        data_next = physics(states.data, acts)
        out = []
        for k, i in enumerate(group):
            def task_step(state, action, data, env=self.envs[i]):
                with _precomputed_physics(data):
                    return env.step(state, action)
            s_k = jax.tree.map(lambda x: x[k], states)
            d_k = jax.tree.map(lambda x: x[k], data_next)
            out.append(jax.vmap(task_step)(s_k, acts[k], d_k))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *out)

    # -- the functional API ------------------------------------------------------------------
    def reset(self, key):
        keys = jax.random.split(key, (self.num_tasks, self.num_envs))
        groups = tuple(self._reset_group(g, keys[jnp.array(g)]) for g in self.groups)
        obs = self._to_task_order([self._group_obs(g, s) for g, s in zip(self.groups, groups)])
        t = jnp.zeros((self.num_tasks, self.num_envs), jnp.int32)
        return MJXEnvState(groups, t), obs

    def step(self, state: MJXEnvState, action, key):
        """`action` [T, E, action_size] in [-1, 1] -> (new state, EnvStep)."""
        action = jnp.clip(action, -1.0, 1.0)
        keys = jax.random.split(key, (self.num_tasks, self.num_envs))
        t = state.t + 1
        new_groups, obs, next_obs, reward, terminated = [], [], [], [], []
        for g, s in zip(self.groups, state.groups):
            stepped = self._step_group(g, s, action)
            term = stepped.done > 0.5  # Playground's done: the physics diverged
            tg = t[jnp.array(g)]
            ended = term | (tg >= self.episode_length)
            fresh = self._reset_group(g, keys[jnp.array(g)])
            new_s = jax.tree.map(
                lambda a, b: jnp.where(ended.reshape(ended.shape + (1,) * (a.ndim - 2)), a, b),
                fresh, stepped)
            new_groups.append(new_s)
            # A diverged simulation yields NaNs; keep them out of the buffer and the networks.
            next_obs.append([jnp.nan_to_num(o) for o in self._group_obs(g, stepped)])
            obs.append(self._group_obs(g, new_s))
            reward.append(list(jnp.nan_to_num(stepped.reward).astype(jnp.float32)))
            terminated.append(list(term))
        terminated = self._to_task_order(terminated)
        truncated = (t >= self.episode_length) & ~terminated
        t = jnp.where(terminated | truncated, 0, t)
        return MJXEnvState(tuple(new_groups), t), EnvStep(
            obs=self._to_task_order(obs),
            reward=self._to_task_order(reward),
            terminated=terminated,
            truncated=truncated,
            next_obs=self._to_task_order(next_obs),
        )
