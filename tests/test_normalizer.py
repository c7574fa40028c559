import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc import normalizer

pytestmark = pytest.mark.numerics  # numbers only: `pytest -m numerics` selects these (on a GPU too)

GAMMA = 0.99


class ReferenceNormalizer:
    """BRC.md's normaliser in plain Python, one environment per task."""

    def __init__(self, num_tasks):
        self.g_max = [0.0] * num_tasks
        self.g_min = [0.0] * num_tasks
        self.seen = [False] * num_tasks
        self.episode = [[] for _ in range(num_tasks)]

    def step(self, task, r, terminated, truncated):
        self.episode[task].append(r)
        if not (terminated or truncated):
            return
        rewards = self.episode[task]
        g = 0.0 if terminated else sum(rewards) / len(rewards) / (1 - GAMMA)
        returns = []
        for x in reversed(rewards):
            g = x + GAMMA * g
            returns.append(g)
        self.g_max[task] = max(self.g_max[task], max(returns))
        self.g_min[task] = min(self.g_min[task], min(returns))
        self.seen[task] = True
        self.episode[task] = []

    def scale(self, task, v_max, allowance):
        if not self.seen[task]:
            return 0.0
        return v_max / (max(self.g_max[task], abs(self.g_min[task])) + allowance)


def test_returns_to_go_matches_backward_recursion():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 1024)).astype(np.float32)
    want = np.zeros_like(r, dtype=np.float64)
    g = np.zeros(3)
    for t in reversed(range(1024)):
        g = r[:, t] + GAMMA * g
        want[:, t] = g
    np.testing.assert_allclose(normalizer.returns_to_go(jnp.asarray(r), GAMMA), want, rtol=1e-4, atol=1e-3)


def test_normalizer_matches_reference_on_random_episodes():
    rng = np.random.default_rng(1)
    num_tasks, max_len = 3, 40
    state = normalizer.init(num_tasks, 1, max_len)
    ref = ReferenceNormalizer(num_tasks)
    lengths = np.zeros(num_tasks, int)
    for step in range(400):
        reward = rng.normal(loc=[1.0, -2.0, 0.3], scale=1.0).astype(np.float32)
        lengths += 1
        terminated = rng.random(num_tasks) < 0.03
        truncated = (lengths >= max_len) & ~terminated
        for i in range(num_tasks):
            ref.step(i, float(reward[i]), bool(terminated[i]), bool(truncated[i]))
        lengths[terminated | truncated] = 0
        state = normalizer.update(state, jnp.asarray(reward)[:, None], jnp.asarray(terminated)[:, None],
                                  jnp.asarray(truncated)[:, None], GAMMA)
        got = normalizer.scale(state, 10.0, 0.5)
        want = [ref.scale(i, 10.0, 0.5) for i in range(num_tasks)]
        np.testing.assert_allclose(got, want, rtol=1e-4)
    assert all(ref.seen)  # both terminations and truncations happened
    np.testing.assert_allclose(state.g_max, ref.g_max, rtol=1e-4)
    np.testing.assert_allclose(state.g_min, ref.g_min, rtol=1e-4)


def test_scale_is_zero_until_first_episode_ends():
    state = normalizer.init(2, 1, 10)
    for t in range(10):
        state = normalizer.update(state, jnp.ones((2, 1)), jnp.zeros((2, 1), bool),
                                  jnp.array([[t == 9], [False]]), GAMMA)
    scale = normalizer.scale(state, 10.0, 0.0)
    assert float(scale[1]) == 0.0
    # Truncated episode of ones bootstraps with 1/(1-gamma): G_0 = 100 exactly.
    np.testing.assert_allclose(float(scale[0]), 10.0 / 100.0, rtol=1e-4)


def test_termination_does_not_bootstrap():
    state = normalizer.init(1, 1, 10)
    for t in range(3):
        state = normalizer.update(state, jnp.ones((1, 1)), jnp.array([[t == 2]]), jnp.zeros((1, 1), bool), GAMMA)
    np.testing.assert_allclose(float(state.g_max[0]), 1 + GAMMA + GAMMA ** 2, rtol=1e-6)


def test_entropy_allowance_formula():
    # BRC.md: alpha * A_max / (4 (1 - gamma)) at the target entropy -A_max / 2
    np.testing.assert_allclose(normalizer.entropy_allowance(0.1, -6 / 2, 0.99), 0.1 * 6 / (4 * 0.01))
