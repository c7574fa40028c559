"""BRC's continuous agent: SAC with a categorical critic ensemble (BRC.md, "Continuous control").

`SACAgent` holds only static hyperparameters; every method is a pure function of its inputs,
so the training loop can jit, scan and vmap it freely.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxbrc import categorical
from purejaxbrc.actor import TanhGaussianActor
from purejaxbrc.critic import CategoricalCritic
from purejaxbrc.normalizer import entropy_allowance


class SACState(NamedTuple):
    actor: TanhGaussianActor
    critic: CategoricalCritic
    target_critic: CategoricalCritic
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


def polyak(online, target, tau: float):
    """`tau * online + (1 - tau) * target`, leaf by leaf."""
    return jax.tree.map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


class SACAgent:
    def __init__(self, *, obs_size: int, action_size: int, num_tasks: int,
                 critic_width: int = 4096, critic_depth: int = 2, num_critics: int = 2,
                 actor_width: int = 256, actor_depth: int = 1, num_atoms: int = 101,
                 v_max: float = 10.0, embed_dim: int = 32, embed_norm: str = "l2",
                 gamma: float = 0.99, tau: float = 0.005, lr: float = 3e-4,
                 weight_decay: float = 1e-4, alpha_lr: float = 3e-4, alpha_b1: float = 0.5,
                 init_alpha: float = 0.1, critic_matmul_dtype: str = "float32"):
        self.obs_size, self.action_size, self.num_tasks = obs_size, action_size, num_tasks
        self.critic_width, self.critic_depth, self.num_critics = critic_width, critic_depth, num_critics
        self.actor_width, self.actor_depth = actor_width, actor_depth
        self.num_atoms, self.v_max = num_atoms, v_max
        self.embed_dim, self.embed_norm = embed_dim, embed_norm
        self.gamma, self.tau, self.init_alpha = gamma, tau, init_alpha
        self.target_entropy = -action_size / 2.0
        self.compute_dtype = None if critic_matmul_dtype == "float32" else jnp.dtype(critic_matmul_dtype)
        self.net_opt = optax.adamw(lr, weight_decay=weight_decay, eps=1e-8)
        self.alpha_opt = optax.adam(alpha_lr, b1=alpha_b1)
        self.atoms = categorical.support(num_atoms, v_max)

    # -- construction ------------------------------------------------------------------------
    def init(self, key) -> SACState:
        k_actor, k_critic = jax.random.split(key)
        critic = CategoricalCritic(
            k_critic, self.obs_size + self.action_size, self.critic_width, self.critic_depth,
            self.num_atoms, self.num_critics, self.num_tasks, self.embed_dim, self.embed_norm)
        actor_in = self.obs_size + critic.task_features(jnp.zeros((), jnp.int32)).shape[-1]
        actor = TanhGaussianActor(k_actor, actor_in, self.action_size, self.actor_width, self.actor_depth)
        log_alpha = jnp.log(jnp.float32(self.init_alpha))
        return SACState(actor=actor, critic=critic, target_critic=critic, log_alpha=log_alpha,
                        actor_opt=self.net_opt.init(actor), critic_opt=self.net_opt.init(critic),
                        alpha_opt=self.alpha_opt.init(log_alpha))

    # -- acting ------------------------------------------------------------------------------
    def _actor_input(self, critic, obs, task_ids):
        # The actor reads the online critic's embedding but never trains it.
        return jnp.concatenate([obs, jax.lax.stop_gradient(critic.task_features(task_ids))], -1)

    @property
    def action_shape(self):
        return (self.action_size,)

    def explore(self, state: SACState, obs, task_ids, key, iteration=None):
        del iteration  # SAC explores through its own entropy; no schedule
        action, _ = state.actor.sample(self._actor_input(state.critic, obs, task_ids), key)
        return action

    def greedy(self, state: SACState, obs, task_ids):
        return state.actor.deterministic(self._actor_input(state.critic, obs, task_ids))

    def random_action(self, key, task_ids):
        """Uniform in [-1, 1]^A_max for every environment (the warm-up policy)."""
        return jax.random.uniform(key, task_ids.shape + self.action_shape, jnp.float32, -1.0, 1.0)

    def reward_allowance(self, state: SACState):
        return entropy_allowance(jnp.exp(state.log_alpha), self.action_size, self.gamma)

    # -- learning ----------------------------------------------------------------------------
    def _mean_probs(self, critic, obs, action, task_ids):
        logits = critic(obs, action, task_ids, self.compute_dtype)  # [C, B, N]
        return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)

    def critic_target(self, state: SACState, batch, task_ids, reward, key):
        """The projected target distribution `[B, N]` (stop-gradient by construction)."""
        alpha = jnp.exp(state.log_alpha)
        next_action, next_log_prob = state.actor.sample(
            self._actor_input(state.critic, batch.next_obs, task_ids), key)
        probs = self._mean_probs(state.target_critic, batch.next_obs, next_action, task_ids)
        discount = self.gamma * (1.0 - batch.terminated.astype(jnp.float32))  # truncation bootstraps
        # r + d (z - alpha log pi) as a [B, 2] x [2, N] product: as a broadcast, XLA:CPU fuses the
        # policy sample into the per-atom loop and recomputes it for each of the N atoms. Full f32
        # precision: GPUs would otherwise round the operands to TF32.
        per_row = jnp.stack([reward - discount * alpha * next_log_prob, discount], axis=-1)
        shifted = jnp.matmul(per_row, jnp.stack([jnp.ones_like(self.atoms), self.atoms]),
                             precision=jax.lax.Precision.HIGHEST)
        return jax.lax.stop_gradient(categorical.project(shifted, probs, self.num_atoms, self.v_max))

    def update(self, state: SACState, batch, task_ids, reward_scale, key):
        """One gradient step: critic, target critic, actor, temperature (in that order)."""
        k_target, k_actor = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        reward = batch.reward * reward_scale[task_ids]
        target = self.critic_target(state, batch, task_ids, reward, k_target)

        def critic_loss(critic):
            logits = critic(batch.obs, batch.action, task_ids, self.compute_dtype)
            per_critic = jnp.mean(categorical.cross_entropy(logits, target[None]), axis=-1)
            return jnp.sum(per_critic)

        c_loss, c_grads = jax.value_and_grad(critic_loss)(state.critic)
        c_updates, critic_opt = self.net_opt.update(c_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, c_updates)
        target_critic = polyak(critic, state.target_critic, self.tau)

        def actor_loss(actor):
            action, log_prob = actor.sample(self._actor_input(critic, batch.obs, task_ids), k_actor)
            q = categorical.expectation(self._mean_probs(critic, batch.obs, action, task_ids), self.atoms)
            return jnp.mean(alpha * log_prob - q), (log_prob, q)

        (a_loss, (log_prob, q)), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
        a_updates, actor_opt = self.net_opt.update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, a_updates)

        entropy = -jnp.mean(log_prob)
        alpha_grad = jax.grad(lambda la: jnp.exp(la) * (entropy - self.target_entropy))(state.log_alpha)
        al_updates, alpha_opt = self.alpha_opt.update(alpha_grad, state.alpha_opt, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, al_updates)

        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha": alpha,
                   "entropy": entropy, "q_mean": jnp.mean(q)}
        return SACState(actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt), metrics
