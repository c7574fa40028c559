"""purejaxbrc.lapack: batched LAPACK calls stay inline on CPU, with the same results."""

import contextlib
import math
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

import purejaxbrc  # noqa: F401  (installs the batching rules)
from purejaxbrc import lapack
from purejaxbrc.envs.mjx import MJXTaskSet
from purejaxbrc.lapack import INLINE_WORK


def factorise(a):
    """What MJX's solver and orthogonal init ask of LAPACK: Cholesky, triangular solves, QR,
    the Householder product (orgqr)."""
    spd = a @ a.T + a.shape[-1] * jnp.eye(a.shape[-1])
    chol = jnp.linalg.cholesky(spd)
    left = jax.scipy.linalg.solve_triangular(chol, spd, lower=True)
    right = jax.lax.linalg.triangular_solve(chol, spd[:3], left_side=False, lower=True)
    q, r = jnp.linalg.qr(a)
    product = jax.lax.linalg.householder_product(a, jnp.full(a.shape[-1:], 1.5, a.dtype))
    return chol, left, right, q, r, product


def matrices(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


@contextlib.contextmanager
def stock_rules():
    """JAX's own batching rules, and no traces cached under ours, for the duration (the task
    sets keep their MJX traces past `jax.clear_caches()`)."""
    from purejaxbrc.envs.mjx import _dynamics
    lapack.uninstall()
    jax.clear_caches()
    _dynamics.cache_clear()
    try:
        yield
    finally:
        lapack.install()
        jax.clear_caches()
        _dynamics.cache_clear()


def test_vmapped_calls_equal_one_matrix_at_a_time():
    a = matrices((3, 5, 48, 48))  # 15 matrices: more than one inline call holds at this size
    batched = jax.jit(jax.vmap(jax.vmap(factorise)))(a)
    single = jax.jit(factorise)
    for i in range(3):
        for j in range(5):
            for got, want in zip(batched, single(a[i, j])):
                np.testing.assert_array_equal(got[i, j], want)
    # 100 Choleskys of 20 x 20 under two vmaps: the outer one cuts them into calls of 75
    # (in a loop) and the remaining 25.
    spd = jax.vmap(jax.vmap(lambda x: x @ x.T + 20 * jnp.eye(20)))(matrices((5, 20, 20, 20), 2))
    cholesky = jax.jit(jax.vmap(jax.vmap(jnp.linalg.cholesky)))
    assert sorted(c[1] for c in lapack_calls(cholesky.lower(spd).as_text())) == [25, 75]
    got = cholesky(spd)
    for i in range(5):
        for j in range(20):
            np.testing.assert_array_equal(got[i, j], jnp.linalg.cholesky(spd[i, j]))
    # An unbatched factor beside a batched right-hand side: JAX's rule, one call.
    chol = jnp.linalg.cholesky(a[0, 0] @ a[0, 0].T + 48 * jnp.eye(48))
    solve = jax.jit(jax.vmap(lambda b: jax.scipy.linalg.solve_triangular(chol, b, lower=True)))
    rhs = matrices((12, 48, 48), 1)
    assert [c[:2] for c in lapack_calls(solve.lower(rhs).as_text())] == [("lapack_strsm_ffi", 1)]
    np.testing.assert_array_equal(solve(rhs)[7], jax.scipy.linalg.solve_triangular(chol, rhs[7], lower=True))
    # Factors batched by an inner vmap, right-hand sides by an outer one too: JAX would fold the
    # outer batch into the columns of one call over all 64 factors, large enough to be split.
    factors = jax.vmap(lambda x: jnp.linalg.cholesky(x @ x.T + 16 * jnp.eye(16)))(matrices((64, 16, 16), 3))
    rhs = matrices((8, 64, 16, 4), 4)
    solve = lambda: jax.jit(jax.vmap(jax.vmap(lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True)),  # noqa: E731
                                     in_axes=(None, 0)))
    assert over_threshold(lapack_calls(solve().lower(factors, rhs).as_text())) == []
    np.testing.assert_array_equal(solve()(factors, rhs)[5, 9], jax.scipy.linalg.solve_triangular(factors[9], rhs[5, 9], lower=True))
    with stock_rules():
        assert over_threshold(lapack_calls(solve().lower(factors, rhs).as_text()))


def jaxlib_work(target, shapes, line):
    """jaxlib's work estimate for one matrix of a LAPACK call (jaxlib/cpu/lapack_kernels.cc),
    written from its formulas independently of purejaxbrc.lapack's bounds."""
    m, n = shapes[0][-2:]
    if "potrf" in target:
        work = n ** 3 // 3
    elif "trsm" in target:
        m, n = shapes[1][-2:]  # the right-hand side
        work = m * n * (m if "side = 76" in line else n)  # 'L'
    elif "geqrf" in target:
        k = min(m, n)
        work = 2 * m * n * k - 2 * k ** 3 // 3
    elif "orgqr" in target:
        k = shapes[1][-1]  # tau
        work = 4 * m * n * k - 2 * k * k * (m + n) + 4 * k ** 3 // 3
    else:
        raise AssertionError(f"no estimate for {target}")
    return work * (3 if target[7] in "cz" else 1)  # complex types


