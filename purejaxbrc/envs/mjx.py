"""MuJoCo Playground control-suite tasks as one multi-task environment.

- Loaded with the pure-JAX MJX backend (`impl="jax"`).
- Episodes end after `episode_length` steps (truncation: Playground's raw `step` never ends
  them) or when the physics diverges (termination): Playground's `done` (NaN in qpos/qvel), or
  any non-finite entry in the state's positions and velocities, the observation or the reward.
  A diverged step reports a zero reward and a next observation with its non-finite entries
  zeroed, so nothing non-finite reaches the replay buffer or the networks.
- Auto-reset from a pool: a Playground reset can cost far more than a step (CheetahRun settles
  its model for 200 substeps), and under `jit` or `vmap` a reset computed on every step and
  kept only where an episode ended costs that on every step. So each environment keeps
  `pool_size` fresh initial states, drawn by `env.reset` ahead of time; an episode that ends
  takes the next one, and `refill` (called by the training loop once per chunk) redraws the
  used ones. `init` makes every environment unstarted, with no physics; the first `refill`
  starts them (so a program building the first training state compiles no physics). The step
  itself never calls `reset`. Each pooled state is an independent draw of
  `env.reset` with its own key, so episodes start from exactly the distribution `env.reset`
  gives. A chunk of `C` iterations ends at most `ceil(C / episode_length)` episodes per
  environment by time limits: `pool_size_for(C, episode_length)` adds one entry for a
  divergence. Only if an environment ends more episodes than its pool holds within one chunk
  does it start one from an already used initial state (the pool index wraps).
- `pool_size=0`: no auto-reset (evaluation, whose episodes all end at the last step it runs);
  an environment whose episode ended keeps stepping from its last state.
- The step still reports the true final observation in `next_obs`.
- Tasks whose physics are identical (HumanoidStand/Walk/Run share one MJX model) step in one
  batched physics call; each task's own code then computes its reward and observation.
"""

import contextlib
import functools
import math
from typing import NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from purejaxbrc.envs.base import EnvStep, finite_rows, parse_task_spec, task_keys, zero_non_finite
from purejaxbrc.padding import pad_last_axis, task_action

TASK_SETS = {
    "humanoids": ("HumanoidStand", "HumanoidWalk", "HumanoidRun"),
}


# MuJoCo Playground is imported where it is used: its import takes seconds (it pulls in MuJoCo,
# MJX, brax and flax), and a gymnax run or a plot never needs it.
def all_task_names() -> tuple[str, ...]:
    from mujoco_playground import dm_control_suite
    return tuple(dm_control_suite.ALL_ENVS)


def resolve_tasks(spec: str) -> tuple[str, ...]:
    """Comma-separated Playground names and/or set names (`humanoids`, `dmc`) -> task names."""
    valid = all_task_names()
    return parse_task_spec(spec, valid, dict(TASK_SETS, dmc=valid))


@functools.cache
def load_task(name: str):
    """Playground's environment `name` on MJX. Cached: loading parses the model and moves it to
    the device (seconds for a humanoid), and the training and evaluation environments, and a
    transfer's checks, share one (a Playground environment holds no state that steps change)."""
    from mujoco_playground import registry
    return registry.load(name, config_overrides={"impl": "jax"})


def pool_size_for(chunk: int, episode_length: int) -> int:
    """Initial states per environment that one chunk of `chunk` iterations can use: one per
    time limit it can reach, and one more for a diverged episode."""
    return math.ceil(chunk / episode_length) + 1


class MJXEnvState(NamedTuple):
    groups: tuple  # per physics group: Playground State with leaves [G, E, ...]
    t: jax.Array  # [T, E] int32 steps into the current episode; -1: not started (`init`)
    pool: tuple  # per physics group: fresh initial States with leaves [G, P, E, ...]
    used: jax.Array  # [T, E] int32 pool entries taken since the last refill


