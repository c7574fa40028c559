import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc.envs.mjx import MJXTaskSet, observation_size, pool_size_for, resolve_tasks

pytestmark = pytest.mark.numerics  # numbers only: `pytest -m numerics` selects these (on a GPU too)


@pytest.fixture(scope="module")
def taskset():
    # Balance and Swingup share one model (one physics group); Pendulum is its own group.
    return MJXTaskSet(["CartpoleBalance", "PendulumSwingup", "CartpoleSwingup"], num_envs=2, episode_length=4)


def test_groups_and_padding(taskset):
    assert taskset.groups == [[0, 2], [1]]
    assert taskset.obs_size == 5 and taskset.action_size == 1
    _, obs = jax.jit(taskset.reset)(jax.random.PRNGKey(0))
    assert obs.shape == (3, 2, 5)
    assert float(jnp.abs(obs[1, :, 3:]).sum()) == 0.0  # pendulum obs (3) padded with zeros
    # The sizes come from each task's cached reset shapes, not Playground's property, which
    # traces a reset on every access; they must agree.
    assert [observation_size(e) for e in taskset.envs] == [e.observation_size for e in taskset.envs] == [5, 3, 5]


@pytest.mark.parametrize("name", ["CartpoleBalance", "PendulumSwingup", "CheetahRun", "FingerSpin"])
def test_state_shapes_leave_out_the_forward_and_equal_a_full_resets(name):
    """A task's State shapes are traced without the reset's `mjx.forward` (it fills in fields of
    the data, never changes their shapes or dtypes); they equal those of the whole reset."""
    from purejaxbrc.envs.mjx import _state_shapes, load_task
    env = load_task(name)
    got, want = _state_shapes(env), jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(got)] == \
        [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(want)]


def test_batched_physics_equals_each_tasks_own_step(taskset):
    state, _ = jax.jit(taskset.reset)(jax.random.PRNGKey(1))
    action = jax.random.uniform(jax.random.PRNGKey(2), (3, 2, 1), minval=-1, maxval=1)
    _, step = jax.jit(taskset.step)(state, action, jax.random.PRNGKey(3))
    for g, group_state in zip(taskset.groups, state.groups):
        for k, i in enumerate(g):
            env = taskset.envs[i]
            own = jax.jit(jax.vmap(env.step))(jax.tree.map(lambda x: x[k], group_state), action[i])
            np.testing.assert_allclose(step.reward[i], own.reward, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(step.next_obs[i, :, : own.obs.shape[-1]], own.obs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["PendulumSwingup", "CheetahRun", "FingerSpin"])
def test_dynamics_step_equals_playgrounds_step(name):
    """The batched step, rebuilt from the reset's forward and MJX's integrator after it (Euler
    with 2 substeps; Euler with contacts; implicit-fast with 4 substeps), gives Playground's
    `mjx_env.step` field for field; the reset's forward and the step's share one kept trace."""
    from mujoco_playground._src import mjx_env

    from purejaxbrc.envs.mjx import _dynamics, load_task
    env = load_task(name)
    step, forward = _dynamics(env)
    data = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 3)).data
    action = jax.random.uniform(jax.random.PRNGKey(1), (3, env.action_size), minval=-1, maxval=1)
    jax.jit(forward)(data)
    kept = len(forward._traces)
    got = jax.jit(step)(data, action)
    assert len(forward._traces) == kept  # the step's forward is the one just traced
    want = jax.jit(jax.vmap(lambda d, a: mjx_env.step(env.mjx_model, d, a, env.n_substeps)))(data, action)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got)):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6, err_msg=f"{name}{jax.tree_util.keystr(path)}")


