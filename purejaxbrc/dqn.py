"""BRC's discrete agent: categorical double Q-learning from pixels (BRC.md, "Discrete actions
from pixels").

Network: conv encoder (3x3 VALID convs + ReLU, then flatten; vector observations skip it) ->
`concat(features, task_embedding)` -> BroNet(width, depth) -> `Dense(A_max * num_atoms)` logits,
one categorical value distribution per action.

Target: the greedy next action from the online network's expected values (double Q), its
distribution from the Polyak target network, atoms shifted by `r_norm + gamma * (1 - terminated)
* z` (truncation bootstraps), the C51 projection, cross-entropy on the taken action's logits.
Actions beyond a task's own count are masked out of every argmax and every random choice.

`DQNAgent` satisfies `purejaxbrc.agent.Agent`, so `purejaxbrc.train` runs it as it runs SAC:
static settings only, pure methods, hyperparameters as `hp` (every name of `DQNConfig.SWEEPABLE`).
"""

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from purejaxbrc import bronet, categorical, normalizer
from purejaxbrc.agent import AgentConfig, masked, polyak
from purejaxbrc.bronet import BroNet, Dense
from purejaxbrc.config import ConfigError, positive, require
from purejaxbrc.embedding import TaskEmbedding
from purejaxbrc.orthogonal import orthogonal
from purejaxbrc.padding import valid_action_mask