@functools.cache
def _state_shapes(env):
    """The shapes of `env`'s State: its reset traced without the `mjx.forward` it makes, which
    fills in fields of the data and changes none of their shapes (tests/test_mjx_env.py). Tracing
    the forward costs seconds per task (most of building a task set), and the programs trace
    it again anyway: they do so inside a shard_map, a context JAX keeps its traces apart for.
    Cached, as every task set of a run asks."""
    def reset(key):
        with _forward_replaced(lambda model, data: data):
            return env.reset(key)
    return jax.eval_shape(reset, jax.random.PRNGKey(0))


def observation_size(env) -> int:
    """`env.observation_size` without Playground's trace of a reset on every access (seconds
    for a humanoid, and a run asks once per task and task set)."""
    return int(_state_shapes(env).obs.shape[-1])


@functools.cache
def _same_physics(a, b) -> bool:
    """True when two environments step identical MJX models with the same substeps, and their
    states have one layout (so they stack: HopperHop and HopperStand log different metrics)."""
    if type(a) is not type(b) or a.n_substeps != b.n_substeps:
        return False
    sa, sb = _state_shapes(a), _state_shapes(b)
    if jax.tree.structure(sa) != jax.tree.structure(sb) or jax.tree.leaves(sa) != jax.tree.leaves(sb):
        return False
    la, ta = jax.tree.flatten(a.mjx_model)
    lb, tb = jax.tree.flatten(b.mjx_model)
    if ta != tb:
        return False
    return all(np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(la, lb))


@contextlib.contextmanager
def _replaced(module, name: str, fn, per: str):
    """While tracing, `module.name` calls `fn` instead; the code traced must call it once.

    Every control-suite task's `step` is `physics -> reward -> observation` and its `reset`
    `make data -> mjx.forward -> observation`: substituting the physics lets a group of tasks
    share one batched physics call and still run each task's own code, without copying it here.
    Likewise `mjx.step` is `forward -> integrator`: the step reuses the reset's forward so.
    """
    original, calls = getattr(module, name), []

    def replacement(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)
    if len(calls) != 1:
        raise RuntimeError(f"expected one {module.__name__}.{name} call per {per}, saw {len(calls)}")


def _precomputed_physics(data_next):
    """While tracing `env.step`, make its one `mjx_env.step` call return `data_next`."""
    from mujoco_playground._src import mjx_env
    return _replaced(mjx_env, "step", lambda *args, **kwargs: data_next, "env.step")


def _forward_replaced(fn):
    """While tracing a control-suite `reset`, make its one `mjx.forward` call (on the data it
    has just made) call `fn(model, data)` instead."""
    from mujoco import mjx
    return _replaced(mjx, "forward", fn, "env.reset")


class _Forward(Exception):
    """Raised in place of `mjx.forward` to hand its argument out of a reset being traced."""

    def __init__(self, data):
        super().__init__("mjx.forward")
        self.data = data


def _forward(model, data):
    from mujoco import mjx  # imported where used, as Playground (which imports it) is
    return mjx.forward(model, data)


class _Traced:
    """`jax.jit(fn)` that keeps its own traces, one per argument types. JAX's trace caches hold
    2048 entries each, and MJX's many inner jitted functions push a large task set's dynamics
    out of them between the training chunk and the evaluation (which then traced `dmc`'s 17
    physics groups again: 90 s). Called with a kept trace, it costs one equation. The key is the
    arguments' types alone (JAX's also holds the trace context: x64, matmul precision, mesh),
    which this project never changes between traces. The traces outlive `jax.clear_caches()`:
    `_dynamics.cache_clear()` drops them."""

    def __init__(self, fn):
        self._jit, self._traces = jax.jit(fn), {}

    def __call__(self, *args):
        flat, tree = jax.tree.flatten(args)
        key = (tree, tuple(jax.typeof(x) for x in flat))
        if key not in self._traces:
            jaxpr, shapes = jax.make_jaxpr(self._jit, return_shape=True)(*args)
            self._traces[key] = jaxpr, jax.tree.structure(shapes)
        jaxpr, out_tree = self._traces[key]
        return jax.tree.unflatten(out_tree, jax.extend.core.jaxpr_as_fun(jaxpr)(*flat))


