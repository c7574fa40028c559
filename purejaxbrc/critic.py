"""The BRC critic: an ensemble of categorical BroNets conditioned on a task embedding."""

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from purejaxbrc.bronet import BroNet, Dense
from purejaxbrc.embedding import TaskEmbedding


class CategoricalCritic(eqx.Module):
    """`num_critics` independent BroNet + Dense(num_atoms) heads over one shared task embedding.

    The embedding lives here because it is trained only by the critic loss; the actor reads it
    with the gradient stopped. Every leaf of `nets` and `heads` has a leading ensemble axis.
    """

    nets: BroNet
    heads: Dense
    embedding: Optional[TaskEmbedding]

    def __init__(self, key, in_features: int, width: int, depth: int, num_atoms: int,
                 num_critics: int = 2, num_tasks: int = 1, embed_dim: int = 32,
                 embed_norm: str = "l2", embedding: bool | None = None):
        """`embedding`: condition on a task embedding; default only with several tasks
        (BRC.md: single-task runs use none; a transferred model keeps its own)."""
        k_net, k_head, k_emb = jax.random.split(key, 3)
        use_embedding = num_tasks > 1 if embedding is None else embedding
        full_in = in_features + (embed_dim if use_embedding else 0)
        self.nets = jax.vmap(lambda k: BroNet(k, full_in, width, depth))(
            jax.random.split(k_net, num_critics))
        self.heads = jax.vmap(lambda k: Dense(k, width, num_atoms))(  # gain sqrt(2), as the reference
            jax.random.split(k_head, num_critics))
        self.embedding = TaskEmbedding(k_emb, num_tasks, embed_dim, embed_norm) if use_embedding else None

    def task_features(self, task_ids):
        """The normalised embedding of each task id, or a `[..., 0]` array without one."""
        if self.embedding is None:
            return jnp.zeros(task_ids.shape + (0,), jnp.float32)
        return self.embedding(task_ids)

    def __call__(self, obs, action, task_ids, compute_dtype=None):
        """Logits `[num_critics, batch, num_atoms]` for padded `obs` and `action`."""
        x = jnp.concatenate([obs, action, self.task_features(task_ids)], axis=-1)
        return jax.vmap(lambda net, head: head(net(x, compute_dtype)))(self.nets, self.heads)
