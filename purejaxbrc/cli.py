"""The experiment scripts' command line: named presets, and flags that override them.

    python experiments/brc_mjx.py demo --tasks CheetahRun      # a preset, then overrides
    python experiments/brc_mjx.py --tasks CheetahRun           # flags alone: the default preset
"""

import sys

import tyro


def parse(presets: dict, default: str, argv=None):
    """The config that `argv` (default: `sys.argv[1:]`) selects: its first word names a preset
    of `presets` (`name -> (description, config)`); without one, the flags apply to `default`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if default not in presets:
        raise ValueError(f"default preset {default!r} is not one of {', '.join(presets)}")
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args = [default] + args
    return tyro.extras.overridable_config_cli(presets, args=args)
