"""The categorical value support, the C51 projection and the cross-entropy loss."""

import jax
import jax.numpy as jnp


def support(num_atoms: int, v_max: float):
    """Atoms `linspace(-v_max, v_max, num_atoms)`."""
    return jnp.linspace(-v_max, v_max, num_atoms, dtype=jnp.float32)


def project(target_atoms, probs, num_atoms: int, v_max: float):
    """Project probabilities `probs` sitting at `target_atoms` onto the fixed support (C51).

    Both inputs are `[..., num_atoms_in]`; the result is `[..., num_atoms]` and sums to the
    same mass. Atoms outside `[-v_max, v_max]` are clipped to the ends first. A shifted atom at
    `b` (in atom units) between `l = floor(b)` and `l + 1` gives `p (l + 1 - b)` to `l` and
    `p (b - l)` to `l + 1`; on an atom that is all of `p` to `l`, C51's `l == u` case. Two
    scatter-adds: linear in the atoms, where a dense [..., J, N] kernel costs J times more.
    """
    delta = 2.0 * v_max / (num_atoms - 1)
    b = (jnp.clip(target_atoms, -v_max, v_max) + v_max) / delta  # [..., J] in [0, N-1]
    lower = jnp.floor(b)
    to_upper = b - lower
    # Clipped after the cast: a NaN target (a diverged critic) casts to an arbitrary integer, and
    # the scatters below promise in-bounds indices. Its NaN mass still reaches the loss, where
    # the run's non-finite guard stops it.
    lo = jnp.clip(lower.astype(jnp.int32), 0, num_atoms - 1)
    hi = jnp.minimum(lo + 1, num_atoms - 1)  # b == N-1: weight 0 goes to N-1 itself
    lead, j = b.shape[:-1], b.shape[-1]
    rows = jnp.arange(b.size // j)[:, None]
    flat = lambda x: x.reshape(-1, j)  # noqa: E731
    out = jnp.zeros((b.size // j, num_atoms), probs.dtype)
    out = out.at[rows, flat(lo)].add(flat(probs * (1.0 - to_upper)), mode="promise_in_bounds")
    out = out.at[rows, flat(hi)].add(flat(probs * to_upper), mode="promise_in_bounds")
    return out.reshape(lead + (num_atoms,))


def cross_entropy(logits, target_probs):
    """`-sum_j target_j * log_softmax(logits)_j` over the last axis."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def expectation(probs, atoms):
    """The mean value `sum_j z_j p_j` of a categorical distribution."""
    return jnp.sum(probs * atoms, axis=-1)
