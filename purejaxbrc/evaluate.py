"""Evaluate a checkpoint of a run directory with the deterministic policy.

    python -m purejaxbrc.evaluate RUN_DIR [--episodes N] [--checkpoint STEP]

Rebuilds the environments and the agent from RUN_DIR/config.json and the `kind` in
run_info.json, restores the checkpoint at iteration STEP (default: the latest readable one;
replay buffers are not loaded) and runs N episodes per task and seed (default: the run's
--eval-episodes). Prints a table of mean returns per task and seed, and the mean over tasks.

The evaluation key is the training loop's, `fold_in(eval_key, iteration)`, so with the default
episodes the numbers equal the in-training evaluation at that iteration (metrics.jsonl), which
is checked and reported when that row exists. Bad input (no run dir, no checkpoint, an unknown
step, episodes <= 0) prints one line on stderr and exits with code 2.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import jax
import numpy as np

from purejaxbrc import kinds
from purejaxbrc.checkpoint import Checkpoints, CorruptCheckpoint
from purejaxbrc.config import ConfigError
from purejaxbrc.run import enable_compilation_cache, exit_on_error, seed_keys, vmapped_init
from purejaxbrc.runlog import read_rows
from purejaxbrc.train import make_train


def load_config(run_dir: Path):
    """`(kind, config)` from the run directory; ConfigError when they are missing."""
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
    return info["kind"], kind.config_class().from_dict(stored)


def evaluate(run_dir, episodes: int | None = None, step: int | None = None):
    """`(config, task names, iteration, returns [seeds, tasks])` of one checkpoint."""
    run_dir = Path(run_dir)
    if episodes is not None and episodes <= 0:
        raise ConfigError(f"--episodes must be > 0, got {episodes}")
    name, config = load_config(run_dir)
    kind = kinds.get(name)
    steps = Checkpoints(run_dir).steps()
    if not steps:
        raise ConfigError(f"run dir {run_dir} has no checkpoint")
    if step is not None and step not in steps:
        raise ConfigError(f"--checkpoint {step}: no such checkpoint in {run_dir}; there are: "
                          f"{', '.join(map(str, steps))}")
    try:
        names = kind.resolve_tasks(config.tasks)
    except ValueError as e:
        raise ConfigError(str(e))
    eval_config = config if episodes is None else dataclasses.replace(config, eval_episodes=episodes)
    env, eval_env, agent = kind.build(eval_config, names)
    trainer = make_train(config, env, eval_env, agent)
    abstract = jax.eval_shape(vmapped_init(trainer), seed_keys(config.seed, config.num_seeds))
    ckpts = Checkpoints(run_dir, read_only=True)
    if step is None:
        got = ckpts.restore_latest(abstract, config.to_dict(), with_buffer=False)
    else:  # exactly this one: no fallback to an older one
        try:
            got = ckpts.restore_checked(step, abstract, config.to_dict(), with_buffer=False)
        except CorruptCheckpoint as e:
            raise ConfigError(f"--checkpoint {step} is corrupt or incomplete ({e})")
    state = got.rest
    eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.eval_key, jax.numpy.int32(got.step))
    returns = np.asarray(jax.jit(jax.vmap(trainer.evaluate))(state.agent, eval_keys))
    return config, env.task_names, got.step, returns


def table(task_names, seeds, returns) -> str:
    width = max(len("mean"), *(len(t) for t in task_names))
    head = f"{'task':<{width}}" + "".join(f"{'seed ' + str(s):>12}" for s in seeds) + f"{'mean':>12}"
    lines = [head]
    for t, task in enumerate(task_names):
        lines.append(f"{task:<{width}}" + "".join(f"{r:12.2f}" for r in returns[:, t])
                     + f"{returns[:, t].mean():12.2f}")
    lines.append(f"{'mean':<{width}}" + "".join(f"{r:12.2f}" for r in returns.mean(1))
                 + f"{returns.mean():12.2f}")
    return "\n".join(lines)


def compare_with_training(run_dir: Path, iteration: int, task_names, seeds, returns) -> str | None:
    rows = [r for r in read_rows(run_dir / "metrics.jsonl") if r["iteration"] == iteration]
    if not rows:
        return None
    logged = {(r["seed"], r["task"]): r["eval_return"] for r in rows}
    same = all(logged.get((s, t)) == float(returns[i, j])
               for i, s in enumerate(seeds) for j, t in enumerate(task_names))
    return (f"in-training evaluation at iteration {iteration} (metrics.jsonl): "
            + ("identical" if same else "DIFFERENT"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m purejaxbrc.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per task and seed "
                        "(default: the run's --eval-episodes)")
    parser.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                        help="the checkpoint's iteration (default: the latest)")
    args = parser.parse_args(argv)
    enable_compilation_cache()
    config, task_names, step, returns = exit_on_error(
        lambda: evaluate(args.run_dir, args.episodes, args.checkpoint))
    seeds = list(range(config.seed, config.seed + config.num_seeds))
    episodes = args.episodes or config.eval_episodes
    print(f"{args.run_dir}: checkpoint at iteration {step}, {episodes} episodes per task and seed, "
          f"deterministic policy")
    print(table(task_names, seeds, returns))
    if episodes == config.eval_episodes:
        note = compare_with_training(Path(args.run_dir), step, task_names, seeds, returns)
        if note:
            print(note)
    return returns


if __name__ == "__main__":
    main()
