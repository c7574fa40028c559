"""The kinds of run the scripts write, named by run_info.json's `kind`: how to rebuild a run's
config, tasks, environments and agent from its run directory (used by purejaxbrc.evaluate).

- "mjx": experiments/brc_mjx.py, SAC on MuJoCo Playground (BRCConfig)
- "minatar": experiments/brc_minatar.py, categorical double Q on gymnax games (DQNConfig)
"""

from typing import Any, Callable, NamedTuple

from purejaxbrc.config import BRCConfig, ConfigError


def build_mjx(config: BRCConfig, names):
    """`(env, eval_env, agent)` of an MJX run."""
    from purejaxbrc.envs.mjx import MJXTaskSet, pool_size_for
    from purejaxbrc.sac import SACAgent
    env = MJXTaskSet(names, config.num_envs, config.episode_length,
                     pool_size=pool_size_for(config.chunk, config.episode_length))
    # Evaluation runs every episode to its end and stops: no auto-reset, no pool.
    eval_env = MJXTaskSet(names, config.eval_episodes, config.episode_length, pool_size=0)
    agent = SACAgent(
        obs_size=env.obs_size, action_size=env.action_size, num_tasks=env.num_tasks,
        critic_width=config.critic_width, critic_depth=config.critic_depth,
        actor_width=config.actor_width, actor_depth=config.actor_depth,
        num_atoms=config.num_atoms, v_max=config.v_max, embed_dim=config.embed_dim,
        embed_norm=config.embed_norm, gamma=config.gamma, tau=config.tau, lr=config.lr,
        weight_decay=config.weight_decay, alpha_lr=config.alpha_lr, init_alpha=config.init_alpha,
        critic_matmul_dtype=config.critic_matmul_dtype)
    return env, eval_env, agent


def build_minatar(config, names):
    """`(env, eval_env, agent)` of a gymnax run."""
    from purejaxbrc.dqn import DQNAgent
    from purejaxbrc.envs.gymnax import GymnaxTaskSet
    env = GymnaxTaskSet(names, config.num_envs)
    eval_env = GymnaxTaskSet(names, config.eval_episodes)
    agent = DQNAgent(
        obs_shape=env.obs_shape, action_counts=env.action_counts, num_tasks=env.num_tasks,
        width=config.critic_width, depth=config.critic_depth, conv_channels=config.conv_channels,
        num_atoms=config.num_atoms, v_max=config.v_max, embed_dim=config.embed_dim,
        embed_norm=config.embed_norm, gamma=config.gamma, tau=config.tau, lr=config.lr,
        weight_decay=config.weight_decay, eps_start=config.eps_start, eps_end=config.eps_end,
        eps_decay=config.eps_decay, matmul_dtype=config.critic_matmul_dtype)
    return env, eval_env, agent


def _resolve_mjx(spec: str):
    from purejaxbrc.envs.mjx import resolve_tasks
    return resolve_tasks(spec)


def _resolve_gymnax(spec: str):
    from purejaxbrc.envs.gymnax import resolve_tasks
    return resolve_tasks(spec)


def _dqn_config():
    from purejaxbrc.dqn_config import DQNConfig
    return DQNConfig


class Kind(NamedTuple):
    config_class: Callable[[], type]
    resolve_tasks: Callable[[str], tuple]
    build: Callable[[Any, tuple], tuple]


KINDS = {
    "mjx": Kind(lambda: BRCConfig, _resolve_mjx, build_mjx),
    "minatar": Kind(_dqn_config, _resolve_gymnax, build_minatar),
}


def get(kind) -> Kind:
    if kind not in KINDS:
        raise ConfigError(f"unknown run kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]
