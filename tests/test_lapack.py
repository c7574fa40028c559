"""purejaxbrc.lapack: batched LAPACK calls stay inline on CPU, with the same results."""

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
from purejaxbrc.lapack import INLINE_WORK


def factorise(a):
    """What MJX's solver and orthogonal init ask of LAPACK: Cholesky, triangular solves, QR."""
    spd = a @ a.T + a.shape[-1] * jnp.eye(a.shape[-1])
    chol = jnp.linalg.cholesky(spd)
    left = jax.scipy.linalg.solve_triangular(chol, spd, lower=True)
    right = jax.lax.linalg.triangular_solve(chol, spd[:3], left_side=False, lower=True)
    q, r = jnp.linalg.qr(a)
    return chol, left, right, q, r


def matrices(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def test_vmapped_calls_equal_one_matrix_at_a_time():
    a = matrices((3, 5, 48, 48))  # 15 matrices: more than one inline call holds at this size
    batched = jax.jit(jax.vmap(jax.vmap(factorise)))(a)
    single = jax.jit(factorise)
    for i in range(3):
        for j in range(5):
            for got, want in zip(batched, single(a[i, j])):
                np.testing.assert_array_equal(got[i, j], want)
    # An unbatched operand beside a batched one (the triangular factor shared by every row).
    chol = jnp.linalg.cholesky(a[0, 0] @ a[0, 0].T + 48 * jnp.eye(48))
    solve = jax.vmap(lambda b: jax.scipy.linalg.solve_triangular(chol, b, lower=True))
    rhs = matrices((12, 48, 48), 1)
    np.testing.assert_array_equal(jax.jit(solve)(rhs)[7], jax.scipy.linalg.solve_triangular(chol, rhs[7], lower=True))


def lapack_calls(text):
    """(target, matrices per call, an upper bound on jaxlib's work estimate per matrix) of every
    LAPACK custom call in StableHLO text."""
    calls = []
    for line in text.splitlines():
        m = re.search(r"custom_call @(lapack_\w+)\(.*:\s*\((tensor<[^)]*)\)", line)
        if m:
            shapes = [[int(d) for d in dims.split("x")] for dims in re.findall(r"tensor<([\dx]+)x", m.group(2))]
            rows, cols = shapes[-1 if "trsm" in m.group(1) else 0][-2:]  # trsm: the right-hand side
            work = rows * cols * (min(rows, cols) * 6 if "qrf" in m.group(1) else max(rows, cols))
            calls.append((m.group(1), math.prod(shapes[0][:-2]), work))
    return calls


def test_no_call_reaches_the_pool_threshold():
    a = matrices((4, 16, 48, 48))  # 64 matrices: jaxlib would split each call over the pool
    calls = lapack_calls(jax.jit(jax.vmap(jax.vmap(factorise))).lower(a).as_text())
    assert {c[0] for c in calls} >= {"lapack_spotrf_ffi", "lapack_strsm_ffi", "lapack_sgeqrf_ffi", "lapack_sorgqr_ffi"}
    for target, count, work in calls:  # one matrix always runs inline
        assert count == 1 or count * work < INLINE_WORK, (target, count, work)
    # Small batches keep JAX's own batching: one call for all of them.
    small = lapack_calls(jax.jit(jax.vmap(jnp.linalg.cholesky)).lower(matrices((8, 4, 4))).as_text())
    assert small == [("lapack_spotrf_ffi", 8, 64)]


def test_many_concurrent_batched_factorisations_finish_on_a_two_thread_pool():
    """Eight independent vmapped Cholesky factorisations, each of 16 x 64 x 64 (above jaxlib's
    threshold), on a pool of two threads: without purejaxbrc.lapack this deadlocks."""
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
