"""Discrete BRC: the gymnax adapter, the categorical double-Q agent and brc_minatar.py."""

import dataclasses
import json
import sys
from pathlib import Path

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_minatar  # noqa: E402
from purejaxbrc import normalizer  # noqa: E402
from purejaxbrc import program as programs  # noqa: E402
from purejaxbrc.buffer import Transition  # noqa: E402
from purejaxbrc.config import Experiment, RunConfig  # noqa: E402
from purejaxbrc.dqn import DQNAgent, DQNConfig, linear_epsilon  # noqa: E402
from purejaxbrc.envs.gymnax import GymnaxTaskSet, resolve_tasks  # noqa: E402
from purejaxbrc.program import Program, make_population  # noqa: E402

V_MAX, ATOMS, GAMMA = 10.0, 11, 0.9


def tiny_agent(obs_shape, action_counts, **kw):
    config = DQNConfig(critic_width=8, critic_depth=1, conv_channels=(3,), num_atoms=ATOMS,
                       v_max=V_MAX, embed_dim=4, gamma=GAMMA, **kw)
    return DQNAgent(config, obs_shape=obs_shape, action_counts=action_counts, num_tasks=len(action_counts))


def hp(agent):
    return agent.config.hyperparameters({})


def with_head_bias(net, actions, num_atoms):
    """Push the online head so that `actions` have the highest expected value for every input."""
    bias = net.head.bias.reshape(net.num_actions, num_atoms).at[jnp.asarray(actions), -1].set(30.0)
    return eqx.tree_at(lambda n: n.head.bias, net, bias.reshape(-1))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_target(state, agent, batch, task_ids, reward):
    """The double-Q C51 target in plain numpy, from the two networks' raw logits."""
    z = np.linspace(-V_MAX, V_MAX, ATOMS)
    online = softmax(np.asarray(state.net(batch.next_obs, task_ids), np.float64))
    target = softmax(np.asarray(state.target_net(batch.next_obs, task_ids), np.float64))
    counts = np.asarray(agent.action_counts)[np.asarray(task_ids)]
    q = online @ z
    q[np.arange(q.shape[1])[None, :] >= counts[:, None]] = -np.inf
    out = np.zeros((len(q), ATOMS))
    dz = 2 * V_MAX / (ATOMS - 1)
    for i, a in enumerate(q.argmax(1)):
        p = target[i, a]
        discount = 0.0 if batch.terminated[i] else GAMMA
        tz = np.clip(float(reward[i]) + discount * z, -V_MAX, V_MAX)
        b = (tz + V_MAX) / dz
        for j in range(ATOMS):
            lo, hi = int(np.floor(b[j])), int(np.ceil(b[j]))
            if lo == hi:
                out[i, lo] += p[j]
            else:
                out[i, lo] += p[j] * (hi - b[j])
                out[i, hi] += p[j] * (b[j] - lo)
    return out


# -- the adapter ---------------------------------------------------------------------------------
def test_channel_padding_and_dtypes():
    env = GymnaxTaskSet(["Breakout-MinAtar", "Seaquest-MinAtar"], num_envs=3)
    assert env.obs_shape == (10, 10, 10) and env.action_counts == (3, 6) and env.action_size == 6
    assert env.episode_length == 1000 and env.obs_dtype == jnp.uint8
    key = jax.random.PRNGKey(0)
    _, obs = jax.jit(env.reset)(key)
    assert obs.shape == (2, 3, 10, 10, 10) and obs.dtype == jnp.uint8
    keys = env.task_keys(key)  # [T, E, 2], per-task keys from the task names
    raw, _ = jax.vmap(env.envs[0].reset, in_axes=(0, None))(keys[0], env.params[0])
    np.testing.assert_array_equal(obs[0, ..., :4], np.asarray(raw))  # Breakout's own channels
    assert not obs[0, ..., 4:].any() and obs[0, ..., :4].any()  # padded channels are zero
    raw, _ = jax.vmap(env.envs[1].reset, in_axes=(0, None))(keys[1], env.params[1])
    np.testing.assert_array_equal(obs[1], np.asarray(raw))

    assert GymnaxTaskSet(["Catch-bsuite"]).obs_shape == (10, 5, 1)  # a 2-D grid gains a channel
    vec = GymnaxTaskSet(["CartPole-v1", "MemoryChain-bsuite"], num_envs=2)
    assert vec.obs_shape == (4,) and vec.obs_dtype == jnp.float32 and vec.action_counts == (2, 2)
    _, obs = vec.reset(key)
    assert obs.shape == (2, 2, 4) and not obs[1, :, 3].any()
    assert resolve_tasks("minatar") == ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
                                        "SpaceInvaders-MinAtar", "Seaquest-MinAtar")
    assert GymnaxTaskSet(resolve_tasks("minatar")).episode_length == 2500  # Freeway's limit