@dataclass(frozen=True)
class DQNConfig(AgentConfig):
    """The discrete agent (BRC.md, "Discrete actions from pixels"): the shared critic fields
    (`AgentConfig`), the conv encoder and epsilon-greedy exploration."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = AgentConfig.SWEEPABLE + ("eps_start", "eps_end", "eps_decay")

    conv_channels: tuple[int, ...] = (16,)
    """Output channels of each 3x3 VALID conv + ReLU (image observations only)."""
    eps_start: float = 1.0
    """Exploration epsilon at iteration 0 (warm-up iterations count)."""
    eps_end: float = 0.05
    eps_decay: int = 10_000
    """Iterations over which epsilon decays linearly from eps_start to eps_end."""

    def validate(self) -> None:
        super().validate()
        positive(self, "eps_decay")
        for name in ("eps_start", "eps_end"):
            require(self, name, lambda v: 0 <= v <= 1, "in [0, 1]")
        if any(c <= 0 for c in self.conv_channels):
            raise ConfigError(f"--conv-channels must all be > 0, got {' '.join(map(str, self.conv_channels))}")


class Conv3x3(eqx.Module):
    """A 3x3, stride-1, VALID convolution over `[..., H, W, C]` with an orthogonal kernel."""

    kernel: jax.Array  # [3, 3, in, out]
    bias: jax.Array  # [out]

    def __init__(self, key, in_channels: int, out_channels: int, gain: float = math.sqrt(2.0)):
        self.kernel = orthogonal(key, (9 * in_channels, out_channels), gain).reshape(
            3, 3, in_channels, out_channels)
        self.bias = jnp.zeros((out_channels,), jnp.float32)

    def __call__(self, x):
        batch = x.shape[:-3]
        y = jax.lax.conv_general_dilated(
            x.reshape((-1,) + x.shape[-3:]), self.kernel, window_strides=(1, 1), padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y + self.bias).reshape(batch + y.shape[1:])


class QNetwork(eqx.Module):
    """Observations `[B, *obs_shape]` and task ids `[B]` -> logits `[B, A_max, num_atoms]`."""

    convs: tuple[Conv3x3, ...]
    embedding: Optional[TaskEmbedding]
    torso: BroNet
    head: Dense
    num_actions: int = eqx.field(static=True)
    num_atoms: int = eqx.field(static=True)
    obs_rank: int = eqx.field(static=True)

    def __init__(self, key, obs_shape, num_actions: int, num_atoms: int, width: int, depth: int,
                 conv_channels=(16,), num_tasks: int = 1, embed_dim: int = 32,
                 embed_norm: str = "l2", embedding: bool | None = None):
        k_conv, k_emb, k_torso, k_head = jax.random.split(key, 4)
        obs_shape = tuple(obs_shape)
        self.obs_rank = len(obs_shape)
        if self.obs_rank == 3:  # images; vectors skip the encoder
            channels = (obs_shape[-1],) + tuple(conv_channels)
            self.convs = tuple(Conv3x3(k, cin, cout) for k, cin, cout in zip(
                jax.random.split(k_conv, len(conv_channels)), channels[:-1], channels[1:]))
            h, w = obs_shape[0] - 2 * len(conv_channels), obs_shape[1] - 2 * len(conv_channels)
            if h < 1 or w < 1:
                raise ValueError(f"{len(conv_channels)} 3x3 convs do not fit a {obs_shape[:2]} image")
            features = h * w * channels[-1]
        else:
            self.convs = ()
            features = math.prod(obs_shape)
        # Single-task runs use no embedding (BRC.md) unless asked to (a transferred model).
        use_embedding = num_tasks > 1 if embedding is None else embedding
        self.embedding = TaskEmbedding(k_emb, num_tasks, embed_dim, embed_norm) if use_embedding else None
        self.torso = BroNet(k_torso, features + (embed_dim if use_embedding else 0), width, depth)
        self.head = Dense(k_head, width, num_actions * num_atoms)  # gain sqrt(2), as the critic's
        self.num_actions, self.num_atoms = num_actions, num_atoms

    def features(self, obs):
        x = obs.astype(jnp.float32)  # observations may be stored as uint8
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return x.reshape(x.shape[:-self.obs_rank] + (-1,))

    def __call__(self, obs, task_ids, compute_dtype=None):
        x = self.features(obs)
        if self.embedding is not None:
            x = jnp.concatenate([x, self.embedding(task_ids)], axis=-1)
        logits = self.head(self.torso(x, compute_dtype), compute_dtype)
        return logits.reshape(logits.shape[:-1] + (self.num_actions, self.num_atoms))


class DQNState(NamedTuple):
    net: QNetwork
    target_net: QNetwork
    opt: optax.OptState


def linear_epsilon(iteration, start: float, end: float, decay: int):
    """`start` at iteration 0, linearly to `end` at `decay`, then constant."""
    frac = jnp.clip(jnp.asarray(iteration, jnp.float32) / decay, 0.0, 1.0)
    return start + frac * (end - start)


class DQNAgent:
    def __init__(self, config: DQNConfig, *, obs_shape, action_counts, num_tasks: int,
                 num_actions: int | None = None, embedding: bool | None = None, trainable=None):
        """`num_actions`: the head's action count (default the largest task's; a transferred
        model keeps its own); `embedding`, `trainable`: as SACAgent's."""
        if len(action_counts) != num_tasks:
            raise ValueError(f"{len(action_counts)} action counts for {num_tasks} tasks")
        self.config = config
        self.obs_shape, self.num_tasks = tuple(obs_shape), num_tasks
        self.action_counts = tuple(int(a) for a in action_counts)
        self.num_actions = num_actions or max(self.action_counts)  # A_max
        self.embedding, self.trainable = embedding, trainable
        self.compute_dtype = config.compute_dtype

    @staticmethod
    def _opt(hp):  # built per call: a swept learning rate is an array
        return optax.adamw(hp["lr"], weight_decay=hp["weight_decay"], eps=1e-8)

    # -- construction ------------------------------------------------------------------------
    def init(self, key, hp) -> DQNState:
        c = self.config
        net = QNetwork(key, self.obs_shape, self.num_actions, c.num_atoms, c.critic_width,
                       c.critic_depth, c.conv_channels, self.num_tasks, c.embed_dim, c.embed_norm,
                       self.embedding)
        return DQNState(net=net, target_net=net, opt=self._opt(hp).init(net))

    # -- values and masks --------------------------------------------------------------------
    def mask(self, task_ids):
        """`[..., A_max]` bool: the actions that exist in each environment's task."""
        return valid_action_mask(self.action_counts, self.num_actions)[task_ids]

    def q_values(self, net, obs, task_ids, v_max):
        """Expected values `[B, A_max]`, padded actions set to -inf."""
        probs = jax.nn.softmax(net(obs, task_ids, self.compute_dtype), axis=-1)
        atoms = categorical.support(self.config.num_atoms, v_max)
        return jnp.where(self.mask(task_ids), categorical.expectation(probs, atoms), -jnp.inf)

    # -- acting ------------------------------------------------------------------------------
    @property
    def action_shape(self):
        return ()

    def greedy(self, state: DQNState, obs, task_ids, hp):
        return jnp.argmax(self.q_values(state.net, obs, task_ids, hp["v_max"]), axis=-1).astype(jnp.int32)

    def random_action(self, key, task_ids):
        """Uniform over each environment's own actions (the warm-up policy)."""
        counts = jnp.asarray(self.action_counts, jnp.int32)[task_ids]
        return jax.random.randint(key, task_ids.shape, 0, counts, dtype=jnp.int32)

    def explore(self, state: DQNState, obs, task_ids, key, iteration, hp):
        """Epsilon-greedy, epsilon decaying linearly with the iteration."""
        k_coin, k_random = jax.random.split(key)
        epsilon = linear_epsilon(iteration, hp["eps_start"], hp["eps_end"], hp["eps_decay"])
        explore = jax.random.uniform(k_coin, task_ids.shape) < epsilon
        return jnp.where(explore, self.random_action(k_random, task_ids),
                         self.greedy(state, obs, task_ids, hp))

    def reward_scale(self, state: DQNState, norm, hp):
        del state  # no entropy bonus to make room for
        return normalizer.scale(norm, hp["v_max"], jnp.float32(0.0))

    @staticmethod
    def discount(hp):
        return hp["gamma"]

    # -- learning ----------------------------------------------------------------------------
    def update_flops(self, batch: int) -> float:
        """FLOPs of the matmuls and convolutions of one `update` on `batch` transitions, from
        the network shapes (2 per multiply-accumulate, a backward pass twice the forward): the
        online and target networks on next_obs (forward), the online network on obs (forward and
        backward)."""
        c = self.config
        macs, features = 0, math.prod(self.obs_shape)
        if len(self.obs_shape) == 3:
            h, w = self.obs_shape[:2]
            channels = (self.obs_shape[-1],) + tuple(c.conv_channels)
            for cin, cout in zip(channels[:-1], channels[1:]):
                h, w = h - 2, w - 2
                macs += h * w * 9 * cin * cout
            features = h * w * channels[-1]
        embed = c.embed_dim if (self.num_tasks > 1 if self.embedding is None else self.embedding) else 0
        macs += bronet.macs(features + embed, c.critic_width, c.critic_depth) + c.critic_width * self.num_actions * c.num_atoms
        return float(batch * 2 * macs * (1 + 1 + 3))

    def target_distribution(self, state: DQNState, batch, task_ids, reward, hp):
        """The projected double-Q target `[B, num_atoms]` (stop-gradient by construction)."""
        num_atoms, v_max = self.config.num_atoms, hp["v_max"]
        next_action = jnp.argmax(self.q_values(state.net, batch.next_obs, task_ids, v_max), axis=-1)
        next_logits = state.target_net(batch.next_obs, task_ids, self.compute_dtype)
        next_probs = jax.nn.softmax(
            jnp.take_along_axis(next_logits, next_action[:, None, None], axis=1)[:, 0], axis=-1)
        discount = hp["gamma"] * (1.0 - batch.terminated.astype(jnp.float32))  # truncation bootstraps
        shifted = reward[:, None] + discount[:, None] * categorical.support(num_atoms, v_max)
        return jax.lax.stop_gradient(categorical.project(shifted, next_probs, num_atoms, v_max))

    def update(self, state: DQNState, batch, task_ids, reward_scale, key, hp):
        """One gradient step on the online network, then the Polyak target update."""
        del key  # the update is deterministic given the batch
        reward = batch.reward * reward_scale[task_ids]
        target = self.target_distribution(state, batch, task_ids, reward, hp)
        action = batch.action.astype(jnp.int32)

        def loss_fn(net):
            logits = net(batch.obs, task_ids, self.compute_dtype)
            taken = jnp.take_along_axis(logits, action[:, None, None], axis=1)[:, 0]
            return jnp.mean(categorical.cross_entropy(taken, target)), taken

        (loss, taken), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.net)
        updates, opt = self._opt(hp).update(grads, state.opt, state.net)
        mask = self.trainable(state.net) if self.trainable else None
        net = optax.apply_updates(state.net, masked(updates, mask))
        atoms = categorical.support(self.config.num_atoms, hp["v_max"])
        q = categorical.expectation(jax.nn.softmax(taken, axis=-1), atoms)
        metrics = {"critic_loss": loss, "q_mean": jnp.mean(q)}
        return DQNState(net, polyak(net, state.target_net, hp["tau"], mask), opt), metrics
