"""BRC's continuous agent: SAC with a categorical critic ensemble (BRC.md, "Continuous control").

`SACAgent` satisfies `purejaxbrc.agent.Agent`: static settings only, pure methods, and
hyperparameters as `hp` (every name of `SACConfig.SWEEPABLE`).
"""

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxbrc import bronet, categorical, normalizer
from purejaxbrc.actor import TanhGaussianActor
from purejaxbrc.agent import AgentConfig, masked, polyak
from purejaxbrc.config import positive, require
from purejaxbrc.critic import CategoricalCritic


@dataclass(frozen=True)
class SACConfig(AgentConfig):
    """The continuous agent: the shared critic fields (`AgentConfig`; `lr` is the actor's and
    the critic's), the actor and the temperature."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = AgentConfig.SWEEPABLE + ("alpha_lr", "init_alpha", "target_entropy_scale")

    actor_width: int = 256
    actor_depth: int = 1
    alpha_lr: float = 3e-4
    init_alpha: float = 0.1
    target_entropy_scale: float = 0.5
    """Target entropy -scale x A_max (A_max: the padded action size)."""

    def validate(self) -> None:
        super().validate()
        positive(self, "actor_width", "actor_depth", "alpha_lr", "init_alpha")
        require(self, "target_entropy_scale", lambda v: v >= 0, ">= 0")


class SACState(NamedTuple):
    actor: TanhGaussianActor
    critic: CategoricalCritic
    target_critic: CategoricalCritic
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


class SACAgent:
    def __init__(self, config: SACConfig, *, obs_size: int, action_size: int, num_tasks: int,
                 num_critics: int = 2, embedding: bool | None = None, trainable=None):
        """`embedding`: whether the critic has a task embedding (default: with several tasks);
        `trainable`: None (train everything) or `critic -> mask` (a tree like the critic, 1
        trainable, 0 frozen: purejaxbrc.transfer's embedding mode)."""
        self.config = config
        self.obs_size, self.action_size, self.num_tasks = obs_size, action_size, num_tasks
        self.num_critics, self.embedding, self.trainable = num_critics, embedding, trainable
        self.compute_dtype = config.compute_dtype

    # Built per call from `hp`: a swept learning rate is an array, and the optimiser states'
    # structure does not depend on the values.
    @staticmethod
    def _net_opt(hp):
        return optax.adamw(hp["lr"], weight_decay=hp["weight_decay"], eps=1e-8)

    @staticmethod
    def _alpha_opt(hp):
        return optax.adam(hp["alpha_lr"], b1=0.5)

    def target_entropy(self, hp):
        return -hp["target_entropy_scale"] * self.action_size

    # -- construction ------------------------------------------------------------------------
    def init(self, key, hp) -> SACState:
        c = self.config
        k_actor, k_critic = jax.random.split(key)
        critic = CategoricalCritic(
            k_critic, self.obs_size + self.action_size, c.critic_width, c.critic_depth,
            c.num_atoms, self.num_critics, self.num_tasks, c.embed_dim, c.embed_norm, self.embedding)
        actor_in = self.obs_size + critic.task_features(jnp.zeros((), jnp.int32)).shape[-1]
        actor = TanhGaussianActor(k_actor, actor_in, self.action_size, c.actor_width, c.actor_depth)
        log_alpha = jnp.log(jnp.asarray(hp["init_alpha"], jnp.float32))
        net_opt = self._net_opt(hp)
        return SACState(actor=actor, critic=critic, target_critic=critic, log_alpha=log_alpha,
                        actor_opt=net_opt.init(actor), critic_opt=net_opt.init(critic),
                        alpha_opt=self._alpha_opt(hp).init(log_alpha))

    # -- acting ------------------------------------------------------------------------------
    def _actor_input(self, critic, obs, task_ids):
        # The actor reads the online critic's embedding but never trains it.
        return jnp.concatenate([obs, jax.lax.stop_gradient(critic.task_features(task_ids))], -1)

    @property
    def action_shape(self):
        return (self.action_size,)

    def explore(self, state: SACState, obs, task_ids, key, iteration, hp):
        del iteration, hp  # SAC explores through its own entropy; no schedule
        action, _ = state.actor.sample(self._actor_input(state.critic, obs, task_ids), key)
        return action

    def greedy(self, state: SACState, obs, task_ids, hp):
        del hp  # the deterministic action: tanh of the mean
        return state.actor.deterministic(self._actor_input(state.critic, obs, task_ids))

    def random_action(self, key, task_ids):
        """Uniform in [-1, 1]^A_max for every environment (the warm-up policy)."""
        return jax.random.uniform(key, task_ids.shape + self.action_shape, jnp.float32, -1.0, 1.0)

    def reward_scale(self, state: SACState, norm, hp):
        """The normaliser's scale, with room on the support for the entropy bonus."""
        allowance = normalizer.entropy_allowance(jnp.exp(state.log_alpha), self.target_entropy(hp), hp["gamma"])
        return normalizer.scale(norm, hp["v_max"], allowance)

    @staticmethod
    def discount(hp):
        return hp["gamma"]

    # -- learning ----------------------------------------------------------------------------
    def update_flops(self, batch: int) -> float:
        """FLOPs of the matmuls of one `update` on `batch` transitions, from the network shapes
        (2 per multiply-accumulate; a backward pass through weights and activations costs twice
        the forward, one through the activations alone as much): the target (actor and target
        critics on next_obs), the critic loss (forward and backward), the actor loss (actor
        forward and backward, the online critics forward and backward through activations)."""
        c = self.config
        embed = c.embed_dim if (self.num_tasks > 1 if self.embedding is None else self.embedding) else 0
        critic = self.num_critics * (bronet.macs(self.obs_size + self.action_size + embed, c.critic_width, c.critic_depth)
                                     + c.critic_width * c.num_atoms)
        actor = bronet.macs(self.obs_size + embed, c.actor_width, c.actor_depth) + c.actor_width * 2 * self.action_size
        target, critic_loss, actor_loss = 2 * (actor + critic), 6 * critic, 6 * actor + 4 * critic
        return float(batch * (target + critic_loss + actor_loss))

    def _mean_probs(self, critic, obs, action, task_ids):
        logits = critic(obs, action, task_ids, self.compute_dtype)  # [C, B, N]
        return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)

    def critic_target(self, state: SACState, batch, task_ids, reward, key, hp):
        """The projected target distribution `[B, N]` (stop-gradient by construction)."""
        num_atoms = self.config.num_atoms
        atoms = categorical.support(num_atoms, hp["v_max"])
        alpha = jnp.exp(state.log_alpha)
        next_action, next_log_prob = state.actor.sample(
            self._actor_input(state.critic, batch.next_obs, task_ids), key)
        probs = self._mean_probs(state.target_critic, batch.next_obs, next_action, task_ids)
        discount = hp["gamma"] * (1.0 - batch.terminated.astype(jnp.float32))  # truncation bootstraps
        # r + d (z - alpha log pi) as a [B, 2] x [2, N] product: as a broadcast, XLA:CPU fuses the
        # policy sample into the per-atom loop and recomputes it for each of the N atoms. Full f32
        # precision: GPUs would otherwise round the operands to TF32.
        per_row = jnp.stack([reward - discount * alpha * next_log_prob, discount], axis=-1)
        shifted = jnp.matmul(per_row, jnp.stack([jnp.ones_like(atoms), atoms]),
                             precision=jax.lax.Precision.HIGHEST)
        return jax.lax.stop_gradient(categorical.project(shifted, probs, num_atoms, hp["v_max"]))

    def update(self, state: SACState, batch, task_ids, reward_scale, key, hp):
        """One gradient step: critic, target critic, actor, temperature (in that order)."""
        k_target, k_actor = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        reward = batch.reward * reward_scale[task_ids]
        target = self.critic_target(state, batch, task_ids, reward, k_target, hp)
        net_opt = self._net_opt(hp)

        def critic_loss(critic):
            logits = critic(batch.obs, batch.action, task_ids, self.compute_dtype)
            per_critic = jnp.mean(categorical.cross_entropy(logits, target[None]), axis=-1)
            return jnp.sum(per_critic)

        c_loss, c_grads = jax.value_and_grad(critic_loss)(state.critic)
        c_updates, critic_opt = net_opt.update(c_grads, state.critic_opt, state.critic)
        mask = self.trainable(state.critic) if self.trainable else None
        critic = optax.apply_updates(state.critic, masked(c_updates, mask))
        target_critic = polyak(critic, state.target_critic, hp["tau"], mask)

        atoms = categorical.support(self.config.num_atoms, hp["v_max"])

        def actor_loss(actor):
            action, log_prob = actor.sample(self._actor_input(critic, batch.obs, task_ids), k_actor)
            q = categorical.expectation(self._mean_probs(critic, batch.obs, action, task_ids), atoms)
            return jnp.mean(alpha * log_prob - q), (log_prob, q)

        (a_loss, (log_prob, q)), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
        a_updates, actor_opt = net_opt.update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, a_updates)

        entropy = -jnp.mean(log_prob)
        target_entropy = self.target_entropy(hp)
        alpha_grad = jax.grad(lambda la: jnp.exp(la) * (entropy - target_entropy))(state.log_alpha)
        al_updates, alpha_opt = self._alpha_opt(hp).update(alpha_grad, state.alpha_opt, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, al_updates)

        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha": alpha,
                   "entropy": entropy, "q_mean": jnp.mean(q)}
        return SACState(actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt), metrics
