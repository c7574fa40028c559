"""The training program: `make_train(run, env, eval_env, agent)` -> jittable pieces, each for
one member of the population (the host loop vmaps and shards them: purejaxbrc.run).

Data flows one way: env -> transition -> buffer -> batch -> update -> params -> policy.

- `init(key, hparams)`: a fresh `TrainState` for one member. `hparams` holds the member's
  swept hyperparameters (`{}` without a sweep: every hyperparameter is then a constant).
- `chunk(state, it, learn_from=None)`: `env.refill` (fresh initial states for the episodes
  that ended, off the per-step path; MJX environments start here, as `init` holds no
  physics), then `config.chunk` iterations in one `lax.scan`. One
  iteration: act (uniform random during warm-up), step every task, insert, update the reward
  normaliser, then `utd` gradient steps from iteration `learn_from` on (default: the end of
  warm-up; later after a resume whose replay buffers were not checkpointed, so they refill
  first). `it` and `learn_from` are passed unbatched, so under a vmap over seeds the warm-up
  switch and the gradient-step count stay unbatched.
- `evaluate(state, iteration)`: deterministic policy, `eval_episodes` per task -> `[T]` means,
  on environments seeded by `fold_in(eval_key, iteration)`.
- `rollout(state, iteration, record=None)`: the episodes `evaluate` averages, each return, and
  what `record` keeps of every step (purejaxbrc.render draws them).
- `train(key, hparams)`: the whole run as one pure function (no host in the loop).

The host loop that calls these lives in `purejaxbrc.run`.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purejaxbrc import backend, buffer, normalizer
from purejaxbrc.agent import Agent
from purejaxbrc.buffer import Transition
from purejaxbrc.config import RunConfig


class TrainState(NamedTuple):
    agent: Any
    buffer: buffer.BufferState
    norm: normalizer.NormalizerState
    env: Any
    obs: jax.Array  # [T, E, ...] observation to act on (MJX: zeros until the first chunk's refill)
    key: jax.Array
    eval_key: jax.Array  # evaluation environments are seeded apart from training ones
    hparams: dict  # the member's swept hyperparameters: float32 scalars by name


class Trainer(NamedTuple):
    """One member's pure functions (see the module docstring)."""

    init: Callable[[jax.Array, dict], TrainState]  # (key, hparams) -> state
    chunk: Callable[..., tuple[TrainState, dict]]  # (state, it, learn_from=None) -> (state, metrics)
    evaluate: Callable[[TrainState, jax.Array], jax.Array]  # (state, iteration) -> returns [T]
    train: Callable[[jax.Array, dict], tuple[TrainState, jax.Array]]  # (key, hparams) -> (state, returns [evals, T])
    rollout: Callable[..., tuple[jax.Array, Any]]  # (state, iteration, record=None) -> (returns [T, E], trace)


def _flat(x):
    return x.reshape((-1,) + x.shape[2:])


def update_loop_may_skip() -> bool:
    """Whether the per-iteration update is a loop of 0 or `utd` trips (CPU) rather than a
    `lax.cond` around `utd` trips (elsewhere); both give the same numbers."""
    return backend.is_cpu()


