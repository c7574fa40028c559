"""Batched LAPACK calls on CPU that never wait on XLA's thread pool.

jaxlib 0.10 runs a batched LAPACK call whose estimated work reaches `INLINE_WORK` FLOP as
pieces on XLA:CPU's intra-op pool and blocks the pool thread that made the call until they
finish (`ParallelBatchMap` in jaxlib/cpu/lapack_kernels.cc). Our programs make such calls:
MJX's constraint solver (Cholesky, triangular solves) vmapped over environments, tasks and
seeds, and orthogonal initialisation (orgqr, purejaxbrc.orthogonal; QR before) vmapped over the
critic ensemble. Once as many of them are in flight as the pool has threads, every thread
waits and none is left to run the pieces: a silent deadlock. A pool of 32 threads made it unlikely but, on 2 cores, cost about a
fifth of the learning iteration rate at critic widths 128 to 512 (bench/results/lockstep-*.json).

So `install()` changes how these primitives batch when the program is lowered for the CPU: a
batch whose work would reach the threshold is cut into `lax.map` steps of batches below it,
which jaxlib runs inline on the calling thread. Each matrix goes through the same LAPACK
routine as before (bit-identical results), nothing waits on the pool, and XLA keeps its default
pool of one thread per core. For other platforms (`lax.platform_dependent`, resolved when the
program is lowered), for small batches, for symbolic shapes and where only a triangular solve's
right-hand side is batched against one factor (JAX folds that batch into the columns of a
single solve), the primitives batch as JAX defines.
Only batches made by `vmap` pass through here: a stacked array handed to `jnp.linalg` directly
is one call as before.
"""

import math

import jax
import jax.numpy as jnp
from jax.interpreters import batching

# jaxlib's kMinWorkPerTask: a batch estimated below this many FLOP runs on the calling thread.
INLINE_WORK = 200_000


# Per-matrix work: at least jaxlib's estimate for every kernel the primitive lowers to (n^3/3
# for a Cholesky factor; m n k for a triangular solve; 2 m n k - 2 k^3/3 for geqrf and at most
# 4 m q k for orgqr building a q-column Q), tripled for complex types as jaxlib does.
def _complex(a):
    return 3 if jnp.issubdtype(a.dtype, jnp.complexfloating) else 1


def _cholesky_work(a, **_):
    return _complex(a) * (a.shape[-1] ** 3 // 3)


def _triangular_solve_work(a, b, *, left_side, **_):
    m, n = b.shape[-2:]
    return _complex(b) * m * n * (m if left_side else n)


def _qr_work(a, *, full_matrices, **_):
    m, n = a.shape[-2:]
    k = min(m, n)
    return _complex(a) * 4 * m * max(n, m if full_matrices else k) * k


def _householder_product_work(a, taus, **_):
    m, n = a.shape[-2:]
    return _complex(a) * 4 * m * n * taus.shape[-1]


WORK = {
    jax.lax.linalg.cholesky_p: _cholesky_work,
    jax.lax.linalg.triangular_solve_p: _triangular_solve_work,
    jax.lax.linalg.qr_p: _qr_work,
    jax.lax.linalg.householder_product_p: _householder_product_work,  # orthogonal init (orgqr)
}
_STOCK = {}  # JAX's own rule per primitive, while ours is installed


def matrices_per_call(prim, operands, params) -> int:
    """The most matrices one call of `prim` may take and still run inline (at least 1)."""
    return max(1, (INLINE_WORK - 1) // max(1, WORK[prim](*operands, **params)))


def _inline_batching(prim, stock_rule):
    def to_front(out, out_dims):
        if prim.multiple_results:
            return [jnp.moveaxis(y, d, 0) for y, d in zip(out, out_dims)]
        return jnp.moveaxis(out, out_dims, 0)

    def rule(axis_data, args, dims, **params):
        size = axis_data.size
        static = isinstance(size, int) and all(isinstance(n, int) for x in args for n in x.shape)
        one_factor = prim is jax.lax.linalg.triangular_solve_p and dims[0] is None and args[0].ndim == 2
        if all(d is None for d in dims) or not static or one_factor:
            return stock_rule(axis_data, args, dims, **params)
        # Every leading axis is a batch axis to LAPACK: bring ours to the front, give unbatched
        # operands the same batch, and flatten all of them into one axis of matrices.
        def to_matrices(args):
            return [jnp.moveaxis(x, d, 0) if d is not None else jnp.broadcast_to(x, (size,) + x.shape)
                    for x, d in zip(args, dims)]
        front = jax.eval_shape(to_matrices, args)
        lead = front[0].shape[:-2]
        count = math.prod(lead)
        per_call = matrices_per_call(prim, front, params)
        if count <= per_call:
            return stock_rule(axis_data, args, dims, **params)

        def inline(*args):
            flat = [x.reshape((count,) + x.shape[len(lead):]) for x in to_matrices(args)]
            out = jax.lax.map(lambda xs: prim.bind(*xs, **params), flat, batch_size=per_call)
            unflatten = lambda y: y.reshape(lead + y.shape[1:])  # noqa: E731
            return [unflatten(y) for y in out] if prim.multiple_results else unflatten(out)

        def stock(*args):
            return to_front(*stock_rule(axis_data, args, dims, **params))

        out = jax.lax.platform_dependent(*args, cpu=inline, default=stock)
        return out, ([0] * len(out) if prim.multiple_results else 0)

    rule.purejaxbrc_inline = True
    return rule


def install() -> None:
    """Batch `WORK`'s primitives as described above (idempotent). Programs traced before keep
    the rules they were traced with until `jax.clear_caches()` (MJX task sets' kept dynamics:
    until `purejaxbrc.envs.mjx._dynamics.cache_clear()`)."""
    for prim in WORK:
        if prim not in _STOCK and not getattr(batching.fancy_primitive_batchers[prim], "purejaxbrc_inline", False):
            _STOCK[prim] = batching.fancy_primitive_batchers[prim]
            batching.fancy_primitive_batchers[prim] = _inline_batching(prim, _STOCK[prim])


def uninstall() -> None:
    """Give `WORK`'s primitives back JAX's own batching rules (for programs traced from now on:
    `jax.clear_caches()` and `purejaxbrc.envs.mjx._dynamics.cache_clear()` drop those traced
    before)."""
    for prim, stock_rule in _STOCK.items():
        batching.fancy_primitive_batchers[prim] = stock_rule
    _STOCK.clear()