@functools.cache
def _dynamics(env):
    """`(step, forward)`: `env`'s MJX dynamics over a batch of environments (leading axis), made
    once per environment (and `load_task` makes one per task): the training chunk and the
    evaluation, and the reset and the refill, trace MJX's dynamics once between them, not once
    each (Python tracing, one core; XLA inlines the calls). The vmaps are inside the jits: a
    vmap of a jitted function traces it, then batches its whole jaxpr again once per vmap.

    The step is Playground's (`n_substeps` of `mjx.step` on the action), each `mjx.step` made of
    the same `forward` as the reset's and MJX's integrator after it: the forward dynamics, most
    of what is traced, is traced once per environment. RK4 calls the forward dynamics between
    its stages: its step is traced whole."""
    from mujoco import mjx
    from mujoco.mjx._src import forward as mjx_forward
    from mujoco.mjx._src.types import IntegratorType
    from mujoco_playground._src import mjx_env
    model, substeps = env.mjx_model, env.n_substeps
    forward = _Traced(jax.vmap(lambda data: _forward(model, data)))
    if model.opt.integrator not in (IntegratorType.EULER, IntegratorType.IMPLICITFAST):
        return _Traced(jax.vmap(lambda data, action: mjx_env.step(model, data, action, substeps))), forward

    def integrator(data):
        """`mjx.step` on data whose forward dynamics is computed."""
        with _replaced(mjx_forward, "forward", lambda model, data: data, "mjx.step"):
            return mjx_forward.step(model, data)
    integrate = _Traced(jax.vmap(integrator))

    def step(data, action):
        with _replaced(mjx, "step", lambda model, data: integrate(forward(data)), "trace of a substep"):
            return mjx_env.step(model, data, action, substeps)
    return _Traced(step), forward


def _over_rows(fn, *trees):
    """`fn` (batched over one leading axis) applied to trees with leaves `[G, B, ...]`, as one
    batch of `G * B` rows (a reshape, free in XLA)."""
    lead = jax.tree.leaves(trees[0])[0].shape[:2]
    out = fn(*jax.tree.map(lambda x: x.reshape((math.prod(lead),) + x.shape[2:]), trees))
    return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), out)


def _data_before_forward(env, key):
    """The data `env.reset(key)` passes to `mjx.forward`: its reset traced up to that call."""
    def capture(model, data):
        raise _Forward(data)
    try:
        with _forward_replaced(capture):
            env.reset(key)
    except _Forward as got:
        return got.data
    raise RuntimeError(f"{type(env).__name__}.reset calls no mjx.forward")


def _where(mask, a, b):
    """`where(mask, a, b)` leaf by leaf, `mask` broadcast over each leaf's trailing axes."""
    return jax.tree.map(lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x, y), a, b)


