import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc import categorical

pytestmark = pytest.mark.numerics  # numbers only: `pytest -m numerics` selects these (on a GPU too)


def brute_force_project(tz, p, num_atoms, v_max):
    """C51 projection written as the paper's loop over atoms."""
    dz = 2 * v_max / (num_atoms - 1)
    out = np.zeros(num_atoms)
    for t, pj in zip(tz, p):
        b = (min(max(t, -v_max), v_max) + v_max) / dz
        lo, hi = math.floor(b), math.ceil(b)
        if lo == hi:
            out[lo] += pj
        else:
            out[lo] += pj * (hi - b)
            out[hi] += pj * (b - lo)
    return out


def test_projection_matches_brute_force_on_random_inputs():
    rng = np.random.default_rng(0)
    n, v_max = 101, 10.0
    z = np.linspace(-v_max, v_max, n)
    for case in range(20):
        p = rng.dirichlet(np.ones(n))
        r, gamma = rng.normal(scale=3.0), rng.uniform(0.9, 1.0)
        tz = r + gamma * z  # some atoms land outside the support
        if case % 4 == 0:
            tz = z + 0.2 * rng.integers(-3, 4)  # exact grid points: the l == u case
        got = np.asarray(categorical.project(jnp.asarray(tz, jnp.float32), jnp.asarray(p, jnp.float32), n, v_max))
        want = brute_force_project(tz.astype(np.float32), p, n, v_max)
        np.testing.assert_allclose(got, want, atol=2e-6)
        np.testing.assert_allclose(got.sum(), 1.0, atol=1e-5)  # mass conserved


def test_projection_exact_grid_point_puts_all_mass_on_that_atom():
    z = categorical.support(5, 2.0)  # [-2, -1, 0, 1, 2]
    p = jnp.array([0.1, 0.2, 0.3, 0.25, 0.15])
    np.testing.assert_allclose(categorical.project(z, p, 5, 2.0), p, atol=1e-7)
    np.testing.assert_allclose(categorical.project(z + 1.0, p, 5, 2.0), [0, 0.1, 0.2, 0.3, 0.4], atol=1e-7)


def test_projection_clips_at_support_ends():
    p = jnp.array([0.5, 0.5, 0.0])
    got = categorical.project(jnp.array([-100.0, 100.0, 0.0]), p, 3, 1.0)
    np.testing.assert_allclose(got, [0.5, 0.0, 0.5], atol=1e-7)


def test_projection_batched_and_differentiable_free():
    key = jax.random.PRNGKey(0)
    tz = jax.random.normal(key, (4, 7, 11)) * 5
    p = jax.nn.softmax(jax.random.normal(key, (4, 7, 11)))
    out = categorical.project(tz, p, 11, 3.0)
    assert out.shape == (4, 7, 11)
    for i in range(4):
        for j in range(7):
            np.testing.assert_allclose(out[i, j], brute_force_project(np.asarray(tz[i, j]), np.asarray(p[i, j]), 11, 3.0), atol=2e-6)


def test_cross_entropy_matches_manual_formula():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 101)).astype(np.float32)
    target = rng.dirichlet(np.ones(101), size=3).astype(np.float32)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -(target * log_softmax).sum(-1)
    np.testing.assert_allclose(categorical.cross_entropy(jnp.asarray(logits), jnp.asarray(target)), want, rtol=1e-5)


def test_expectation_of_support():
    z = categorical.support(101, 10.0)
    assert float(z[0]) == -10.0 and float(z[-1]) == 10.0 and abs(float(z[50])) < 1e-6
    np.testing.assert_allclose(categorical.expectation(jax.nn.one_hot(75, 101), z), 5.0, atol=1e-6)


def test_nan_target_stays_in_its_row():
    """A NaN shifted atom must not write out of bounds: other rows are exact, its row is NaN."""
    n, v_max = 11, 5.0
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(n), size=4).astype(np.float32)
    tz = rng.uniform(-7, 7, size=(4, n)).astype(np.float32)
    tz[2, 3] = np.nan
    tz[1, 0] = np.inf
    got = np.asarray(jax.jit(lambda t, q: categorical.project(t, q, n, v_max))(tz, p))
    for row in (0, 1, 3):
        np.testing.assert_allclose(got[row], brute_force_project(tz[row], p[row], n, v_max), atol=2e-6)
    assert np.isnan(got[2]).any()
