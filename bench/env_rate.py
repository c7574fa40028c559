"""Environment-only and learning iteration rates of the run loop's compiled chunk, per task group.

    python bench/env_rate.py                                   # CheetahRun, HumanoidRun, CartpoleSwingup, dmc
    python bench/env_rate.py --groups CheetahRun --chunk 200 --out /tmp/cheetah.json

For each group (a `--tasks` spec): build the paper preset's loop with a width-128 critic and
actor, batch 128, UTD 2, one environment per task; compile the chunk (timed apart); run one
chunk untimed; then time `--chunks` warm-up chunks (random actions, environment step, buffer
insert, reward normaliser; no gradient steps) and `--chunks` learning chunks. Reported:
env-only iterations/s, learning iterations/s and the physics share (env-only seconds per
iteration over learning seconds per iteration).
"""

import datetime
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import tyro

from purejaxbrc import program
from purejaxbrc.config import Experiment, RunConfig
from purejaxbrc.sac import SACConfig


@dataclass(frozen=True)
class Args:
    groups: str = "CheetahRun;HumanoidRun;CartpoleSwingup;dmc"
    """Semicolon-separated task specs, each measured as one multi-task program."""
    chunk: int = 1000
    """Iterations per compiled chunk (the run loop's default)."""
    chunks: int = 1
    """Timed chunks of each kind (warm-up, learning)."""
    learning: bool = True
    """Also time learning chunks (width-128 critic, batch 128, UTD 2)."""
    num_envs: int = 1
    num_seeds: int = 1
    out: str = ""


def measure(tasks: str, args: Args, log) -> dict:
    run = RunConfig(tasks=tasks, num_envs=args.num_envs, num_seeds=args.num_seeds, batch_size=128,
                    utd=2, chunk_iterations=args.chunk, warmup_iterations=(1 + args.chunks) * args.chunk,
                    eval_every=args.chunk, total_iterations=1_000_000 * args.chunk, eval_episodes=1,
                    buffer_capacity=100_000)
    built = program.build(program.plan("mjx", Experiment(run, SACConfig(critic_width=128, actor_width=128))))
    names, prog = built.plan.names, built.program
    t0 = time.perf_counter()
    state = prog.fresh_state()
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    learn_from = jnp.int32(run.warmup_iterations)
    t0 = time.perf_counter()
    chunk = prog.compile_chunk(state)
    compile_s = time.perf_counter() - t0

    def timed(n, it):
        nonlocal state
        t0 = time.perf_counter()
        for _ in range(n):
            state, metrics, _ = chunk(state, jnp.int32(it), learn_from)
            it += args.chunk
        jax.block_until_ready(state)
        return time.perf_counter() - t0, it

    first_s, it = timed(1, 0)  # untimed: first call
    env_s, it = timed(args.chunks, it)
    record = dict(tasks=tasks, num_tasks=len(names), num_envs=args.num_envs, num_seeds=args.num_seeds,
                  chunk=args.chunk, init_s=init_s, compile_s=compile_s, first_chunk_s=first_s,
                  env_only_iterations_per_s=args.chunks * args.chunk / env_s)
    log(f"{tasks}: {len(names)} tasks, compile {compile_s:.1f}s, env-only "
        f"{record['env_only_iterations_per_s']:.1f} it/s")
    if args.learning:
        learn_s, it = timed(args.chunks, it)
        record.update(learning_iterations_per_s=args.chunks * args.chunk / learn_s,
                      physics_share=(env_s / args.chunks) / (learn_s / args.chunks))
        log(f"{tasks}: learning {record['learning_iterations_per_s']:.1f} it/s, physics share "
            f"{record['physics_share']:.2f}")
    return record


def main(args: Args):
    program.enable_compilation_cache()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = [measure(g, args, log) for g in args.groups.split(";") if g]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), commit=commit,
                  device=jax.devices()[0].device_kind, command=" ".join(sys.argv), records=records)
    out = Path(args.out or f"bench/results/env-rate-{datetime.date.today().isoformat()}-{commit}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in records:
        print(json.dumps(r))
    log(f"wrote {out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