def lapack_calls(text):
    """(target, matrices per call, jaxlib's work estimate per matrix) of every LAPACK custom call
    in StableHLO text."""
    calls = []
    for line in text.splitlines():
        m = re.search(r"custom_call @(lapack_\w+)\(.*:\s*\((tensor<[^)]*)\)", line)
        if m:
            shapes = [[int(d) for d in dims.split("x")] for dims in re.findall(r"tensor<([\dx]+)x", m.group(2))]
            calls.append((m.group(1), math.prod(shapes[0][:-2]), jaxlib_work(m.group(1), shapes, line)))
    return calls


def over_threshold(calls):
    return [c for c in calls if c[1] > 1 and c[1] * c[2] >= INLINE_WORK]


def test_no_call_reaches_the_pool_threshold():
    a = matrices((4, 16, 48, 48))  # 64 matrices: jaxlib would split each call over the pool
    lower = lambda: jax.jit(jax.vmap(jax.vmap(factorise))).lower(a).as_text()  # noqa: E731
    calls = lapack_calls(lower())
    assert {c[0] for c in calls} >= {"lapack_spotrf_ffi", "lapack_strsm_ffi", "lapack_sgeqrf_ffi", "lapack_sorgqr_ffi"}
    assert over_threshold(calls) == []  # one matrix always runs inline
    with stock_rules():  # the test has teeth: JAX's rules make calls that jaxlib splits
        assert {c[0] for c in over_threshold(lapack_calls(lower()))} >= {"lapack_spotrf_ffi", "lapack_sgeqrf_ffi"}
    # Full-size Q of a tall matrix (orgqr on m x m: 64 x 64 from 64 x 8) and complex matrices.
    tall = jax.jit(jax.vmap(lambda x: jnp.linalg.qr(x, mode="complete"))).lower(matrices((40, 64, 8))).as_text()
    c64 = jax.jit(jax.vmap(jnp.linalg.cholesky)).lower(jnp.zeros((64, 40, 40), jnp.complex64)).as_text()
    for text in (tall, c64):
        assert lapack_calls(text) and over_threshold(lapack_calls(text)) == []
    # Small batches keep JAX's own batching: one call for all of them.
    small = lapack_calls(jax.jit(jax.vmap(jnp.linalg.cholesky)).lower(matrices((8, 4, 4))).as_text())
    assert small == [("lapack_spotrf_ffi", 8, 21)]


def test_an_environment_step_stays_under_the_threshold():
    """MJX's own solver calls, batched over 1000 CheetahRun environments (9 degrees of freedom)."""
    env = MJXTaskSet(["CheetahRun"], num_envs=1000, episode_length=10)
    state, _ = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    action = jax.ShapeDtypeStruct((1, 1000, env.action_size), jnp.float32)
    lower = lambda: jax.jit(env.step).lower(state, action).as_text()  # noqa: E731
    calls = lapack_calls(lower())
    assert calls and over_threshold(calls) == []
    with stock_rules():
        assert over_threshold(lapack_calls(lower()))


def test_many_concurrent_batched_factorisations_finish_on_a_two_thread_pool():
    """Eight independent vmapped Cholesky factorisations, each of 16 x 64 x 64 (above jaxlib's
    threshold, as the check under JAX's own rules shows), on a pool of two threads: without
    purejaxbrc.lapack this can deadlock."""
    def f(a):
        spd = a @ a.T + 64 * jnp.eye(64)
        return sum(jnp.linalg.cholesky(spd * (i + 1.0)) for i in range(8))
    with stock_rules():  # one (jitted) Cholesky, called eight times
        calls = lapack_calls(jax.jit(jax.vmap(f)).lower(matrices((16, 64, 64))).as_text())
        assert over_threshold(calls) == calls == [("lapack_spotrf_ffi", 16, 64 ** 3 // 3)]
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp
        import purejaxbrc
        a = jax.random.normal(jax.random.PRNGKey(0), (16, 64, 64))
        def f(a):
            spd = a @ a.T + 64 * jnp.eye(64)
            return sum(jnp.linalg.cholesky(spd * (i + 1.0)) for i in range(8))
        for _ in range(20):
            out = jax.jit(jax.vmap(f))(a)
        print("finished", float(out.sum()))
    """)
    env = dict(os.environ, NPROC="2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr[-2000:]
