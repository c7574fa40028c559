"""Evaluate a checkpoint of a run directory with the deterministic policy.

    python -m purejaxbrc.evaluate RUN_DIR [--episodes N] [--checkpoint STEP]

Rebuilds the environments and the agent from RUN_DIR/config.json and the `kind` in
run_info.json, restores the checkpoint at iteration STEP (default: the latest readable one;
replay buffers are not loaded) and runs N episodes per task and member (seed x sweep variant) (default: the run's
--eval-episodes). Prints a table of mean returns per task and member, and the mean over tasks.

The evaluation key is the training loop's, `fold_in(eval_key, iteration)`, so with the default
episodes the numbers equal the in-training evaluation at that iteration (metrics.jsonl), which
is checked and reported when that row exists. Bad input (no run dir, no checkpoint, an unknown
step, episodes <= 0) prints one line on stderr and exits with code 2.
"""

import argparse
import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import jax
import numpy as np

from purejaxbrc import kinds, sweep
from purejaxbrc.checkpoint import Checkpoints, CorruptCheckpoint
from purejaxbrc.config import ConfigError, from_dict
from purejaxbrc.run import Program, enable_compilation_cache, exit_on_error, make_population
from purejaxbrc.runlog import read_rows
from purejaxbrc.train import make_train


def load_config(run_dir: Path):
    """`(kind, experiment, variants, stored config dict)` from the run directory; ConfigError
    when they are missing."""
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist")
    try:
        info = json.loads((run_dir / "run_info.json").read_text())
        stored = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"run dir {run_dir}: cannot read run_info.json and config.json ({e})")
    if not info.get("kind"):
        raise ConfigError(f"run dir {run_dir}: run_info.json names no kind (written before checkpoints existed)")
    kind = kinds.get(info["kind"])
    experiment = from_dict(stored, kind.agent_config)
    return info["kind"], experiment, tuple(stored.get("variants", [{}])), stored


class Loaded(NamedTuple):
    """A run directory rebuilt: its config, program and one restored checkpoint."""

    kind: str
    experiment: object  # purejaxbrc.config.Experiment
    variants: tuple
    stored: dict  # config.json
    names: tuple
    env: object
    eval_env: object
    agent: object
    program: object  # purejaxbrc.run.Program
    restored: object  # purejaxbrc.checkpoint.Restored


def load(run_dir, step: int | None = None, with_buffer: bool = False, episodes: int | None = None) -> Loaded:
    """Rebuild the run in `run_dir` and restore checkpoint `step` (default: the latest readable
    one, falling back past damaged ones) onto this machine's devices. ConfigError for a
    missing run dir or checkpoint; `episodes` overrides the evaluation episodes."""
    run_dir = Path(run_dir)
    name, experiment, variants, stored = load_config(run_dir)
    kind = kinds.get(name)
    steps = Checkpoints(run_dir).steps()
    if not steps:
        raise ConfigError(f"run dir {run_dir} has no checkpoint")
    if step is not None and step not in steps:
        raise ConfigError(f"--checkpoint {step}: no such checkpoint in {run_dir}; there are: "
                          f"{', '.join(map(str, steps))}")
    names = kind.resolve_tasks(experiment.run.tasks)
    run = experiment.run
    eval_run = run if episodes is None else dataclasses.replace(run, eval_episodes=episodes)
    env, eval_env, agent = kind.build(dataclasses.replace(experiment, run=eval_run), names)
    population = make_population(run, variants)
    program = Program(make_train(run, env, eval_env, agent), population, batched=run.vmap_members)
    abstract = program.abstract_state()
    ckpts = Checkpoints(run_dir, read_only=True, sharding=program.sharding)
    if step is None:
        got = ckpts.restore_latest(abstract, stored, with_buffer=with_buffer)
    else:  # exactly this one: no fallback to an older one
        try:
            got = ckpts.restore_checked(step, abstract, stored, with_buffer=with_buffer)
        except CorruptCheckpoint as e:
            raise ConfigError(f"--checkpoint {step} is corrupt or incomplete ({e})")
    return Loaded(name, experiment, variants, stored, names, env, eval_env, agent, program, got)


def evaluate(run_dir, episodes: int | None = None, step: int | None = None):
    """`(experiment, population, task names, iteration, returns [members, tasks])` of one
    checkpoint."""
    if episodes is not None and episodes <= 0:
        raise ConfigError(f"--episodes must be > 0, got {episodes}")
    got = load(run_dir, step, episodes=episodes)
    state, it = got.restored.rest, got.restored.step
    returns = np.asarray(got.program.compile_evaluate(state)(state, jax.numpy.int32(it)))
    return got.experiment, got.program.population, got.names, it, returns


def columns(population) -> list[str]:
    """`seed 0`, or `v1 seed 0` (variant 1) in a sweep."""
    many = len(population.variants) > 1
    return [(f"v{v} " if many else "") + f"seed {s}" for s, v in zip(population.seeds, population.variant_of)]


def table(task_names, labels, returns) -> str:
    width = max(len("mean"), *(len(t) for t in task_names))
    cell = max(12, *(len(label) + 2 for label in labels))
    head = f"{'task':<{width}}" + "".join(f"{label:>{cell}}" for label in labels) + f"{'mean':>12}"
    lines = [head]
    for t, task in enumerate(task_names):
        lines.append(f"{task:<{width}}" + "".join(f"{r:{cell}.2f}" for r in returns[:, t])
                     + f"{returns[:, t].mean():12.2f}")
    lines.append(f"{'mean':<{width}}" + "".join(f"{r:{cell}.2f}" for r in returns.mean(1))
                 + f"{returns.mean():12.2f}")
    return "\n".join(lines)


def compare_with_training(run_dir: Path, iteration: int, task_names, population, returns) -> str | None:
    rows = [r for r in read_rows(run_dir / "metrics.jsonl") if r["iteration"] == iteration]
    if not rows:
        return None
    logged = {(r["seed"], r.get("variant", 0), r["task"]): r["eval_return"] for r in rows}
    same = all(logged.get((s, v, t)) == float(returns[m, j])
               for m, (s, v) in enumerate(zip(population.seeds, population.variant_of))
               for j, t in enumerate(task_names))
    return (f"in-training evaluation at iteration {iteration} (metrics.jsonl): "
            + ("identical" if same else "DIFFERENT"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m purejaxbrc.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per task and member "
                        "(default: the run's --eval-episodes)")
    parser.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                        help="the checkpoint's iteration (default: the latest)")
    args = parser.parse_args(argv)
    enable_compilation_cache()
    experiment, population, task_names, step, returns = exit_on_error(
        lambda: evaluate(args.run_dir, args.episodes, args.checkpoint))
    episodes = args.episodes or experiment.run.eval_episodes
    print(f"{args.run_dir}: checkpoint at iteration {step}, {episodes} episodes per task and member, "
          f"deterministic policy")
    print(table(task_names, columns(population), returns))
    if len(population.variants) > 1:
        for v, variant in enumerate(population.variants):
            print(f"v{v}: {sweep.describe(variant)}")
    if episodes == experiment.run.eval_episodes:
        note = compare_with_training(Path(args.run_dir), step, task_names, population, returns)
        if note:
            print(note)
    return returns


if __name__ == "__main__":
    main()