class MJXTaskSet:
    """`T` control-suite tasks x `E` environments each, padded to common sizes."""

    def __init__(self, task_names, num_envs: int = 1, episode_length: int = 1000, pool_size: int = 2,
                 obs_size: int | None = None, action_size: int | None = None):
        """`obs_size`, `action_size`: pad to these sizes instead of the largest task's (a
        transferred model's input and output sizes); ValueError if a task needs more."""
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.task_names = tuple(task_names)
        self.num_tasks = len(self.task_names)
        self.num_envs = num_envs
        self.episode_length = episode_length
        self.pool_size = pool_size
        self.envs = [load_task(n) for n in self.task_names]
        self.obs_dims = [observation_size(e) for e in self.envs]
        self.action_dims = [int(e.action_size) for e in self.envs]
        self.obs_size = obs_size or max(self.obs_dims)
        self.action_size = action_size or max(self.action_dims)
        for kind, sizes, padded in (("observation", self.obs_dims, self.obs_size),
                                    ("action", self.action_dims, self.action_size)):
            for name, size in zip(self.task_names, sizes):
                if size > padded:
                    raise ValueError(f"task {name} has {size} {kind} entries, more than the padded {padded}")
        self.groups: list[list[int]] = []  # task indices sharing one physics call
        for i, env in enumerate(self.envs):
            for g in self.groups:
                if _same_physics(self.envs[g[0]], env):
                    g.append(i)
                    break
            else:
                self.groups.append([i])
        self._order = np.argsort([i for g in self.groups for i in g])  # group order -> task order

    # -- helpers over the [G, ...] layout of a group -----------------------------------------
    def _reset_group(self, group, keys):
        """keys [G, *batch, 2] -> stacked States [G, *batch, ...]: each task's own reset code,
        with the `mjx.forward` every control-suite reset makes computed in one batched call for
        the group (as the step's physics): the programs hold one copy of the forward dynamics
        per physics group instead of one per task, which halves what a humanoid run compiles."""
        first = self.envs[group[0]]
        flat = keys.reshape((len(group), -1, keys.shape[-1]))  # [G, B, 2]
        before = [jax.vmap(functools.partial(_data_before_forward, self.envs[i]))(flat[k]) for k, i in enumerate(group)]
        before = jax.tree.map(lambda *xs: jnp.stack(xs), *before)
        forwarded = _over_rows(_dynamics(first)[1], before)
        states = []
        for k, i in enumerate(group):
            def task_reset(key, data, env=self.envs[i]):
                with _forward_replaced(lambda model, d: data):
                    return env.reset(key)
            s = jax.vmap(task_reset)(flat[k], jax.tree.map(lambda x: x[k], forwarded))
            states.append(jax.tree.map(lambda x: x.reshape(keys.shape[1:-1] + x.shape[1:]), s))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def _group_obs(self, group, states):
        """The group's observations `[G, E, obs_size]`, padded."""
        return jnp.stack([pad_last_axis(states.obs[k], self.obs_size) for k in range(len(group))])

    def _to_task_order(self, per_group):
        """Per-group arrays `[G, ...]` -> one `[T, ...]` array in task order."""
        return jnp.concatenate(per_group)[self._order]

    def _step_group(self, group, states, actions):
        """One batched physics call for the group, then each task's own step code."""
        first = self.envs[group[0]]
        acts = jnp.stack([task_action(actions[i], self.action_dims[i]) for i in group])  # [G, E, A]
        data_next = _over_rows(_dynamics(first)[0], states.data, acts)
        out = []
        for k, i in enumerate(group):
            def task_step(state, action, data, env=self.envs[i]):
                with _precomputed_physics(data):
                    return env.step(state, action)
            s_k = jax.tree.map(lambda x: x[k], states)
            d_k = jax.tree.map(lambda x: x[k], data_next)
            out.append(jax.vmap(task_step)(s_k, acts[k], d_k))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *out)

    def _take_from_pool(self, pool, used):
        """Pool entry `used mod P` of every environment: pool [G, P, E, ...], used [G, E]."""
        index = (used % self.pool_size)[:, None]  # [G, 1, E]

        def take(x):
            idx = index.reshape(index.shape + (1,) * (x.ndim - 3))
            return jnp.take_along_axis(x, jnp.broadcast_to(idx, x.shape[:1] + (1,) + x.shape[2:]), axis=1)[:, 0]
        return jax.tree.map(take, pool)

    # -- the functional API ------------------------------------------------------------------
    def init(self, key=None):
        """Every environment unstarted (`t = -1`; zeros in its state and observation): the next
        `refill` starts them. No physics runs here, so a program that only builds the first
        training state (its networks, its replay buffers) compiles none. `key` is unused: the
        starting `refill` draws the first episodes."""
        del key
        zeros = lambda s: jnp.zeros((len(g), self.num_envs) + s.shape, s.dtype)  # noqa: E731
        groups = []
        for g in self.groups:
            groups.append(jax.tree.map(zeros, _state_shapes(self.envs[g[0]])))
        pool = tuple(jax.tree.map(lambda x: jnp.zeros(x.shape[:1] + (self.pool_size,) + x.shape[1:], x.dtype), s)
                     for s in groups) if self.pool_size else ()
        unstarted = jnp.full((self.num_tasks, self.num_envs), -1, jnp.int32)
        obs = jnp.zeros((self.num_tasks, self.num_envs, self.obs_size), jnp.float32)
        return MJXEnvState(tuple(groups), unstarted, pool, jnp.zeros_like(unstarted)), obs

    def reset(self, key):
        """Fresh episodes for every environment (and a full pool of initial states)."""
        return self.refill(*self.init(), key)

    def refill(self, state: MJXEnvState, obs, key):
        """`(state, obs)` with the pool entries used since the last refill redrawn (the others
        stay), and the unstarted environments (`init`) started on a fresh draw, their
        observations set. Slot `i < pool_size` of every environment redraws from `keys[:, i]`,
        an episode start from `keys[:, pool_size]` (`keys`: `task_keys(key, ..., (pool_size +
        1, E))`).

        The draws run in a loop over slots, one batched reset of the step's shape `[G, E]`
        per physics group and trip: the programs then hold one copy of the reset, whose kernels
        XLA:CPU shares with the step's (a humanoid step beside a reset of its shape compiles in
        62 s of CPU, beside one of twice its batch in 84 s). The loop runs as many trips as the
        most-used environment needs: none when no episode ended (under a vmap over seeds, as
        many as the member that needs most; each environment keeps what it does not need)."""
        P = self.pool_size
        start = state.t < 0  # [T, E]
        need = jnp.where(start, P + 1, jnp.minimum(state.used, P))
        keys = task_keys(key, self.task_names, (P + 1, self.num_envs))  # [T, P + 1, E, 2]

        def slot(i, carry):
            groups, pool = carry
            new_groups, new_pool = [], []
            for k, g in enumerate(self.groups):
                idx = jnp.array(g)
                fresh = self._reset_group(g, jax.lax.dynamic_index_in_dim(keys[idx], i, 1, keepdims=False))
                if P:
                    at = jnp.minimum(i, P - 1)
                    old = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, at, 1, keepdims=False), pool[k])
                    kept = _where((i < P) & (i < need[idx]), fresh, old)
                    new_pool.append(jax.tree.map(lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, at, 1),
                                                 pool[k], kept))
                new_groups.append(_where((i == P) & start[idx], fresh, groups[k]))
            return tuple(new_groups), tuple(new_pool)

        groups, pool = jax.lax.fori_loop(0, jnp.max(need), slot, (state.groups, state.pool))
        started = self._to_task_order([self._group_obs(g, s) for g, s in zip(self.groups, groups)])
        obs = jnp.where(start[..., None], started, obs)
        return MJXEnvState(groups, jnp.maximum(state.t, 0), pool, jnp.zeros_like(state.used)), obs

    def step(self, state: MJXEnvState, action, key=None):
        """`action` [T, E, action_size] in [-1, 1] -> (new state, EnvStep). `key` is unused:
        the physics is deterministic and resets come from the pool."""
        del key
        action = jnp.clip(action, -1.0, 1.0)
        t = state.t + 1
        new_groups, used, obs, next_obs, reward, terminated = [], [], [], [], [], []
        pools = state.pool if self.pool_size else (None,) * len(self.groups)
        for g, s, pool in zip(self.groups, state.groups, pools):
            idx = jnp.array(g)
            stepped = self._step_group(g, s, action)
            final_obs = self._group_obs(g, stepped)  # [G, E, obs_size]
            ok = finite_rows(2, stepped.data.qpos, stepped.data.qvel, final_obs, stepped.reward)
            term = (stepped.done > 0.5) | ~ok
            ended = term | (t[idx] >= self.episode_length)
            reward.append(jnp.where(ok, stepped.reward, 0.0).astype(jnp.float32))
            next_obs.append(zero_non_finite(final_obs))
            if self.pool_size:
                stepped = _where(ended, self._take_from_pool(pool, state.used[idx]), stepped)
                used.append(state.used[idx] + ended.astype(jnp.int32))
            new_groups.append(stepped)
            obs.append(zero_non_finite(self._group_obs(g, stepped)))
            terminated.append(term)
        terminated = self._to_task_order(terminated)
        truncated = (t >= self.episode_length) & ~terminated
        t = jnp.where(terminated | truncated, 0, t)
        used = self._to_task_order(used) if self.pool_size else state.used
        return MJXEnvState(tuple(new_groups), t, state.pool, used), EnvStep(
            obs=self._to_task_order(obs),
            reward=self._to_task_order(reward),
            terminated=terminated,
            truncated=truncated,
            next_obs=self._to_task_order(next_obs),
        )
