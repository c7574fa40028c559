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
from dataclasses import dataclass
from pathlib import Path

import tyro

from purejaxbrc import kinds, run, transfer
from purejaxbrc.config import ConfigError, RunConfig, default_batch_size
from purejaxbrc.dqn import DQNConfig
from purejaxbrc.sac import SACConfig
from purejaxbrc.transfer import TransferConfig, TransferExperiment


@dataclass(frozen=True)
class MJXTransfer(TransferExperiment):
    """Transfer of an MJX (SAC) model."""

    agent: tyro.conf.OmitArgPrefixes[SACConfig]


@dataclass(frozen=True)
class MinAtarTransfer(TransferExperiment):
    """Transfer of a gymnax (categorical DQN) model."""

    agent: tyro.conf.OmitArgPrefixes[DQNConfig]


CLASSES = {"mjx": MJXTransfer, "minatar": MinAtarTransfer}


def defaults(source_dir: str):
    """`(kind, the transfer experiment whose flags default to the pretrained run's)`."""
    kind, source, _, _ = transfer.pretrained(source_dir)
    # A pretrained batch that followed the reference's rule (256 for one task, 1024 for several)
    # follows it again for the new task count; a batch given explicitly is kept.
    rule = default_batch_size(len(kinds.get(kind).resolve_tasks(source.run.tasks)))
    batch = None if source.run.batch_size == rule else source.run.batch_size
    loop = dataclasses.replace(source.run, run_dir="", resume=False, sweep=(), sweep_file="", batch_size=batch)
    return kind, CLASSES[kind](run=loop, agent=source.agent, transfer=TransferConfig(source=source_dir))


def parse(argv=None):
    """`(kind, experiment)` from the command line; ConfigError without a readable --from."""
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--from", dest="source", default="")
    source = pre.parse_known_args(args)[0].source
    if not source and any(a in ("-h", "--help") for a in args):  # help before a run is named
        tyro.cli(MJXTransfer, default=MJXTransfer(RunConfig(), SACConfig()), args=args,
                 description=__doc__)
    if not source:
        raise ConfigError("--from RUN_DIR is required: the pretrained run to start from")
    kind, default = defaults(source)
    experiment = tyro.cli(type(default), default=default, args=args, description=__doc__)
    if not experiment.run.run_dir:
        name = Path(source).resolve().name
        experiment = experiment.replace(run_dir=f"runs/{name}_to_{experiment.run.tasks.replace(',', '+')}"
                                                f"_{experiment.transfer.mode}")
    return kind, experiment


def main(kind: str, experiment):
    return run.main(kind, experiment)


if __name__ == "__main__":
    main(*run.exit_on_error(parse))
