import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc import buffer

pytestmark = pytest.mark.numerics  # numbers only: `pytest -m numerics` selects these (on a GPU too)


def test_ring_buffer_wraps_around_and_keeps_latest():
    state = buffer.init({"x": jnp.zeros((2,), jnp.float32), "k": jnp.int32(0)}, num_tasks=2, capacity=5)
    for step in range(7):  # 7 x 2 envs = 14 items into capacity 5
        items = {"x": jnp.full((2, 2, 2), step, jnp.float32),
                 "k": jnp.array([[10 * step, 10 * step + 1]] * 2, jnp.int32)}
        state = buffer.add(state, items)
    assert int(state.size) == 5 and int(state.ptr) == 14 % 5
    # the last 5 items were k = 51, 60, 61 (steps 5..6) and 40, 41 ... in write order
    written = [10 * s + e for s in range(7) for e in range(2)]
    expect = np.zeros(5, int)
    for pos, k in enumerate(written):
        expect[pos % 5] = k
    np.testing.assert_array_equal(state.data["k"][0], expect)
    np.testing.assert_array_equal(state.data["k"][1], expect)
    assert state.data["k"].dtype == jnp.int32


def test_sample_only_returns_filled_positions_and_covers_tasks():
    state = buffer.init(jnp.float32(0), num_tasks=3, capacity=100)
    for step in range(4):
        state = buffer.add(state, jnp.full((3, 1), 1.0 + step) + jnp.arange(3.0)[:, None] * 10)
    items, tasks = buffer.sample(state, jax.random.PRNGKey(0), 3000)
    items, tasks = np.asarray(items), np.asarray(tasks)
    assert set(np.unique(tasks)) == {0, 1, 2}
    # every sample is one of the 4 written values of its own task, never an empty slot
    np.testing.assert_array_equal(np.isin(items - tasks * 10, [1, 2, 3, 4]), True)
    counts = np.bincount(tasks, minlength=3) / 3000
    np.testing.assert_allclose(counts, 1 / 3, atol=0.04)  # uniform over the union


def test_insert_under_jit_with_donation():
    state = buffer.init(jnp.zeros((3,)), 1, 4)
    add = jax.jit(buffer.add, donate_argnums=0)
    for i in range(6):
        state = add(state, jnp.full((1, 1, 3), float(i)))
    np.testing.assert_array_equal(state.data[0, :, 0], [4, 5, 2, 3])