def _inner_jaxprs(jaxpr):
    """Every closed jaxpr inside `jaxpr`'s equations (jit, scan and loop bodies), recursively."""
    from jax.extend.core import ClosedJaxpr, Jaxpr
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, ClosedJaxpr):
                    yield sub
                    yield from _inner_jaxprs(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    yield from _inner_jaxprs(sub)


def test_the_step_reuses_the_traces_of_the_reset(taskset):
    """Each group's step calls the very forward dynamics the reset traced and kept, and traces
    no other (a dtype or weak-type mismatch between the reset's data and the carried state
    would trace MJX's forward dynamics again, once per program)."""
    from purejaxbrc.envs.mjx import _dynamics
    state, _ = jax.jit(taskset.reset)(jax.random.PRNGKey(7))
    forwards = [_dynamics(taskset.envs[g[0]])[1] for g in taskset.groups]
    kept = [set(f._traces) for f in forwards]
    step = jax.make_jaxpr(taskset.step)(state, jnp.zeros((3, 2, 1)), jax.random.PRNGKey(8))
    assert [set(f._traces) for f in forwards] == kept
    called = {id(j) for j in _inner_jaxprs(step.jaxpr)}
    for f in forwards:
        assert any(id(jaxpr.eqns[0].params["jaxpr"]) in called for jaxpr, _ in f._traces.values())


def test_a_groups_reset_equals_each_tasks_own_reset(taskset):
    """One batched mjx.forward for a physics group, each task's own reset code around it:
    every field of every task's initial states is bit for bit what the task's own reset gives
    (Balance starts upright, Swingup hanging: the group's tasks differ in their randomness)."""
    from purejaxbrc.envs.base import task_keys
    keys = task_keys(jax.random.PRNGKey(5), taskset.task_names, (3, 2))
    for g in taskset.groups:
        group = jax.jit(lambda k, g=g: taskset._reset_group(g, k))(keys[jnp.array(g)])
        for k, i in enumerate(g):
            own = jax.jit(jax.vmap(taskset.envs[i].reset))(keys[i].reshape(-1, 2))
            for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(own)[0], jax.tree.leaves(group)):
                np.testing.assert_array_equal(np.asarray(y)[k].reshape(np.shape(x)), x,
                                              err_msg=f"{taskset.task_names[i]}{jax.tree_util.keystr(path)}")


def test_time_limit_truncates_and_auto_reset_keeps_final_observation(taskset):
    state, obs = jax.jit(taskset.reset)(jax.random.PRNGKey(4))
    step_fn = jax.jit(taskset.step)
    action = jnp.ones((3, 2, 1))
    for t in range(1, 5):
        prev_obs = obs
        state, step = step_fn(state, action, jax.random.PRNGKey(10 + t))
        obs = step.obs
        assert not bool(step.terminated.any())
        if t < 4:
            assert not bool(step.truncated.any())
            np.testing.assert_array_equal(step.obs, step.next_obs)  # mid-episode: the same
    assert bool(step.truncated.all())
    np.testing.assert_array_equal(state.t, 0)
    # the final observation follows from the last state, the new one is a fresh reset
    assert not np.allclose(step.next_obs, step.obs)
    _, fresh = jax.jit(taskset.reset)(jax.random.PRNGKey(99))
    assert np.abs(np.asarray(step.obs[0, :, 2:])).max() < 0.1  # cartpole resets near rest
    assert np.abs(np.asarray(step.next_obs) - np.asarray(prev_obs)).max() > 0  # physics moved


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: .*humanoids.*CartpoleBalance"):
        resolve_tasks("CartpoleBalanse")
    assert resolve_tasks("humanoids") == ("HumanoidStand", "HumanoidWalk", "HumanoidRun")
    assert len(resolve_tasks("dmc")) == 25


# -- auto-reset from the pool of initial states ---------------------------------------------------
def test_step_never_calls_reset(taskset, monkeypatch):
    """A reset can cost a hundred steps (CheetahRun): the step takes pooled initial states."""
    state, _ = jax.jit(taskset.reset)(jax.random.PRNGKey(0))
    for env in taskset.envs:
        monkeypatch.setattr(env, "reset", lambda key: pytest.fail("env.step called env.reset"))
    jax.make_jaxpr(lambda s, a: taskset.step(s, a))(state, jnp.zeros((3, 2, 1)))


def run_steps(taskset, state, n):
    step = jax.jit(taskset.step)
    steps = []
    for _ in range(n):
        state, out = step(state, jnp.full((3, 2, 1), 0.3))
        steps.append(out)
    return state, steps


