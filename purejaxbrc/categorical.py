"""The categorical value support, the C51 projection and the cross-entropy loss.

The projection is written as a triangular kernel: atom `i` receives `p_j * max(0, 1 - |b_j - i|)`
from every shifted atom `j`. For `b_j` between `l = floor(b_j)` and `u = ceil(b_j)` that is
`p_j (u - b_j)` to `l` and `p_j (b_j - l)` to `u`, and all of `p_j` to `l` when `l == u`: the
C51 rule exactly, with no scatter and no special case.
"""

import jax
import jax.numpy as jnp


def support(num_atoms: int, v_max: float):
    """Atoms `linspace(-v_max, v_max, num_atoms)`."""
    return jnp.linspace(-v_max, v_max, num_atoms, dtype=jnp.float32)


def project(target_atoms, probs, num_atoms: int, v_max: float):
    """Project probabilities `probs` sitting at `target_atoms` onto the fixed support.

    Both inputs are `[..., num_atoms_in]`; the result is `[..., num_atoms]` and sums to the
    same mass. Atoms outside `[-v_max, v_max]` are clipped to the ends first.
    """
    delta = 2.0 * v_max / (num_atoms - 1)
    b = (jnp.clip(target_atoms, -v_max, v_max) + v_max) / delta  # [..., J] in [0, N-1]
    idx = jnp.arange(num_atoms, dtype=b.dtype)
    weight = jnp.maximum(0.0, 1.0 - jnp.abs(b[..., :, None] - idx))  # [..., J, N]
    return jnp.einsum("...j,...jn->...n", probs, weight, precision=jax.lax.Precision.HIGHEST)


def cross_entropy(logits, target_probs):
    """`-sum_j target_j * log_softmax(logits)_j` over the last axis."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def expectation(probs, atoms):
    """The mean value `sum_j z_j p_j` of a categorical distribution."""
    return jnp.sum(probs * atoms, axis=-1)
