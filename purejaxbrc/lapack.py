"""Batched LAPACK calls on CPU that never wait on XLA's thread pool.

jaxlib 0.10 runs a batched LAPACK call whose estimated work reaches `INLINE_WORK` FLOP as
pieces on XLA:CPU's intra-op pool and blocks the pool thread that made the call until they
finish (`ParallelBatchMap` in jaxlib/cpu/lapack_kernels.cc). Our programs make such calls:
MJX's constraint solver (Cholesky, triangular solves) vmapped over environments, tasks and
seeds, and orthogonal initialisation (QR) vmapped over the critic ensemble. Once as many of
them are in flight as the pool has threads, every thread waits and none is left to run the
pieces: a silent deadlock. A pool of 32 threads made it unlikely but, on 2 cores, cost 17% of
the learning iteration rate at critic width 128 and 26% at 512 (bench/results/nproc-*.json).

So `install()` changes how these primitives batch on CPU: a batch whose work would reach the
threshold is cut into `lax.map` steps of batches below it, which jaxlib runs inline on the
calling thread. Each matrix goes through the same LAPACK routine as before (bit-identical
results), nothing waits on the pool, and XLA keeps its default pool of one thread per core.
Elsewhere (GPU, TPU) and for small batches the primitives batch as JAX defines.
"""

import math

import jax
import jax.numpy as jnp
from jax.interpreters import batching

# jaxlib's kMinWorkPerTask: a batch estimated below this many FLOP runs on the calling thread.
INLINE_WORK = 200_000


# Per-matrix work, an upper bound on jaxlib's estimate for each primitive (it counts n^3/3 for
# a Cholesky factor, m n k for a triangular solve, 2 m n k - 2 k^3/3 and 4 m n k - ... for QR).
def _cholesky_work(a, **_):
    return a.shape[-1] ** 3


def _triangular_solve_work(a, b, *, left_side, **_):
    m, n = b.shape[-2:]
    return m * n * (m if left_side else n)


def _qr_work(a, **_):
    m, n = a.shape[-2:]
    return 6 * m * n * min(m, n)


WORK = {
    jax.lax.linalg.cholesky_p: _cholesky_work,
    jax.lax.linalg.triangular_solve_p: _triangular_solve_work,
    jax.lax.linalg.qr_p: _qr_work,
}


def matrices_per_call(prim, operands, params) -> int:
    """The most matrices one call of `prim` may take and still run inline (at least 1)."""
    return max(1, (INLINE_WORK - 1) // max(1, WORK[prim](*operands, **params)))


def _inline_batching(prim, default_rule):
    def rule(axis_data, args, dims, **params):
        if jax.default_backend() != "cpu":
            return default_rule(axis_data, args, dims, **params)
        size = axis_data.size
        # Every leading axis is a batch axis to LAPACK: bring ours to the front, give unbatched
        # operands the same batch, and flatten all of them into one axis of matrices.
        args = [jnp.moveaxis(x, d, 0) if d is not None else jnp.broadcast_to(x, (size,) + x.shape)
                for x, d in zip(args, dims)]
        lead = args[0].shape[:-2]
        count = math.prod(lead)
        per_call = matrices_per_call(prim, args, params)
        if count <= per_call:
            return default_rule(axis_data, args, (0,) * len(args), **params)
        flat = [x.reshape((count,) + x.shape[len(lead):]) for x in args]
        out = jax.lax.map(lambda xs: prim.bind(*xs, **params), flat, batch_size=per_call)
        unflatten = lambda y: y.reshape(lead + y.shape[1:])  # noqa: E731
        if prim.multiple_results:
            return [unflatten(y) for y in out], [0] * len(out)
        return unflatten(out), 0

    rule.purejaxbrc_inline = True
    return rule


def install() -> None:
    """Batch `WORK`'s primitives as described above (idempotent)."""
    for prim in WORK:
        default_rule = batching.fancy_primitive_batchers[prim]
        if not getattr(default_rule, "purejaxbrc_inline", False):
            batching.fancy_primitive_batchers[prim] = _inline_batching(prim, default_rule)