def pool_obs(taskset, state, entry):
    """Padded observations `[T, E, obs]` of pool entry `entry` of every environment."""
    per_group = [taskset._group_obs(g, jax.tree.map(lambda x: x[:, entry], p))
                 for g, p in zip(taskset.groups, state.pool)]
    return np.asarray(taskset._to_task_order(per_group))


def test_ended_episodes_take_the_pool_in_order_and_refill_redraws_only_those(taskset):
    state, _ = jax.jit(taskset.reset)(jax.random.PRNGKey(5))
    assert taskset.pool_size == 2
    first, second = pool_obs(taskset, state, 0), pool_obs(taskset, state, 1)
    state, steps = run_steps(taskset, state, 4)  # every episode ends at the time limit
    np.testing.assert_array_equal(steps[-1].obs, first)
    np.testing.assert_array_equal(state.used, 1)
    refilled, obs = jax.jit(taskset.refill)(state, steps[-1].obs, jax.random.PRNGKey(6))
    np.testing.assert_array_equal(obs, steps[-1].obs)  # started environments keep theirs
    np.testing.assert_array_equal(refilled.used, 0)
    np.testing.assert_array_equal(pool_obs(taskset, refilled, 1), second)  # unused: kept
    assert (np.abs(pool_obs(taskset, refilled, 0) - first).max(-1) > 0).all()  # used: redrawn
    # Without a refill the pool is used up after two episodes; the third reuses entry 0.
    state, steps = run_steps(taskset, state, 8)
    np.testing.assert_array_equal(steps[3].obs, second)
    np.testing.assert_array_equal(steps[7].obs, first)


def test_episode_starts_are_independent_draws_of_env_reset():
    """Starts collected through the pool are distributed as `env.reset` draws (two-sample KS
    test per observation entry) and never repeat."""
    from scipy.stats import ks_2samp
    names = ["PendulumSwingup", "CartpoleSwingup"]
    envs = MJXTaskSet(names, num_envs=16, episode_length=2, pool_size=pool_size_for(4, 2))
    step, refill = jax.jit(envs.step), jax.jit(envs.refill)
    state, obs = envs.init()
    starts = None
    for c in range(8):  # chunks of 4 steps: two episode ends per environment each
        state, obs = refill(state, obs, jax.random.PRNGKey(100 + c))
        if starts is None:
            starts = [[np.asarray(obs[i])] for i in range(len(names))]  # the first episodes
        for _ in range(4):
            state, out = step(state, jax.random.uniform(jax.random.PRNGKey(c), (2, 16, 1), minval=-1))
            for i in range(len(names)):
                starts[i].append(np.asarray(out.obs[i])[np.asarray(out.truncated[i])])
    for i, env in enumerate(envs.envs):
        got = np.concatenate(starts[i])[:, :envs.obs_dims[i]]
        assert len(got) == (1 + 8 * 2) * 16
        assert len(np.unique(got, axis=0)) == len(got)  # no initial state used twice
        direct = np.asarray(jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(7), 512)).obs)
        for d in range(got.shape[1]):
            if np.ptp(direct[:, d]) > 0:
                assert ks_2samp(got[:, d], direct[:, d]).pvalue > 1e-3, (names[i], d)
            else:
                np.testing.assert_array_equal(got[:, d], direct[0, d])


def test_diverged_physics_terminates_the_episode_and_reports_only_finite_values(taskset):
    state, _ = jax.jit(taskset.reset)(jax.random.PRNGKey(8))
    fresh = pool_obs(taskset, state, 0)
    group = state.groups[0]  # CartpoleBalance and CartpoleSwingup: tasks 0 and 2
    bad = group.replace(data=group.data.replace(qvel=group.data.qvel.at[0, 1, 0].set(jnp.inf)))
    state = state._replace(groups=(bad,) + state.groups[1:])
    state, (out,) = run_steps(taskset, state, 1)
    expected = np.zeros((3, 2), bool)
    expected[0, 1] = True
    np.testing.assert_array_equal(out.terminated, expected)
    assert not bool(out.truncated.any())
    for x in (out.obs, out.next_obs, out.reward):
        assert np.isfinite(np.asarray(x)).all()
    assert float(out.reward[0, 1]) == 0.0
    np.testing.assert_array_equal(out.obs[0, 1], fresh[0, 1])  # a fresh episode from the pool
    assert np.isfinite(np.asarray(state.groups[0].data.qvel)).all()
    np.testing.assert_array_equal(state.t, np.where(expected, 0, 1))