@pytest.mark.parametrize("spec, message", [
    ("Pendulum-v1", "only discrete actions"),
    ("Breakout-Minatar", "unknown task 'Breakout-Minatar'"),
    ("CartPole-v1,Breakout-MinAtar", "cannot mix vector and image"),
    ("Pong-misc,Breakout-MinAtar", "images of different sizes"),
    ("Breakout-MinAtar,minatar", "task listed twice"),
])
def test_bad_tasks_raise_one_line_value_error(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        resolve_tasks(spec)
    assert "\n" not in str(e.value)


def replay(env, key, actions):
    """Step the adapter and, alongside, the raw gymnax envs with the same keys."""
    k_reset, k_steps = jax.random.split(key)
    state, _ = env.reset(k_reset)
    raw = list(state)
    step = jax.jit(env.step)
    out = []
    for t, k in enumerate(jax.random.split(k_steps, len(actions))):
        state, s = step(state, actions[t], k)
        keys = env.task_keys(k)
        o, raw[0], r, term, trunc, info = jax.vmap(env.envs[0].step, in_axes=(0, 0, 0, None))(
            keys[0], raw[0], actions[t][0], env.params[0])
        same = lambda x, y: np.testing.assert_allclose(x, np.asarray(y), rtol=1e-6, atol=1e-7)
        same(s.obs[0], env._obs(0, o))  # jit and eager physics differ in the last bit at most
        same(s.next_obs[0], env._obs(0, info["final_observation"]))
        same(s.reward[0], r)
        out.append(s)
    return out


def test_terminated_vs_truncated_bootstrapping():
    # Catch always terminates on its 9th step (the ball reaches the bottom row).
    catch = GymnaxTaskSet(["Catch-bsuite"], num_envs=4)
    steps = replay(catch, jax.random.PRNGKey(1), jnp.ones((9, 1, 4), jnp.int32))
    assert not any(s.terminated.any() or s.truncated.any() for s in steps[:-1])
    assert steps[-1].terminated.all() and not steps[-1].truncated.any()
    end = steps[-1]
    assert not end.next_obs[0, :, 0].any()  # the final frame: the ball has left the top row ...
    assert end.obs[0, :, 0].any(axis=(1, 2)).all()  # ... the new episode's frame has it there

    # CartPole truncated at 5 steps: no random policy topples the pole that fast.
    cart = GymnaxTaskSet(["CartPole-v1"], num_envs=4, max_episode_steps=5)
    steps = replay(cart, jax.random.PRNGKey(2), jnp.zeros((5, 1, 4), jnp.int32))
    end = steps[-1]
    assert end.truncated.all() and not end.terminated.any()
    assert not any(s.truncated.any() for s in steps[:-1])
    assert (end.next_obs != end.obs).any()  # the final observation, not the reset one

    # The agent: a terminated step puts all target mass on r; a truncated one bootstraps from
    # gymnax's final observation (the adapter's next_obs), not from the new episode's first one.
    agent = tiny_agent(cart.obs_shape, cart.action_counts)
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    n, tids, reward = cart.num_envs, jnp.zeros(cart.num_envs, jnp.int32), jnp.full(cart.num_envs, 0.5)

    def target(terminated, next_obs):
        batch = Transition(obs=steps[-2].obs[0], action=jnp.zeros(n, jnp.int32), reward=reward,
                           terminated=jnp.full(n, terminated), truncated=jnp.full(n, not terminated),
                           next_obs=next_obs)
        got = agent.target_distribution(state, batch, tids, reward, hp(agent))
        np.testing.assert_allclose(got, reference_target(state, agent, batch, tids, reward),
                                   rtol=1e-5, atol=1e-6)
        return np.asarray(got)

    z = np.linspace(-V_MAX, V_MAX, ATOMS)
    np.testing.assert_allclose(target(True, end.next_obs[0]) @ z, 0.5, atol=1e-5)
    truncated = target(False, end.next_obs[0])
    assert np.abs(truncated @ z - 0.5).max() > 1e-3  # bootstrapped: not the reward alone
    assert not np.allclose(truncated, target(False, end.obs[0]), atol=1e-6)


# -- the agent -----------------------------------------------------------------------------------
def test_masking_never_picks_a_padded_action():
    counts = (2, 5, 3)
    agent = tiny_agent((6, 6, 2), counts)
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    state = state._replace(net=with_head_bias(state.net, [2, 3, 4], ATOMS))  # padded look best
    n = 200
    tids = jnp.repeat(jnp.arange(3, dtype=jnp.int32), n)
    obs = jax.random.uniform(jax.random.PRNGKey(1), (3 * n, 6, 6, 2))
    limit = np.asarray(counts)[np.asarray(tids)]

    greedy = np.asarray(jax.jit(agent.greedy)(state, obs, tids, hp(agent)))
    assert (greedy < limit).all()
    # The favoured actions win wherever they exist: all of 2-4 in task 1, only 2 in task 2.
    assert set(greedy[tids == 1]) <= {2, 3, 4} and (greedy[tids == 2] == 2).all()

    grid = jnp.broadcast_to(jnp.arange(3, dtype=jnp.int32)[:, None], (3, 2000))
    rand = np.asarray(agent.random_action(jax.random.PRNGKey(2), grid))
    assert rand.shape == (3, 2000) and rand.dtype == np.int32
    for t, c in enumerate(counts):
        assert set(rand[t]) == set(range(c))  # every valid action, nothing beyond

    explore = jax.jit(agent.explore)
    for it in (0, 10_000_000):  # epsilon 1 (all random) and epsilon at its floor
        act = np.asarray(explore(state, obs, tids, jax.random.PRNGKey(3), it, hp(agent)))
        assert (act < limit).all()
    assert float(linear_epsilon(0, 1.0, 0.05, 10_000)) == 1.0
    assert float(linear_epsilon(10 ** 7, 1.0, 0.05, 10_000)) == pytest.approx(0.05)
    assert float(linear_epsilon(5_000, 1.0, 0.05, 10_000)) == pytest.approx(0.525)


def test_double_q_target_and_loss_match_numpy():
    counts = (2, 3)
    agent = tiny_agent((5, 5, 2), counts)
    state = agent.init(jax.random.PRNGKey(0), hp(agent))
    other = agent.init(jax.random.PRNGKey(1), hp(agent)).net
    # A different target network (so double Q differs from plain Q), and an online network that
    # rates task 0's padded action 2 highest (so the mask matters).
    state = state._replace(net=with_head_bias(state.net, [2], ATOMS), target_net=other)
    k = jax.random.split(jax.random.PRNGKey(2), 4)
    b = 8
    tids = jnp.array([0, 1, 0, 1, 1, 0, 1, 0], jnp.int32)
    batch = Transition(
        obs=jax.random.bernoulli(k[0], 0.3, (b, 5, 5, 2)).astype(jnp.uint8),
        action=jax.random.randint(k[1], (b,), 0, 2, jnp.int32),
        reward=jax.random.normal(k[2], (b,)) * 3.0,
        terminated=jnp.array([0, 0, 1, 0, 1, 0, 0, 0], bool),
        truncated=jnp.array([0, 1, 0, 0, 0, 0, 1, 0], bool),
        next_obs=jax.random.bernoulli(k[3], 0.3, (b, 5, 5, 2)).astype(jnp.uint8))
    scale = jnp.array([0.7, 2.0])
    reward = batch.reward * scale[tids]
    expected = reference_target(state, agent, batch, tids, np.asarray(reward))
    got = jax.jit(agent.target_distribution)(state, batch, tids, reward, hp(agent))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, rtol=1e-5)

    new, metrics = jax.jit(agent.update)(state, batch, tids, scale, jax.random.PRNGKey(3), hp(agent))
    logits = np.asarray(state.net(batch.obs, tids), np.float64)[np.arange(b), np.asarray(batch.action)]
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    np.testing.assert_allclose(metrics["critic_loss"], np.mean(-(expected * log_p).sum(-1)), rtol=1e-5)
    norm = normalizer.NormalizerState(g_max=jnp.float32([4.0]), g_min=jnp.float32([-2.0]), seen=jnp.bool_([True]),
                                      rewards=None, length=None, reward_sum=None)
    assert float(agent.reward_scale(state, norm, hp(agent))[0]) == V_MAX / 4.0  # no entropy allowance
    # Polyak: the new target is tau of the way from the old target to the new online network.
    for t_new, t_old, o_new in zip(jax.tree.leaves(new.target_net), jax.tree.leaves(other),
                                   jax.tree.leaves(new.net)):
        np.testing.assert_allclose(t_new, 0.995 * t_old + 0.005 * o_new, rtol=1e-5, atol=1e-7)


