"""BRC on gymnax discrete-action games (MinAtar by default): categorical double Q-learning, one
compiled program, vmapped over seeds.

    python experiments/brc_minatar.py cpu                              # single game, 2-core CPU
    python experiments/brc_minatar.py gpu --num-seeds 4                # all five MinAtar games
    python experiments/brc_minatar.py cpu --tasks Breakout-MinAtar,Asterix-MinAtar --critic-width 512
"""

from purejaxbrc import cli
from purejaxbrc.config import ConfigError, with_defaults
from purejaxbrc.dqn_config import DQNConfig, validate_dqn
from purejaxbrc.run import enable_compilation_cache, exit_on_error, run
from purejaxbrc.kinds import build_minatar as build  # noqa: F401 (used by main and tests)
from purejaxbrc.runlog import check_run_dir

PRESETS = {
    "cpu": ("2-core CPU, ~7 min (409 s training): Breakout-MinAtar, 16 envs, width-256 critic, "
            "batch 128, UTD 1.",
            DQNConfig(tasks="Breakout-MinAtar", num_envs=16, total_iterations=16_000,
                      warmup_iterations=500, eval_every=2_000, eval_episodes=8, eps_decay=5_000,
                      critic_width=256, batch_size=128, utd=1, buffer_capacity=100_000,
                      run_dir="runs/brc_minatar_cpu")),
    "gpu": ("All five MinAtar games, 64 envs each, width-4096 critic, UTD 2, batch 1024 (256 for "
            "one game). The default preset.",
            DQNConfig(run_dir="runs/brc_minatar_gpu")),
}


def prepare(config: DQNConfig):
    """`(config with task-dependent defaults filled in, task names)`; raises ConfigError for
    any bad input before anything compiles."""
    from purejaxbrc.envs.gymnax import GymnaxTaskSet, resolve_tasks
    try:
        names = resolve_tasks(config.tasks)
    except ValueError as e:
        raise ConfigError(str(e))
    config = with_defaults(config, len(names))
    validate_dqn(config, len(names))
    shape = GymnaxTaskSet(names).obs_shape
    if len(shape) == 3 and min(shape[:2]) <= 2 * len(config.conv_channels):
        raise ConfigError(f"--conv-channels: {len(config.conv_channels)} 3x3 convs do not fit "
                          f"{shape[0]}x{shape[1]} images")
    check_run_dir(config.run_dir, config.to_dict(), resume=config.resume)
    return config, names


def main(config: DQNConfig):
    config, names = exit_on_error(lambda: prepare(config))
    enable_compilation_cache()
    env, eval_env, agent = build(config, names)
    return exit_on_error(lambda: run(config, env, eval_env, agent, kind="minatar"))


if __name__ == "__main__":
    main(cli.parse(PRESETS, default="gpu"))
