"""What every BRC agent shares: the config fields of its categorical critic and optimiser, the
interface the training loop (purejaxbrc.train) relies on, and the target-network helpers.

Agents (`sac.SACAgent`, `dqn.DQNAgent`) hold only static settings; every method is a pure
function of its inputs, so the loop can jit, scan and vmap them freely. Hyperparameters reach
the methods as `hp`, a dict with every name of the config's `SWEEPABLE`: Python floats for fixed
values (compile-time constants), arrays for swept ones (data: one value per population member).
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import jax
import jax.numpy as jnp

from purejaxbrc import normalizer
from purejaxbrc.buffer import Transition
from purejaxbrc.config import positive, require


@dataclass(frozen=True)
class AgentConfig:
    """The categorical critic and its optimiser. Defaults are the paper's (BRC.md, "Networks",
    "Optimisation"); each agent's config adds its own fields after these."""

    # What may differ between the members of one program (purejaxbrc.sweep); agents extend it.
    SWEEPABLE: ClassVar[tuple[str, ...]] = ("lr", "weight_decay", "tau", "gamma", "v_max")

    critic_width: int = 4096
    critic_depth: int = 2
    num_atoms: int = 101
    embed_dim: int = 32
    embed_norm: Literal["l2", "l1"] = "l2"
    critic_matmul_dtype: Literal["float32", "bfloat16"] = "float32"
    lr: float = 3e-4
    """Learning rate (AdamW)."""
    weight_decay: float = 1e-4
    tau: float = 0.005
    """Polyak rate of the target network."""
    gamma: float = 0.99
    v_max: float = 10.0
    """The categorical support is linspace(-v_max, v_max, num_atoms)."""

    def validate(self) -> None:
        positive(self, "critic_width", "critic_depth", "embed_dim", "lr", "v_max")
        require(self, "num_atoms", lambda v: v >= 2, ">= 2")
        require(self, "weight_decay", lambda v: v >= 0, ">= 0")
        require(self, "gamma", lambda v: 0 < v < 1, "in (0, 1)")
        require(self, "tau", lambda v: 0 < v <= 1, "in (0, 1]")

    def hyperparameters(self, swept: dict) -> dict:
        """`hp`: every sweepable hyperparameter, a member's value where swept (data), this
        config's otherwise (a compile-time constant)."""
        return {name: swept[name] if name in swept else getattr(self, name) for name in self.SWEEPABLE}

    @property
    def compute_dtype(self):
        """The critic's matmul operand dtype; None keeps float32."""
        return None if self.critic_matmul_dtype == "float32" else jnp.dtype(self.critic_matmul_dtype)


class Agent(Protocol):
    """What `purejaxbrc.train` calls. Leaves of `obs`, `task_ids` and actions carry one leading
    batch axis (environments or transitions); `state` is the agent's own pytree."""

    config: AgentConfig

    @property
    def action_shape(self) -> tuple[int, ...]: ...

    def init(self, key, hp) -> Any: ...

    def random_action(self, key, task_ids) -> jax.Array:
        """The warm-up policy, for every environment of `task_ids` (any shape)."""

    def explore(self, state, obs, task_ids, key, iteration, hp) -> jax.Array:
        """The behaviour policy once learning has started."""

    def greedy(self, state, obs, task_ids, hp) -> jax.Array:
        """The deterministic policy (evaluation)."""

    def update(self, state, batch: Transition, task_ids, reward_scale, key, hp) -> tuple[Any, dict]:
        """One gradient step on raw-reward `batch` -> (state, scalar metrics)."""

    def reward_scale(self, state, norm: normalizer.NormalizerState, hp) -> jax.Array:
        """`[T]` multipliers of raw rewards (BRC.md, "Per-task reward normalisation")."""

    def discount(self, hp):
        """The discount the reward normaliser computes returns with."""

    def update_flops(self, batch: int) -> float:
        """FLOPs of the matmuls of one `update` on `batch` transitions (bench: MFU)."""


def polyak(online, target, tau: float, mask=None):
    """`tau * online + (1 - tau) * target`, leaf by leaf; where `mask` (a tree like the
    parameters, 1 trainable, 0 frozen) is 0 the target keeps its value."""
    new = jax.tree.map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)
    return new if mask is None else jax.tree.map(lambda n, t, m: jnp.where(m > 0, n, t), new, target, mask)


def masked(updates, mask):
    """Optimiser updates with the frozen entries (mask 0) zeroed: those parameters stay bit for
    bit (weight decay included), a non-finite update included."""
    return updates if mask is None else jax.tree.map(lambda u, m: jnp.where(m > 0, u, 0), updates, mask)