# -- the training program and the script ---------------------------------------------------------
TINY = Experiment(
    RunConfig(tasks="Breakout-MinAtar", num_envs=4, total_iterations=40, warmup_iterations=20,
              eval_every=20, eval_episodes=2, batch_size=16, utd=2, chunk_iterations=10, run_dir="unused"),
    DQNConfig(critic_width=16, critic_depth=1, num_atoms=11, embed_dim=4, eps_decay=30, conv_channels=(4,)))


def test_population_equals_separate_runs():
    """Two seeds in one vmapped program equal each seed run alone (the one-member program)."""
    exp = TINY.replace(tasks="Breakout-MinAtar,Asterix-MinAtar", run_dir="/nonexistent/unused")
    built = programs.build(programs.plan("minatar", exp))
    exp, trainer = built.plan.experiment, built.trainer

    def run_chunks(num_seeds, seed):
        program = Program(trainer, make_population(dataclasses.replace(exp.run, num_seeds=num_seeds, seed=seed)))
        state = program.fresh_state()
        chunk = program.compile_chunk(state)
        for it in range(0, 40, 10):  # two warm-up chunks, two learning chunks
            state, metrics, _ = chunk(state, jnp.int32(it), jnp.int32(20))
        return state, metrics

    both, metrics = run_chunks(2, 5)
    assert np.all(np.asarray(metrics["critic_loss"]) > 0)  # learning chunks ran
    for i in range(2):
        single, _ = run_chunks(1, 5 + i)
        for x, y in zip(jax.tree.leaves(both), jax.tree.leaves(single)):
            np.testing.assert_allclose(x[i], y[0], rtol=1e-6, atol=1e-6)


