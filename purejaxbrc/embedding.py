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


# -- transfer: a pretrained table onto new tasks (purejaxbrc.transfer) ------------------------
def transferred_table(fresh, source, rows, new_rows: str):
    """The table of a transferred network: pretrained rows where `rows >= 0` (`rows`: each task's
    row in `source`, -1 for a new task), else the mean of the pretrained rows (`new_rows="mean"`)
    or `fresh`'s row."""
    init = jnp.broadcast_to(jnp.mean(source, axis=0), fresh.shape) if new_rows == "mean" else fresh
    return jnp.where((rows >= 0)[:, None], source[jnp.maximum(rows, 0)], init)


def with_transferred_rows(fresh_net, source_net, rows, new_rows: str):
    """`source_net` (any module with an `embedding: TaskEmbedding`) with its table rebuilt for
    the new tasks by `transferred_table`."""
    table = transferred_table(fresh_net.embedding.table, source_net.embedding.table, rows, new_rows)
    return eqx.tree_at(lambda n: n.embedding.table, source_net, table)


def new_rows_only(new):
    """The embedding transfer mode's mask builder: `network -> mask`, 1 for the embedding rows
    of the new tasks (`new`: [T] bool), 0 for every other parameter."""
    new = jnp.asarray(new, jnp.float32)[:, None]

    def mask(network):
        zeros = jax.tree.map(lambda x: jnp.zeros((), x.dtype), network)
        return eqx.tree_at(lambda n: n.embedding.table, zeros, new)
    return mask
