"""Population throughput: one program training many members (seeds x sweep variants), by device
count and by population size.

    python bench/population.py                                  # CPU: 4 members on 1, 2, 4 simulated devices
    python bench/population.py --devices 1 --members 1,2,4,8,16 # one device (a GPU), growing populations

Each (devices, members) point runs in its own process, since a process's device count is fixed
when JAX starts (`--xla_force_host_platform_device_count` simulates CPU devices). A point builds
the small configuration (CartpoleSwingup, width-128 critic and actor, batch 128, UTD 2),
compiles the population's chunk (timed apart), runs one untimed chunk, then times `--chunks`
learning chunks. Reported: iterations/s of the program and population-iterations/s (members x
iterations/s). On a CPU, simulated devices share the machine's cores: on 2 cores, more devices
cannot run more work at once, they only split it differently.
"""

import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Args:
    devices: str = "1,2,4"
    """Comma-separated device counts (CPU: simulated devices)."""
    members: str = "4"
    """Comma-separated population sizes (each a multiple of every device count)."""
    chunk: int = 250
    chunks: int = 2
    out: str = ""
    child: str = ""
    """Internal: `devices,members` measured in this process."""


def measure(devices: int, members: int, chunk: int, chunks: int) -> dict:
    import jax
    import jax.numpy as jnp

    # Imported in the child only: the parent process never starts JAX.
    from purejaxbrc import program
    from purejaxbrc.config import Experiment, RunConfig
    from purejaxbrc.sac import SACConfig
    program.enable_compilation_cache()
    assert jax.device_count() == devices, (jax.device_count(), devices)
    run = RunConfig(tasks="CartpoleSwingup", num_seeds=members, batch_size=128, utd=2, chunk_iterations=chunk,
                    warmup_iterations=chunk, eval_every=chunk, total_iterations=1_000_000 * chunk,
                    eval_episodes=1, buffer_capacity=100_000)
    built = program.build(program.plan("mjx", Experiment(run, SACConfig(critic_width=128, actor_width=128))))
    state = built.program.fresh_state()
    t0 = time.perf_counter()
    step = built.program.compile_chunk(state)
    compile_s = time.perf_counter() - t0
    it = 0
    for timed in (False, True):  # the warm-up chunk untimed, then the learning chunks
        t0 = time.perf_counter()
        for _ in range(chunks if timed else 1):
            state, _, _ = step(state, jnp.int32(it), jnp.int32(chunk))
            it += chunk
        jax.block_until_ready(state)
    run_s = time.perf_counter() - t0
    return dict(devices=devices, members=members, device_kind=jax.devices()[0].device_kind,
                compile_s=compile_s, iterations_per_s=chunks * chunk / run_s,
                population_iterations_per_s=members * chunks * chunk / run_s)


def sweep(devices: list[int], members: list[int], chunk: int, chunks: int, log=print) -> list[dict]:
    """One record per (devices, members) point with `members` a multiple of `devices`, each
    measured in a child process started with that many (simulated, on CPU) devices."""
    records = []
    for d in devices:
        for m in members:
            if m % d:
                continue
            flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={d}".strip()
            env = dict(os.environ, XLA_FLAGS=flags, XLA_PYTHON_CLIENT_PREALLOCATE="false",  # the parent may hold a GPU
                       PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
            out = subprocess.run([sys.executable, __file__, "--child", f"{d},{m}", "--chunk", str(chunk),
                                  "--chunks", str(chunks)], capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode:
                sys.exit(f"devices={d} members={m} failed:\n{out.stderr[-3000:]}")
            record = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"{d} devices, {m} members: compile {record['compile_s']:.1f}s, {record['iterations_per_s']:.1f} "
                f"it/s, {record['population_iterations_per_s']:.1f} population-it/s")
            records.append(record)
    return records


def main(args: Args):
    if args.child:
        devices, members = map(int, args.child.split(","))
        print(json.dumps(measure(devices, members, args.chunk, args.chunks)))
        return
    records = sweep([int(d) for d in args.devices.split(",")], [int(m) for m in args.members.split(",")],
                    args.chunk, args.chunks, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    kind = records[0]["device_kind"].lower().replace(" ", "-") if records else "none"
    out = Path(args.out or ROOT / f"bench/results/population-{kind}-{datetime.date.today()}-{commit}.json")
    out.write_text(json.dumps(dict(date=datetime.datetime.now().isoformat(timespec="seconds"), commit=commit,
                                   cpu_count=os.cpu_count(), command=" ".join(sys.argv), records=records),
                              indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(tyro.cli(Args))
