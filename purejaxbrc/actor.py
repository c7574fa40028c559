"""Tanh-squashed diagonal Gaussian actor (BRC.md, "Actor")."""

import equinox as eqx
import jax
import jax.numpy as jnp

from purejaxbrc.bronet import BroNet, Dense

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


class TanhGaussianActor(eqx.Module):
    torso: BroNet
    mean_head: Dense
    log_std_head: Dense

    def __init__(self, key, in_features: int, action_dim: int, width: int = 256, depth: int = 1):
        k1, k2, k3 = jax.random.split(key, 3)
        self.torso = BroNet(k1, in_features, width, depth)
        self.mean_head = Dense(k2, width, action_dim)  # gain sqrt(2), as the reference
        self.log_std_head = Dense(k3, width, action_dim, gain=1.0)

    def __call__(self, x):
        """Pre-tanh mean and log-std; the log-std is squashed smoothly into [-10, 2]."""
        h = self.torso(x)
        raw = self.log_std_head(h)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (1.0 + jnp.tanh(raw))
        return self.mean_head(h), log_std

    def sample(self, x, key):
        """A reparameterised action in (-1, 1) and its log-probability summed over dims."""
        mean, log_std = self(x)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
        log_prob = gaussian_log_prob(u, mean, log_std) - tanh_log_det_jacobian(u)
        return jnp.tanh(u), jnp.sum(log_prob, axis=-1)

    def deterministic(self, x):
        mean, _ = self(x)
        return jnp.tanh(mean)


def gaussian_log_prob(u, mean, log_std):
    z = (u - mean) * jnp.exp(-log_std)
    return -0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)


def tanh_log_det_jacobian(u):
    """`log(1 - tanh(u)^2)` written so that it stays finite for large |u|."""
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