def test_init_holds_no_physics_and_the_first_refill_starts_every_environment(taskset, monkeypatch):
    """`init` traces no reset (a program building the first training state compiles no physics);
    the first refill draws the pool from slots `0..P-1` of its keys and the episodes from slot P."""
    from purejaxbrc.envs.base import task_keys
    for env in taskset.envs:
        monkeypatch.setattr(env, "reset", lambda key: pytest.fail("init called env.reset"))
    state, obs = jax.jit(taskset.init)()
    monkeypatch.undo()
    np.testing.assert_array_equal(state.t, -1)
    np.testing.assert_array_equal(obs, 0)
    key = jax.random.PRNGKey(3)
    started, obs = jax.jit(taskset.refill)(state, obs, key)
    np.testing.assert_array_equal(started.t, 0)
    np.testing.assert_array_equal(started.used, 0)
    P = taskset.pool_size
    keys = task_keys(key, taskset.task_names, (P + 1, taskset.num_envs))
    for k, (g, pool, current) in enumerate(zip(taskset.groups, started.pool, started.groups)):
        for slot in range(P + 1):
            direct = jax.jit(taskset._reset_group, static_argnums=0)(tuple(g), keys[jnp.array(g), slot])
            got = current if slot == P else jax.tree.map(lambda x: x[:, slot], pool)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(direct)):
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(obs, taskset._to_task_order(
        [taskset._group_obs(g, s) for g, s in zip(taskset.groups, started.groups)]))
    # Nothing used, everything started: a refill changes nothing.
    again, obs_again = jax.jit(taskset.refill)(started, obs, jax.random.PRNGKey(4))
    for a, b in zip(jax.tree.leaves((again, obs_again)), jax.tree.leaves((started, obs))):
        np.testing.assert_array_equal(a, b)


def test_refill_of_members_that_need_different_draws_equals_each_alone(taskset):
    """Under a vmap over members the loop runs as many trips as the neediest member: one
    unstarted, one past its pool (3 episodes ended, pool of 2: every slot redrawn) with one
    environment unstarted among started ones, one that used nothing (unchanged)."""
    fresh, fresh_obs = jax.jit(taskset.reset)(jax.random.PRNGKey(5))
    worn, steps = run_steps(taskset, fresh, 12)
    np.testing.assert_array_equal(worn.used, 3)
    worn = worn._replace(t=worn.t.at[2, 1].set(-1))  # CartpoleSwingup's second environment
    members = [taskset.init(), (worn, steps[-1].obs), (fresh, fresh_obs)]
    keys = jax.random.split(jax.random.PRNGKey(9), len(members))
    together = jax.jit(jax.vmap(taskset.refill))(*jax.tree.map(lambda *xs: jnp.stack(xs), *members), keys)
    refill = jax.jit(taskset.refill)
    alone = [refill(state, obs, k) for (state, obs), k in zip(members, keys)]
    for m, one in enumerate(alone):
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(together)):
            np.testing.assert_allclose(b[m], a, rtol=1e-5, atol=1e-6)  # vmapped solvers round differently
    (worn_state, worn_obs), (kept, kept_obs) = alone[1], alone[2]
    for slot in range(taskset.pool_size):  # every slot of the worn state was redrawn
        assert (np.abs(pool_obs(taskset, worn_state, slot) - pool_obs(taskset, worn, slot)).max(-1) > 0).all()
    restarted = np.zeros((3, 2), bool)
    restarted[2, 1] = True
    np.testing.assert_array_equal(worn_obs[~restarted], steps[-1].obs[~restarted])
    assert np.abs(np.asarray(worn_obs[2, 1] - steps[-1].obs[2, 1])).max() > 0
    np.testing.assert_array_equal(worn_state.t, np.where(restarted, 0, worn.t))
    for a, b in zip(jax.tree.leaves((kept, kept_obs)), jax.tree.leaves((fresh, fresh_obs))):
        np.testing.assert_array_equal(a, b)
