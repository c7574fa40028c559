"""BRC on MuJoCo Playground control-suite tasks: one compiled program over seeds, sweep
variants and devices.

    python experiments/brc_mjx.py demo                              # CPU demo (minutes)
    python experiments/brc_mjx.py --tasks CheetahRun --num-seeds 4  # flags alone: the paper preset
    python experiments/brc_mjx.py demo --sweep lr=1e-4,3e-4 tau=0.005,0.01 --num-seeds 2
"""

from purejaxbrc import cli, run
from purejaxbrc.config import Experiment, RunConfig
from purejaxbrc.sac import SACConfig

MJXExperiment = cli.experiment_type(SACConfig, "MJXExperiment", "SAC on MuJoCo Playground control tasks.")


PRESETS = {
    "demo": ("CPU demo: three Cartpole tasks, one agent, small critic; ~7 min on 2 cores "
             "(measured: 88 s compile + 347 s training).",
             MJXExperiment(
                 RunConfig(tasks="CartpoleBalance,CartpoleSwingup,CartpoleBalanceSparse",
                           total_iterations=30_000, warmup_iterations=2_000, eval_every=5_000,
                           eval_episodes=5, batch_size=128, run_dir="runs/brc_mjx_demo"),
                 SACConfig(critic_width=128, actor_width=128))),
    "paper": ("The paper's configuration (BRC.md): width 4096, UTD 2, 1M iterations, batch 256 "
              "for one task and 1024 for several (the reference's rule). The default preset.",
              MJXExperiment(RunConfig(tasks="humanoids", run_dir="runs/brc_mjx_paper"), SACConfig())),
}


def main(experiment: Experiment):
    return run.main("mjx", experiment)


if __name__ == "__main__":
    main(cli.parse(PRESETS, default="paper"))
