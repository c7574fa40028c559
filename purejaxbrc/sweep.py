"""The population of one run: hyperparameter variants x seeds, trained in one program.

A variant is `{name: value}` over the swept hyperparameters (a subset of the agent config's
`SWEEPABLE`: values that change no array shape and no loop, so one compiled program serves every
member). `--sweep lr=1e-4,3e-4 tau=0.005,0.01` is a grid (every combination, in the order
given, the last name varying fastest); `--sweep-file` a JSON or YAML list of variants, where a
name a variant leaves out takes the flag's value. Without either there is one variant, `{}`.

Member `m = v * num_seeds + s` is variant `v` with seed `seed + s`, so every variant sees the
same seeds: member `(v, s)` computes what a run with variant `v`'s values as flags and
`--seed seed+s` computes. Swept values become the members' data (`hparams`, float32 arrays
`[members]`); fixed values stay compile-time constants (`AgentConfig.hyperparameters`).
"""

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import yaml

from purejaxbrc.config import ConfigError, RunConfig, flag


def _number(name: str, text) -> float:
    if isinstance(text, bool):
        raise ConfigError(f"sweep value {name}={text!r} is not a number")
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"sweep value {name}={text!r} is not a number")


def parse_grid(items) -> list[dict]:
    """`("lr=1e-4,3e-4", "tau=0.005")` -> the variants of the grid, as floats."""
    axes = []
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not values.strip():
            raise ConfigError(f"--sweep {item!r}: expected name=value[,value...], e.g. lr=1e-4,3e-4")
        if name in (a for a, _ in axes):
            raise ConfigError(f"--sweep names {name} twice")
        axes.append((name, [_number(name, v.strip()) for v in values.split(",")]))
    return [dict(zip([a for a, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def read_file(path: str) -> list[dict]:
    """A JSON or YAML (.yaml/.yml) list of `{name: value}` objects."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--sweep-file {path} does not exist")
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(p.read_text())
        else:
            data = json.loads(p.read_text())
    except Exception as e:  # a syntax error of either format
        raise ConfigError(f"--sweep-file {path} is not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: "
                          f"{str(e).splitlines()[0]}")
    if not isinstance(data, list) or not data or not all(isinstance(v, dict) for v in data):
        raise ConfigError(f"--sweep-file {path} must hold a non-empty list of {{name: value}} objects")
    return [{str(k).replace("-", "_"): _number(str(k), v) for k, v in variant.items()} for variant in data]


def resolve(run: RunConfig, agent, agent_class) -> tuple[dict, ...]:
    """The variants of `run`'s sweep, each complete over the swept names and checked: only
    sweepable names, in-range values, no variant twice. `({},)` without a sweep."""
    variants = parse_grid(run.sweep) if run.sweep else read_file(run.sweep_file) if run.sweep_file else [{}]
    sweepable = agent_class.SWEEPABLE
    names = list(dict.fromkeys(k for v in variants for k in v))
    agent_fields = {f.name for f in dataclasses.fields(agent_class)}
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name in names:
        if name in sweepable:
            continue
        if name == "seed":
            raise ConfigError("seed cannot be swept: use --num-seeds N (seeds --seed .. --seed + N - 1); "
                              f"sweepable: {', '.join(sweepable)}")
        if name in agent_fields or name in run_fields:
            raise ConfigError(f"{name} cannot be swept: it changes the compiled program (array shapes "
                              f"or the loop); run one program per value. Sweepable: {', '.join(sweepable)}")
        raise ConfigError(f"unknown hyperparameter {name!r} in the sweep; sweepable: {', '.join(sweepable)}")
    complete = []
    for variant in variants:
        full = {name: variant.get(name, getattr(agent, name)) for name in names}
        typed = {}
        for name, value in full.items():
            if isinstance(getattr(agent, name), int) and not float(value).is_integer():
                raise ConfigError(f"sweep value {name}={value:g}: {flag(name)} takes whole numbers")
            typed[name] = type(getattr(agent, name))(value)
        try:
            dataclasses.replace(agent, **typed).validate()
        except ConfigError as e:
            raise ConfigError(f"sweep variant {describe(typed)}: {e}")
        complete.append(typed)
    for i, v in enumerate(complete):
        if v in complete[:i]:
            raise ConfigError(f"sweep variant {describe(v)} is listed twice")
    return tuple(complete)


def describe(variant: dict) -> str:
    """`lr=0.0001 tau=0.005` (`default` for the empty variant)."""
    return " ".join(f"{k}={v:g}" for k, v in variant.items()) or "default"


# -- the members ----------------------------------------------------------------------------------
def member_seeds(run: RunConfig, variants) -> list[int]:
    return [run.seed + s for _ in variants for s in range(run.num_seeds)]


def member_variants(run: RunConfig, variants) -> list[int]:
    return [v for v in range(len(variants)) for _ in range(run.num_seeds)]


def member_hparams(run: RunConfig, variants) -> dict:
    """`{name: float32 [members]}` for the swept names (empty without a sweep)."""
    names = list(variants[0])
    return {name: np.array([variants[v][name] for v in member_variants(run, variants)], np.float32)
            for name in names}
