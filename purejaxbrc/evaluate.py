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
from pathlib import Path

import purejaxbrc  # noqa: F401  (before JAX: installs purejaxbrc.lapack)
import jax
import numpy as np

from purejaxbrc import program, sweep
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError
from purejaxbrc.rundir import read_rows


def evaluate(run_dir, episodes: int | None = None, step: int | None = None):
    """`(built run, iteration, returns [members, tasks])` of one checkpoint."""
    if episodes is not None and episodes <= 0:
        raise ConfigError(f"--episodes must be > 0, got {episodes}")
    built, got = program.load(run_dir, step, episodes=episodes)
    state, it = got.rest, got.step
    returns = np.asarray(built.program.compile_evaluate(state)(state, jax.numpy.int32(it)))
    return built, it, returns


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
    program.enable_compilation_cache()
    built, step, returns = exit_on_error(lambda: evaluate(args.run_dir, args.episodes, args.checkpoint))
    experiment, population, task_names = built.plan.experiment, built.population, built.plan.names
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