def make_train(config: RunConfig, env, eval_env, agent: Agent) -> Trainer:
    """`config`: the loop; `env`, `eval_env`: multi-task environments (purejaxbrc.envs)."""
    num_tasks, num_envs = env.num_tasks, env.num_envs
    task_ids = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32)[:, None], (num_tasks, num_envs))

    def hp_of(state: TrainState) -> dict:
        return agent.config.hyperparameters(state.hparams)

    def init(key, hparams) -> TrainState:
        hparams = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
        k_agent, k_env, k_loop = jax.random.split(key, 3)
        agent_state = agent.init(k_agent, agent.config.hyperparameters(hparams))
        env_state, obs = env.init(k_env)  # MJX: started by the first chunk's refill
        example = Transition(obs=obs[0, 0], action=agent.random_action(k_loop, task_ids)[0, 0],
                             reward=jnp.float32(0), terminated=jnp.bool_(False),
                             truncated=jnp.bool_(False), next_obs=obs[0, 0])
        return TrainState(
            agent=agent_state,
            buffer=buffer.init(example, num_tasks, config.capacity),
            norm=normalizer.init(num_tasks, num_envs, env.episode_length),
            env=env_state, obs=obs, key=k_loop,
            eval_key=jax.random.fold_in(key, 0x5EED), hparams=hparams,
        )

    def sample_and_update(agent_state, buf, norm, key, hp):
        k_batch, k_update = jax.random.split(key)
        batch, batch_tasks = buffer.sample(buf, k_batch, config.batch_size)
        scale = agent.reward_scale(agent_state, norm, hp)
        return agent.update(agent_state, batch, batch_tasks, scale, k_update, hp)

    def gradient_steps(agent_state, buf, norm, key, hp, steps, sums):
        """`steps` gradient steps (traced: `utd` once learning, 0 before) -> the agent state and
        `sums` plus the sum of their metrics. On CPU a loop whose trip count may be zero: XLA:CPU
        copies the agent state through a `lax.cond`. Elsewhere a `lax.cond` around a loop of
        known length: on GPU a loop of unknown length reads its condition on the host every
        trip (not yet measured there)."""
        keys = jax.random.split(key, config.utd)

        def one(i, carry):
            agent_state, sums = carry
            agent_state, metrics = sample_and_update(agent_state, buf, norm, keys[i], hp)
            return agent_state, jax.tree.map(jnp.add, sums, metrics)

        if update_loop_may_skip():
            return jax.lax.fori_loop(0, steps, one, (agent_state, sums))
        return jax.lax.cond(steps > 0, lambda: jax.lax.fori_loop(0, config.utd, one, (agent_state, sums)),
                            lambda: (agent_state, sums))

    def iteration(carry, _):
        state, it, learn_from, sums, count = carry
        hp = hp_of(state)
        key, k_act, k_env, k_update = jax.random.split(state.key, 4)
        action = jax.lax.cond(
            it < config.warmup_iterations,
            lambda: agent.random_action(k_act, task_ids),
            lambda: agent.explore(state.agent, _flat(state.obs), _flat(task_ids), k_act, it, hp)
            .reshape(task_ids.shape + agent.action_shape),
        )
        env_state, step = env.step(state.env, action, k_env)
        buf = buffer.add(state.buffer, Transition(
            obs=state.obs, action=action, reward=step.reward, terminated=step.terminated,
            truncated=step.truncated, next_obs=step.next_obs))
        norm = normalizer.update(state.norm, step.reward, step.terminated, step.truncated, agent.discount(hp))
        steps = jnp.where(it < learn_from, 0, config.utd).astype(jnp.int32)
        agent_state, sums = gradient_steps(state.agent, buf, norm, k_update, hp, steps, sums)
        new = state._replace(agent=agent_state, buffer=buf, norm=norm, env=env_state, obs=step.obs, key=key)
        return (new, it + 1, learn_from, sums, count + steps), None

    def chunk(state: TrainState, it, learn_from=None):
        """`config.chunk` iterations from `it`; gradient steps from iteration `learn_from` on.
        Metrics: the mean over the chunk's gradient steps, and their count `gradient_steps`
        (with none, every mean reads 0)."""
        learn_from = config.warmup_iterations if learn_from is None else learn_from
        # Once per chunk, off the per-step path: environments redraw the initial states their
        # ended episodes used (MJX's reset pool), and the first chunk starts MJX's episodes.
        key, k_refill = jax.random.split(state.key)
        env_state, obs = env.refill(state.env, state.obs, k_refill)
        state = state._replace(env=env_state, obs=obs, key=key)
        it, learn_from = jnp.asarray(it, jnp.int32), jnp.asarray(learn_from, jnp.int32)
        shapes = jax.eval_shape(sample_and_update, state.agent, state.buffer, state.norm, state.key, hp_of(state))[1]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        carry = (state, it, learn_from, zeros, jnp.int32(0))
        (state, _, _, sums, count), _ = jax.lax.scan(iteration, carry, None, length=config.chunk)
        means = jax.tree.map(lambda x: x / jnp.maximum(count, 1).astype(x.dtype), sums)
        return state, {**means, "gradient_steps": count}

    eval_ids = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32)[:, None],
                                (num_tasks, eval_env.num_envs))

    def rollout(state: TrainState, iteration, record=None):
        """The deterministic policy's episodes, `eval_env.num_envs` per task, on environments
        seeded by `fold_in(eval_key, iteration)` -> `(returns [T, E], trace)`. Reads
        `state.agent`, `state.eval_key` and `state.hparams` only. With `record` (`(env_state,
        obs) -> pytree`), `trace` is `(record of the reset, records of every step [steps, ...],
        alive [steps, T, E])`: a step records the state it reached and its true next
        observation, and `alive` marks the steps inside the episode. Without, `trace` is None."""
        agent_state, hp = state.agent, hp_of(state)
        k_reset, k_steps = jax.random.split(jax.random.fold_in(state.eval_key, iteration))
        env_state, obs = eval_env.reset(k_reset)

        def body(carry, k):
            env_state, obs, ret, active = carry
            action = agent.greedy(agent_state, _flat(obs), _flat(eval_ids), hp)
            env_state, step = eval_env.step(env_state, action.reshape(eval_ids.shape + agent.action_shape), k)
            ret = ret + jnp.where(active, step.reward, 0.0)
            out = None if record is None else (record(env_state, step.next_obs), active)
            active = active & ~(step.terminated | step.truncated)
            return (env_state, step.obs, ret, active), out

        init_carry = (env_state, obs, jnp.zeros(eval_ids.shape, jnp.float32), jnp.ones(eval_ids.shape, bool))
        (_, _, ret, _), steps = jax.lax.scan(body, init_carry, jax.random.split(k_steps, eval_env.episode_length))
        return ret, None if record is None else (record(env_state, obs),) + steps

    def evaluate(state: TrainState, iteration):
        """Mean return per task `[T]` of the deterministic policy, `eval_episodes` per task, on
        environments seeded by `fold_in(eval_key, iteration)` (`rollout`)."""
        return jnp.mean(rollout(state, iteration)[0], axis=-1)

    def train(key, hparams):
        """The whole run, host-free: returns the final state and `[evals, T]` eval returns."""
        num_evals = config.total_iterations // config.eval_every
        chunks_per_eval = config.eval_every // config.chunk

        def one_eval_period(carry, _):
            state, it = carry
            state, it = jax.lax.fori_loop(
                0, chunks_per_eval, lambda _, c: (chunk(c[0], c[1])[0], c[1] + config.chunk), (state, it))
            return (state, it), evaluate(state, it)

        state = init(key, hparams)
        (state, _), returns = jax.lax.scan(one_eval_period, (state, jnp.int32(0)), None, length=num_evals)
        return state, returns

    return Trainer(init=init, chunk=chunk, evaluate=evaluate, train=train, rollout=rollout)
