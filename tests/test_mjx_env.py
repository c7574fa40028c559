import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc.envs.mjx import MJXTaskSet, resolve_tasks


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