def test_script_smoke_run_writes_metrics_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    summary, _ = brc_minatar.main(TINY.replace(run_dir=str(run_dir)))
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2  # evaluations x seeds x tasks
    assert {"iteration", "env_steps", "seed", "variant", "hparams", "task", "eval_return", "wall_s",
            "critic_loss", "q_mean"} <= set(rows[0])
    assert [r["env_steps"] for r in rows] == [20 * 4, 40 * 4]  # iterations x envs per task
    assert all(r["task"] == "Breakout-MinAtar" and np.isfinite(r["eval_return"]) for r in rows)
    stored = json.loads((run_dir / "summary.json").read_text())
    assert {"iteration", "env_steps", "seeds", "final_eval_return", "mean_eval_return", "variants",
            "wall_s", "compile_s"} <= set(stored)
    assert set(stored["final_eval_return"]) == {"Breakout-MinAtar"} and stored == summary
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"]["eps_decay"] == 30 and config["agent"]["conv_channels"] == [4]
    assert "actor_width" not in config["agent"] and config["variants"] == [{}]


@pytest.mark.parametrize("change, message", [
    (dict(eps_start=1.5), "--eps-start must be in [0, 1]"),
    (dict(eps_end=-0.1), "--eps-end must be in [0, 1]"),
    (dict(num_envs=0), "--num-envs must be > 0"),
    (dict(conv_channels=(16, 0)), "--conv-channels must all be > 0"),
    (dict(tasks="Breakout"), "unknown task 'Breakout'"),
    (dict(tasks="Pendulum-v1"), "only discrete actions"),
    (dict(episode_length=500), "--episode-length applies to MJX tasks"),
])
def test_bad_config_exits_2_before_compiling(tmp_path, capsys, change, message):
    cfg = TINY.replace(run_dir=str(tmp_path / "r"), **change)
    with pytest.raises(SystemExit) as e:
        brc_minatar.main(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "r").exists()
