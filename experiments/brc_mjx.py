"""BRC on MuJoCo Playground control-suite tasks: one compiled program, vmapped over seeds.

    python experiments/brc_mjx.py demo                      # CPU demo (minutes)
    python experiments/brc_mjx.py paper --num-seeds 4       # the paper's configuration
    python experiments/brc_mjx.py demo --tasks CheetahRun,WalkerWalk --critic-width 512
"""

import dataclasses

import tyro

from purejaxbrc.config import BRCConfig, ConfigError, validate
from purejaxbrc.run import enable_compilation_cache, exit_on_config_error, run
from purejaxbrc.runlog import check_run_dir

PRESETS = {
    "demo": ("CPU demo: three cheap control-suite tasks, small critic; ~10 min on 2 cores.",
             BRCConfig(tasks="CartpoleBalance,CartpoleSwingup,PendulumSwingup",
                       total_iterations=30_000, warmup_iterations=2_000, eval_every=5_000,
                       eval_episodes=5, critic_width=256, actor_width=128, batch_size=256, utd=1,
                       run_dir="runs/brc_mjx_demo")),
    "paper": ("The paper's configuration (BRC.md): width 4096, batch 1024, UTD 2, 1M iterations.",
              BRCConfig(tasks="humanoids", run_dir="runs/brc_mjx_paper")),
}


def prepare(config: BRCConfig):
    """Resolve tasks and check every input; raises ConfigError before anything compiles."""
    from purejaxbrc.envs.mjx import resolve_tasks
    try:
        names = resolve_tasks(config.tasks)
    except ValueError as e:
        raise ConfigError(str(e))
    validate(config, len(names))
    check_run_dir(config.run_dir, config.to_dict())
    return names


def build(config: BRCConfig, names):
    from purejaxbrc.envs.mjx import MJXTaskSet
    from purejaxbrc.sac import SACAgent
    env = MJXTaskSet(names, config.num_envs, config.episode_length)
    eval_env = MJXTaskSet(names, config.eval_episodes, config.episode_length)
    agent = SACAgent(
        obs_size=env.obs_size, action_size=env.action_size, num_tasks=env.num_tasks,
        critic_width=config.critic_width, critic_depth=config.critic_depth,
        actor_width=config.actor_width, actor_depth=config.actor_depth,
        num_atoms=config.num_atoms, v_max=config.v_max, embed_dim=config.embed_dim,
        embed_norm=config.embed_norm, gamma=config.gamma, tau=config.tau, lr=config.lr,
        weight_decay=config.weight_decay, alpha_lr=config.alpha_lr, init_alpha=config.init_alpha,
        critic_matmul_dtype=config.critic_matmul_dtype)
    return env, eval_env, agent


def main(config: BRCConfig):
    names = exit_on_config_error(lambda: prepare(config))
    enable_compilation_cache()
    env, eval_env, agent = build(config, names)
    return run(config, env, eval_env, agent)


if __name__ == "__main__":
    main(tyro.extras.overridable_config_cli(PRESETS))
