"""Learned per-task embeddings, normalised in the forward pass (BRC.md, "Task embedding")."""

import equinox as eqx
import jax
import jax.numpy as jnp

NORMS = ("l2", "l1")


class TaskEmbedding(eqx.Module):
    table: jax.Array  # [num_tasks, dim]
    norm: str = eqx.field(static=True, default="l2")

    def __init__(self, key, num_tasks: int, dim: int, norm: str = "l2"):
        if norm not in NORMS:
            raise ValueError(f"embedding norm must be one of {NORMS}, got {norm!r}")
        # flax nn.Embed's default, as the reference: rows of norm about 1, so that Adam's steps
        # move the normalised embedding's direction at the reference's pace.
        self.table = jax.random.normal(key, (num_tasks, dim), jnp.float32) / jnp.sqrt(jnp.float32(dim))
        self.norm = norm

    def __call__(self, task_ids):
        e = self.table[task_ids]
        order = 2 if self.norm == "l2" else 1
        return e / jnp.maximum(jnp.linalg.norm(e, ord=order, axis=-1, keepdims=True), 1e-8)
