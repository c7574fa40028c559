"""What every multi-task environment adapter returns, so the training loop serves them all."""

from typing import NamedTuple

import jax


class EnvStep(NamedTuple):
    """One step of every environment, leaves `[T, E, ...]` (tasks, environments per task).

    `obs` is what the agent acts on next: after an episode ends it is already the first
    observation of the new episode. `next_obs` is the true next observation of this step (the
    final one at episode ends), which is what the replay buffer stores for the bootstrap.
    """

    obs: jax.Array
    reward: jax.Array  # float32
    terminated: jax.Array  # bool: no bootstrap
    truncated: jax.Array  # bool: time limit, bootstrap from next_obs
    next_obs: jax.Array
