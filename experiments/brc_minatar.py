"""BRC on gymnax discrete-action games (MinAtar by default): categorical double Q-learning, one
compiled program over seeds, sweep variants and devices.

    python experiments/brc_minatar.py cpu                              # single game, 2-core CPU
    python experiments/brc_minatar.py --num-seeds 4                    # flags alone: the gpu preset
    python experiments/brc_minatar.py cpu --tasks Breakout-MinAtar,Asterix-MinAtar --critic-width 512
"""

from purejaxbrc import cli, run
from purejaxbrc.config import Experiment, RunConfig
from purejaxbrc.dqn import DQNConfig

MinAtarExperiment = cli.experiment_type(DQNConfig, "MinAtarExperiment", "Categorical double Q on gymnax games.")


PRESETS = {
    "cpu": ("2-core CPU, ~7 min (409 s training): Breakout-MinAtar, 16 envs, width-256 critic, "
            "batch 128, UTD 1.",
            MinAtarExperiment(
                RunConfig(tasks="Breakout-MinAtar", num_envs=16, total_iterations=16_000,
                          warmup_iterations=500, eval_every=2_000, eval_episodes=8, batch_size=128,
                          utd=1, buffer_capacity=100_000, run_dir="runs/brc_minatar_cpu"),
                DQNConfig(critic_width=256, eps_decay=5_000))),
    "gpu": ("All five MinAtar games, 64 envs each, width-4096 critic, UTD 2, batch 1024 (256 for "
            "one game). The default preset.",
            MinAtarExperiment(
                RunConfig(tasks="minatar", num_envs=64, total_iterations=100_000,
                          warmup_iterations=1_000, eval_every=5_000, run_dir="runs/brc_minatar_gpu"),
                DQNConfig())),
}


def main(experiment: Experiment):
    return run.main("minatar", experiment)


if __name__ == "__main__":
    main(cli.parse(PRESETS, default="gpu"))
