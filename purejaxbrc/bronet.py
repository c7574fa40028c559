"""BroNet: the residual MLP with LayerNorm that BRC scales up (BRC.md, "Networks").

Layers take batched inputs `[..., features]` directly, so a whole minibatch is one matmul
and no per-example vmap is needed.
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from purejaxbrc import backend
from purejaxbrc.orthogonal import orthogonal


class Dense(eqx.Module):
    """`x @ kernel + bias` with an orthogonal kernel (purejaxbrc.orthogonal) and a zero bias."""

    kernel: jax.Array  # [in, out]
    bias: jax.Array  # [out]

    def __init__(self, key, in_features: int, out_features: int, gain: float = math.sqrt(2.0)):
        self.kernel = orthogonal(key, (in_features, out_features), gain)
        self.bias = jnp.zeros((out_features,), jnp.float32)

    def __call__(self, x, compute_dtype=None):
        if compute_dtype is None:
            return matmul(x, self.kernel) + self.bias
        # Mixed precision: matmul inputs in `compute_dtype`, accumulation and output in f32.
        y = jnp.matmul(x.astype(compute_dtype), self.kernel.astype(compute_dtype),
                       preferred_element_type=jnp.float32)
        return y + self.bias


def matmul(x, w):
    """`x @ w`. On CPU its weight gradient contracts an explicitly transposed input: XLA:CPU's
    YNNPACK dot runs `x.T @ dy` over the batch axis markedly slower than the product of a
    transposed copy (measured at widths 256-1024); `dy @ w.T` runs at full speed as it is.
    Elsewhere the plain product: GPU matmul libraries take transposed operands natively."""
    return _matmul_cpu(x, w) if backend.is_cpu() else x @ w


@jax.custom_vjp
def _matmul_cpu(x, w):
    return x @ w


def _matmul_cpu_fwd(x, w):
    return x @ w, (x, w)


def _matmul_cpu_bwd(residuals, g):
    x, w = residuals
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    # The barrier keeps XLA from folding the transpose back into the dot's dimension numbers.
    x_t = jax.lax.optimization_barrier(x2.T)
    return g @ w.T, x_t @ g2


_matmul_cpu.defvjp(_matmul_cpu_fwd, _matmul_cpu_bwd)


class LayerNorm(eqx.Module):
    """LayerNorm over the last axis with a learned scale and bias (flax's eps)."""

    scale: jax.Array
    bias: jax.Array
    eps: float = eqx.field(static=True, default=1e-6)

    def __init__(self, features: int, eps: float = 1e-6):
        self.scale = jnp.ones((features,), jnp.float32)
        self.bias = jnp.zeros((features,), jnp.float32)
        self.eps = eps

    def __call__(self, x):
        return layer_norm(x, self.scale, self.bias, self.eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, eps: float):
    """`(x - mean) / sqrt(var + eps) * scale + bias` over the last axis.

    The gradient is written by hand, with fewer reductions than autodiff derives from the
    forward pass: besides the matmuls, LayerNorm is the largest cost of a small BroNet on CPU."""
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
    centred = x - row_mean(x)
    inv_std = jax.lax.rsqrt(row_mean(jnp.square(centred)) + eps)
    normed = centred * inv_std
    return normed * scale + bias, (normed, inv_std, scale)


def _layer_norm_bwd(eps, residuals, g):
    normed, inv_std, scale = residuals
    g_normed = g * scale
    dx = inv_std * (g_normed - row_mean(g_normed) - normed * row_mean(g_normed * normed))
    rows = tuple(range(g.ndim - 1))
    return dx, jnp.sum(g * normed, rows), jnp.sum(g, rows)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def row_mean(x):
    """The mean over the last axis, keeping it. On CPU a product with a constant column: XLA:CPU
    splits a reduction of more than 32 elements into a reduce-window and a reduce (two thunks of
    several microseconds each), where the product is one small dot."""
    if not backend.is_cpu():
        return jnp.mean(x, axis=-1, keepdims=True)
    n = x.shape[-1]
    return x @ jnp.full((n, 1), 1.0 / n, x.dtype)


class ResidualBlock(eqx.Module):
    """`x + LN(Dense(ReLU(LN(Dense(x)))))`."""

    dense1: Dense
    norm1: LayerNorm
    dense2: Dense
    norm2: LayerNorm

    def __init__(self, key, width: int):
        k1, k2 = jax.random.split(key)
        self.dense1, self.norm1 = Dense(k1, width, width), LayerNorm(width)
        self.dense2, self.norm2 = Dense(k2, width, width), LayerNorm(width)

    def __call__(self, x, compute_dtype=None):
        h = jax.nn.relu(self.norm1(self.dense1(x, compute_dtype)))
        return x + self.norm2(self.dense2(h, compute_dtype))


class BroNet(eqx.Module):
    """`Dense -> LN -> ReLU`, then `depth` residual blocks; nothing after the last block."""

    stem: Dense
    stem_norm: LayerNorm
    blocks: tuple[ResidualBlock, ...]

    def __init__(self, key, in_features: int, width: int, depth: int):
        keys = jax.random.split(key, depth + 1)
        self.stem = Dense(keys[0], in_features, width)
        self.stem_norm = LayerNorm(width)
        self.blocks = tuple(ResidualBlock(k, width) for k in keys[1:])

    def __call__(self, x, compute_dtype=None):
        x = jax.nn.relu(self.stem_norm(self.stem(x, compute_dtype)))
        for block in self.blocks:
            x = block(x, compute_dtype)
        return x


def macs(in_features: int, width: int, depth: int) -> int:
    """Multiply-accumulates of one example through a `BroNet`: the stem and two dense layers per
    residual block."""
    return in_features * width + 2 * depth * width * width
