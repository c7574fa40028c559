"""The training program: `make_train(run, env, eval_env, agent)` -> jittable pieces, each for
one member of the population (the host loop vmaps and shards them: purejaxbrc.run).

Data flows one way: env -> transition -> buffer -> batch -> update -> params -> policy.

- `init(key, hparams)`: a fresh `TrainState` for one member. `hparams` holds the member's
  swept hyperparameters (`{}` without a sweep: every hyperparameter is then a constant).
- `chunk(state, it, learn_from=None)`: `env.refill` (fresh initial states for the episodes
  that ended, off the per-step path), then `config.chunk` iterations: a loop of acting-only
  iterations up to `learn_from`, then a loop of learning ones. One iteration: act (uniform
  random during warm-up), step every task, insert, update the reward normaliser, and in the
  learning loop `utd` gradient steps. `learn_from` defaults to the end of warm-up; it is later
  after a resume whose replay buffers were not checkpointed, so they refill first. `it` and
  `learn_from` are passed unbatched, so under a vmap over seeds the loops' bounds and the
  warm-up switch stay unbatched.
- `evaluate(state, iteration)`: deterministic policy, `eval_episodes` per task -> `[T]` means,
  on environments seeded by `fold_in(eval_key, iteration)`.
- `train(key, hparams)`: the whole run as one pure function (no host in the loop).

The host loop that calls these lives in `purejaxbrc.run`.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxbrc import buffer, normalizer
from purejaxbrc.buffer import Transition
from purejaxbrc.sweep import hyperparameters


class TrainState(NamedTuple):
    agent: Any
    buffer: buffer.BufferState
    norm: normalizer.NormalizerState
    env: Any
    obs: jax.Array  # [T, E, ...] observation to act on
    key: jax.Array
    eval_key: jax.Array  # evaluation environments are seeded apart from training ones
    hparams: dict  # the member's swept hyperparameters: float32 scalars by name


class Trainer(NamedTuple):
    init: Any
    chunk: Any
    evaluate: Any
    train: Any


def _flat(x):
    return x.reshape((-1,) + x.shape[2:])


def make_train(config, env, eval_env, agent) -> Trainer:
    """`config`: the loop's `RunConfig`; `agent`: a SACAgent or DQNAgent."""
    num_tasks, num_envs = env.num_tasks, env.num_envs
    task_ids = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32)[:, None], (num_tasks, num_envs))

    def hp_of(state: TrainState) -> dict:
        return hyperparameters(agent.config, state.hparams)

    def init(key, hparams) -> TrainState:
        hparams = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
        k_agent, k_env, k_loop = jax.random.split(key, 3)
        agent_state = agent.init(k_agent, hyperparameters(agent.config, hparams))
        env_state, obs = env.reset(k_env)
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

    def gradient_steps(agent_state, buf, norm, key, hp):
        def one(agent_state, k):
            k_batch, k_update = jax.random.split(k)
            batch, batch_tasks = buffer.sample(buf, k_batch, config.batch_size)
            scale = normalizer.scale(norm, hp["v_max"], agent.reward_allowance(agent_state, hp))
            return agent.update(agent_state, batch, batch_tasks, scale, k_update, hp)
        agent_state, metrics = jax.lax.scan(one, agent_state, jax.random.split(key, config.utd))
        return agent_state, jax.tree.map(jnp.mean, metrics)

    def iterations(state: TrainState, start, stop, learn: bool):
        """Iterations `start .. stop - 1` (a traced count, possibly none): act, step, insert,
        normalise, and with `learn` the gradient steps. Returns the state and the sum of the
        gradient steps' metrics. Learning and acting-only iterations are separate loops rather
        than a branch per iteration: a per-iteration `lax.cond` around the update costs XLA:CPU
        copies of the agent state and 3-5% of a learning iteration."""
        hp = hp_of(state)
        metric_shapes = jax.eval_shape(gradient_steps, state.agent, state.buffer, state.norm, state.key, hp)[1]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

        def body(carry):
            state, it, sums = carry
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
            norm = normalizer.update(state.norm, step.reward, step.terminated, step.truncated, hp["gamma"])
            agent_state = state.agent
            if learn:
                agent_state, metrics = gradient_steps(agent_state, buf, norm, k_update, hp)
                sums = jax.tree.map(jnp.add, sums, metrics)
            new = state._replace(agent=agent_state, buffer=buf, norm=norm, env=env_state, obs=step.obs, key=key)
            return new, it + 1, sums

        state, _, sums = jax.lax.while_loop(lambda c: c[1] < stop, body, (state, start, zeros))
        return state, sums

    def chunk(state: TrainState, it, learn_from=None):
        """`config.chunk` iterations from `it`: acting only before `learn_from`, then learning.
        Metrics: the mean over the chunk's learning iterations (zeros if it has none)."""
        learn_from = config.warmup_iterations if learn_from is None else learn_from
        # Once per chunk, off the per-step path: environments redraw the initial states their
        # ended episodes used (MJX's reset pool).
        key, k_refill = jax.random.split(state.key)
        state = state._replace(env=env.refill(state.env, k_refill), key=key)
        it = jnp.asarray(it, jnp.int32)
        end = it + config.chunk
        switch = jnp.clip(jnp.asarray(learn_from, jnp.int32), it, end)
        state, _ = iterations(state, it, switch, learn=False)
        state, sums = iterations(state, switch, end, learn=True)
        learning = jnp.maximum(end - switch, 1).astype(jnp.float32)
        return state, jax.tree.map(lambda x: x / learning, sums)

    eval_ids = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32)[:, None],
                                (num_tasks, eval_env.num_envs))

    def evaluate(state: TrainState, iteration):
        """Mean return per task `[T]` of the deterministic policy, `eval_episodes` per task, on
        environments seeded by `fold_in(eval_key, iteration)`. Reads `state.agent`,
        `state.eval_key` and `state.hparams` only."""
        agent_state, hp = state.agent, hp_of(state)
        k_reset, k_steps = jax.random.split(jax.random.fold_in(state.eval_key, iteration))
        env_state, obs = eval_env.reset(k_reset)

        def body(carry, k):
            env_state, obs, ret, active = carry
            action = agent.greedy(agent_state, _flat(obs), _flat(eval_ids), hp)
            env_state, step = eval_env.step(env_state, action.reshape(eval_ids.shape + agent.action_shape), k)
            ret = ret + jnp.where(active, step.reward, 0.0)
            active = active & ~(step.terminated | step.truncated)
            return (env_state, step.obs, ret, active), None

        init_carry = (env_state, obs, jnp.zeros(eval_ids.shape, jnp.float32), jnp.ones(eval_ids.shape, bool))
        (_, _, ret, _), _ = jax.lax.scan(body, init_carry, jax.random.split(k_steps, eval_env.episode_length))
        return jnp.mean(ret, axis=-1)

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

    return Trainer(init=init, chunk=chunk, evaluate=evaluate, train=train)
