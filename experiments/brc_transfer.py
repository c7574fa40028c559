"""Transfer a pretrained multi-task BRC model (SAC on MJX, or categorical DQN on gymnax games)
to new tasks: purejaxbrc.transfer.

    python experiments/brc_transfer.py --from runs/cartpoles --tasks CartpoleSwingup --mode finetune
    python experiments/brc_transfer.py --from runs/cartpoles --tasks CartpoleSwingup --mode embedding --num-seeds 3
    python experiments/brc_transfer.py --from runs/cartpoles --tasks CartpoleSwingup --mode scratch --num-seeds 3
    python experiments/brc_transfer.py --from runs/minatar4 --tasks Breakout-MinAtar --checkpoint 20000

Every flag but --tasks, --mode and --run-dir defaults to the pretrained run's value (its loop and
agent); a batch that followed the 256/1024 rule follows it for the new task count; the
architecture cannot change. The run directory is an ordinary one (its config.json
records where it came from): --resume, `python -m purejaxbrc.evaluate` and `purejaxbrc.plot`
work on it as on any run.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import tyro

from purejaxbrc import cli, kinds, run, transfer
from purejaxbrc.config import ConfigError, Experiment, RunConfig, TransferConfig, default_batch_size
from purejaxbrc.kinds import Kind
from purejaxbrc.sac import SACConfig


def transfer_type(kind: Kind) -> type:
    """The command line of a transfer of `kind`'s runs: its loop, agent and transfer flags."""
    return cli.experiment_type(kind.agent_config, f"{type(kind).__name__}Transfer",
                               f"Transfer of a pretrained {kind.what} model.", transfer=True)


def defaults(source_dir: str):
    """`(kind, the transfer experiment whose flags default to the pretrained run's)`."""
    source = transfer.pretrained(source_dir)
    # A pretrained batch that followed the reference's rule (256 for one task, 1024 for several)
    # follows it again for the new task count; a batch given explicitly is kept.
    run_config = source.experiment.run
    rule = default_batch_size(len(kinds.resolve_tasks(source.kind, run_config.tasks)))
    batch = None if run_config.batch_size == rule else run_config.batch_size
    loop = dataclasses.replace(run_config, run_dir="", resume=False, sweep=(), sweep_file="", batch_size=batch)
    cls = transfer_type(source.kind)
    return source.kind, cls(run=loop, agent=source.experiment.agent, transfer=TransferConfig(source=source_dir))


def parse(argv=None) -> tuple[str, Experiment, TransferConfig]:
    """`(kind, experiment, transfer)` from the command line; ConfigError without a readable --from."""
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--from", dest="source", default="")
    source = pre.parse_known_args(args)[0].source
    if not source and any(a in ("-h", "--help") for a in args):  # help before a run is named
        cls = transfer_type(kinds.get("mjx"))
        tyro.cli(cls, default=cls(RunConfig(), SACConfig()), args=args, description=__doc__)
    if not source:
        raise ConfigError("--from RUN_DIR is required: the pretrained run to start from")
    kind, default = defaults(source)
    parsed = tyro.cli(type(default), default=default, args=args, description=__doc__)
    experiment = Experiment(run=parsed.run, agent=parsed.agent)
    if not experiment.run.run_dir:
        name = Path(source).resolve().name
        experiment = experiment.replace(run_dir=f"runs/{name}_to_{experiment.run.tasks.replace(',', '+')}"
                                                f"_{parsed.transfer.mode}")
    return kind.name, experiment, parsed.transfer


def main(kind: str, experiment: Experiment, transfer_config: TransferConfig):
    return run.main(kind, experiment, transfer_config)


if __name__ == "__main__":
    main(*cli.exit_on_error(parse))
