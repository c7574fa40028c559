"""The same BRC training, unfused: shaped like the authors' public code.

The environment is stepped from Python (one jitted call per step, its results pulled to the
host as a gym environment would hand them over), the replay buffer is a NumPy ring on the
host, and every gradient step is one jitted `agent.update` call on a batch copied to the
device. Agent, environments, normaliser and hyperparameters are purejaxbrc's own, so the
difference to the fused loop is only where the loop lives.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from purejaxbrc import normalizer
from purejaxbrc.buffer import Transition


class HostBuffer:
    """A NumPy ring per task with one shared write pointer (as `purejaxbrc.buffer`)."""

    def __init__(self, example: Transition, num_tasks: int, capacity: int):
        self.data = {f: np.zeros((num_tasks, capacity) + np.shape(x), np.asarray(x).dtype)
                     for f, x in example._asdict().items()}
        self.capacity, self.ptr, self.size = capacity, 0, 0

    def add(self, items: Transition):  # leaves [T, E, ...]
        num_new = np.shape(items.reward)[1]
        idx = (self.ptr + np.arange(num_new)) % self.capacity
        for f, x in items._asdict().items():
            self.data[f][:, idx] = x
        self.ptr = (self.ptr + num_new) % self.capacity
        self.size = min(self.size + num_new, self.capacity)

    def sample(self, rng: np.random.Generator, batch_size: int):
        num_tasks = self.data["reward"].shape[0]
        flat = rng.integers(0, num_tasks * self.size, batch_size)
        task, pos = flat // self.size, flat % self.size
        return Transition(**{f: v[task, pos] for f, v in self.data.items()}), task.astype(np.int32)


def measure(config, env, agent, iterations: int, warmup: int) -> dict:
    """Run `warmup` random-action iterations, then `iterations` learning ones (each: act, step,
    insert, normaliser update, `config.utd` gradient steps); time the learning ones after one
    untimed iteration that compiles every call. `config`: the loop's RunConfig; the
    hyperparameters are `agent.config`'s (constants, as in the fused loop without a sweep)."""
    num_tasks, num_envs = env.num_tasks, env.num_envs
    task_ids = np.broadcast_to(np.arange(num_tasks, dtype=np.int32)[:, None], (num_tasks, num_envs))
    flat_tasks = jnp.asarray(task_ids.reshape(-1))
    key = jax.random.PRNGKey(config.seed)
    key, k_agent, k_env = jax.random.split(key, 3)
    rng = np.random.default_rng(config.seed)

    hp = agent.config.hyperparameters({})
    agent_state = agent.init(k_agent, hp)
    step_fn = jax.jit(env.step)
    explore_fn = jax.jit(lambda s, o, t, k: agent.explore(s, o, t, k, 0, hp))
    update_fn = jax.jit(lambda s, b, t, sc, k: agent.update(s, b, t, sc, k, hp))
    refill_fn = jax.jit(env.refill)
    norm_update = jax.jit(normalizer.update, static_argnums=4)
    scale_fn = jax.jit(lambda norm, s: agent.reward_scale(s, norm, hp))

    env_state, obs = jax.jit(env.reset)(k_env)
    obs = np.asarray(obs)
    example = Transition(obs=obs[0, 0], action=np.zeros(agent.action_shape, np.float32),
                         reward=np.float32(0), terminated=np.bool_(False), truncated=np.bool_(False),
                         next_obs=obs[0, 0])
    buf = HostBuffer(example, num_tasks, min(config.capacity, (warmup + iterations + 1) * num_envs))
    norm = normalizer.init(num_tasks, num_envs, env.episode_length)

    def one_iteration(learning: bool):
        nonlocal key, env_state, obs, norm, agent_state
        key, k_act, k_env = jax.random.split(key, 3)
        if learning:
            action = np.asarray(explore_fn(agent_state, jnp.asarray(obs.reshape((-1,) + obs.shape[2:])),
                                           flat_tasks, k_act)).reshape(task_ids.shape + agent.action_shape)
        else:
            action = rng.uniform(-1.0, 1.0, task_ids.shape + agent.action_shape).astype(np.float32)
        env_state, step = step_fn(env_state, jnp.asarray(action), k_env)
        step = jax.device_get(step)
        buf.add(Transition(obs=obs, action=action, reward=step.reward, terminated=step.terminated,
                           truncated=step.truncated, next_obs=step.next_obs))
        norm = norm_update(norm, step.reward, step.terminated, step.truncated, agent.discount(hp))
        obs = step.obs
        if (step.terminated | step.truncated).any():  # a host loop resets what ended
            key, k_refill = jax.random.split(key)
            env_state, _ = refill_fn(env_state, obs, k_refill)  # obs: already the new episodes'
        if learning:
            scale = scale_fn(norm, agent_state)
            for _ in range(config.utd):
                key, k_update = jax.random.split(key)
                batch, batch_tasks = buf.sample(rng, config.batch_size)
                agent_state, metrics = update_fn(agent_state, batch, batch_tasks, scale, k_update)
            jax.block_until_ready(agent_state)  # keep the host in lockstep, as a Python loop does

    for _ in range(warmup):
        one_iteration(False)
    one_iteration(True)  # compiles explore and update
    t0 = time.perf_counter()
    for _ in range(iterations):
        one_iteration(True)
    run_s = time.perf_counter() - t0
    return dict(iterations=iterations, run_s=run_s, iterations_per_s=iterations / run_s,
                env_steps_per_s=iterations * num_tasks * num_envs / run_s,
                grad_steps_per_s=iterations * config.utd / run_s)
