import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc import categorical
from purejaxbrc.buffer import Transition
from purejaxbrc.config import TransferConfig
from purejaxbrc.embedding import new_rows_only
from purejaxbrc.sac import SACAgent, SACConfig

pytestmark = pytest.mark.numerics  # numbers only: `pytest -m numerics` selects these (on a GPU too)


def tiny_agent(**kw):
    config = SACConfig(critic_width=16, critic_depth=1, actor_width=16, num_atoms=11, v_max=5.0, **kw)
    return SACAgent(config, obs_size=3, action_size=2, num_tasks=2)


def hp(agent):
    return agent.config.hyperparameters({})


def batch(terminated, truncated):
    n = len(terminated)
    return Transition(obs=jnp.ones((n, 3)), action=jnp.zeros((n, 2)), reward=jnp.full((n,), 1.0),
                      terminated=jnp.array(terminated), truncated=jnp.array(truncated),
                      next_obs=jnp.full((n, 3), 0.5))


def test_termination_does_not_bootstrap_truncation_does():
    agent = tiny_agent()
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    b = batch([True, False], [False, True])
    target = agent.critic_target(state, b, jnp.array([0, 1]), b.reward, jax.random.PRNGKey(1), hp(agent))
    # terminated: all mass at the reward (1.0 is an atom of linspace(-5, 5, 11))
    np.testing.assert_allclose(target[0], jax.nn.one_hot(6, 11), atol=1e-6)
    # truncated: the bootstrapped distribution, recomputed by hand
    alpha = jnp.exp(state.log_alpha)
    a, logp = state.actor.sample(agent._actor_input(state.critic, b.next_obs, jnp.array([0, 1])), jax.random.PRNGKey(1))
    probs = jnp.mean(jax.nn.softmax(state.target_critic(b.next_obs, a, jnp.array([0, 1])), -1), 0)
    shifted = 1.0 + 0.99 * (categorical.support(11, 5.0) - alpha * logp[1])
    np.testing.assert_allclose(target[1], categorical.project(shifted, probs[1], 11, 5.0), atol=1e-6)
    assert float(jnp.abs(target[1] - target[0]).sum()) > 0.1


def test_update_moves_online_critic_and_target_by_polyak():
    agent = tiny_agent(tau=0.5)
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    b = batch([False] * 4, [False] * 4)
    new, metrics = agent.update(state, b, jnp.array([0, 1, 0, 1]), jnp.array([1.0, 1.0]), jax.random.PRNGKey(2),
                                hp(agent))
    w_old = state.critic.heads.kernel
    w_new, w_tgt = new.critic.heads.kernel, new.target_critic.heads.kernel
    np.testing.assert_allclose(w_tgt, 0.5 * w_new + 0.5 * w_old, rtol=1e-6, atol=1e-7)
    assert not np.allclose(new.actor.mean_head.kernel, state.actor.mean_head.kernel)
    for k in ("critic_loss", "actor_loss", "alpha", "entropy", "q_mean"):
        assert np.isfinite(float(metrics[k]))


def test_actor_does_not_train_the_embedding():
    agent = tiny_agent()
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    x = jnp.ones((2, 3))
    grads = jax.grad(lambda c: jnp.sum(agent._actor_input(c, x, jnp.array([0, 1]))))(state.critic)
    assert float(jnp.abs(grads.embedding.table).sum()) == 0.0


def test_embedding_mode_trains_only_the_new_tasks_rows():
    """purejaxbrc.transfer's embedding mode on SAC: task 1 is new; the critic's and the target's
    trunk, heads and task 0's row stay bit for bit, task 1's rows move, the actor trains."""
    mask = new_rows_only(TransferConfig(source_tasks=("Old", "Other")).rows(("Old", "New")) < 0)
    config = SACConfig(critic_width=16, critic_depth=1, actor_width=16, num_atoms=11, v_max=5.0, tau=0.5)
    agent = SACAgent(config, obs_size=3, action_size=2, num_tasks=2, trainable=mask)
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    b = batch([False] * 4, [False] * 4)
    new = state
    for i in range(3):
        new, _ = agent.update(new, b, jnp.array([0, 1, 0, 1]), jnp.array([1.0, 1.0]), jax.random.PRNGKey(i), hp(agent))
    for name in ("critic", "target_critic"):
        before, after = getattr(state, name), getattr(new, name)
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after)):
            if "table" not in jax.tree_util.keystr(path):
                np.testing.assert_array_equal(x, y, err_msg=f"{name}{jax.tree_util.keystr(path)}")
        np.testing.assert_array_equal(before.embedding.table[0], after.embedding.table[0])
        assert not np.array_equal(before.embedding.table[1], after.embedding.table[1])
    assert not np.array_equal(state.actor.mean_head.kernel, new.actor.mean_head.kernel)
