"""The command line of the experiment scripts and tools: named presets and flags that override
them, the experiment types tyro parses, and how a run's end becomes the process exit code.

    python experiments/brc_mjx.py demo --tasks CheetahRun      # a preset, then overrides
    python experiments/brc_mjx.py --tasks CheetahRun           # flags alone: the default preset

Exit codes: 0 done; 2 bad input (`ConfigError`: one line starting `error:`, before anything is
compiled or written); 3 a non-finite loss or parameter; 130 / 143 stopped by SIGINT / SIGTERM
after writing a checkpoint (`RunStopped` carries the code); 130 also for Ctrl-C before training
starts or a second Ctrl-C, which stop at once without a checkpoint.
"""

import dataclasses
import sys

import tyro

from purejaxbrc.config import ConfigError, Experiment, TransferConfig

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT


class RunStopped(Exception):
    """The run stopped before its end; `code` is the process exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def exit_on_error(fn):
    """Run `fn()`; a ConfigError becomes one line on stderr and exit code 2, a RunStopped its
    message and code."""
    try:
        return fn()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except RunStopped as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:  # before the loop took SIGINT over, or a second Ctrl-C in it
        print("interrupted: stopped without writing a checkpoint", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def experiment_type(agent_config: type, name: str, doc: str, transfer: bool = False) -> type:
    """The dataclass tyro parses for a script: an `Experiment` whose agent is `agent_config`,
    both without flag prefixes, and with `transfer` a `TransferConfig` (`--from`, `--mode`)."""
    fields = [("agent", tyro.conf.OmitArgPrefixes[agent_config])]
    if transfer:
        fields.append(("transfer", tyro.conf.OmitArgPrefixes[TransferConfig],
                       dataclasses.field(default=TransferConfig())))
    cls = dataclasses.make_dataclass(name, fields, bases=(Experiment,), frozen=True)
    cls.__doc__ = doc
    return cls


def parse(presets: dict, default: str, argv=None):
    """The config that `argv` (default: `sys.argv[1:]`) selects: its first word names a preset
    of `presets` (`name -> (description, config)`); without one, the flags apply to `default`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if default not in presets:
        raise ValueError(f"default preset {default!r} is not one of {', '.join(presets)}")
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args = [default] + args
    return tyro.extras.overridable_config_cli(presets, args=args)
