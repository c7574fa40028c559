"""Throughput of purejaxbrc's fused training loop, side by side with brax SAC and an unfused loop.

    python bench/throughput.py --quick     # CPU: small critic + both comparisons, < 10 min
    python bench/throughput.py             # + paper preset on humanoids, MinAtar, sweeps
    python bench/throughput.py --configs paper --no-compare --no-sweeps   # one configuration
    python bench/throughput.py --width-sweep   # learning it/s by critic width, beside the authors' code
    python bench/throughput.py --population    # population-it/s on 1, 2, 4 (simulated) devices

Per configuration (bench/fused.py) it measures compile seconds (apart from running), iterations/s,
env-steps/s, gradient steps/s, the env-only rate (warm-up iterations: act, step, insert, no
gradient steps), peak memory, and the update's achieved FLOP/s and MFU: FLOPs counted from the
matmul shapes of one gradient step, times gradient steps per second in the running loop, over
this device's measured matmul rate (bench/device.py).

It prints a table and writes `--out` (default `bench/results/<device>-<date>.json`) with one
record per configuration plus the device and versions, and a PNG of the sweeps beside it. For a
GPU window with a time budget, bench/suite.py runs a prioritised list of these measurements.
"""

import dataclasses
import datetime
import json
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import tyro
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench import population
from bench.compare import CHEAP, compare
from bench.device import cpu_model, device_slug
from bench.fused import bench_config, measure_fused
from bench.width import parse_widths, width_sweep
from purejaxbrc import program, rundir
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError, Experiment, RunConfig
from purejaxbrc.dqn import DQNConfig
from purejaxbrc.sac import SACConfig


@dataclass(frozen=True)
class Args:
    quick: bool = False
    """Only the small-critic configuration and the two comparisons (CPU: < 10 minutes)."""
    configs: str = ""
    """Comma-separated subset of: small, paper, minatar (default: small with --quick, else all)."""
    sweeps: bool = True
    """Sweep --num-seeds, environments per task and critic width on the small configuration
    (skipped with --quick)."""
    compare: bool = True
    """Run brax SAC and the unfused loop side by side with the fused loop."""
    compare_width: int = 128
    """Network width of the comparison (both methods)."""
    compare_batch: int = 128
    """Batch per task of the comparison (ours samples batch x tasks over all tasks)."""
    compare_steps: int = 0
    """Env steps per task and seed in each comparison run, warm-up included (0: 600 with
    --quick, else 2000)."""
    compare_seeds: int = 4
    timed_chunks: int = 3
    """Chunks timed per configuration, after an untimed warm-up chunk."""
    width_sweep: bool = False
    """Only the width sweep: learning iterations/s per `--widths` pair on CartpoleSwingup (one
    seed, UTD 2, actor width 256), beside the authors' code measured on this machine
    (`--reference`)."""
    widths: str = "128:128,256:256,512:256,1024:256,2048:256"
    """critic_width:batch_size pairs of the width sweep."""
    reference: str = "bench/results/reference-cpu-2core.json"
    """The authors' code's learning iterations/s by critic width and batch (`bench/reference.md`)."""
    population: bool = False
    """Only the population scaling: 4 members on 1, 2, 4 simulated devices (CPU), or 1-16 members on
    one accelerator; each point in its own process (bench/population.py)."""
    tiny: bool = False
    """Tiny networks and chunks, no comparisons or sweeps: checks the benchmark runs (tests)."""
    out: str = ""
    """JSON output; default bench/results/<device>-<date>.json. The sweep plot goes beside it."""


# -- configurations --------------------------------------------------------------------------------
def configurations(args: Args) -> dict[str, tuple[str, Experiment]]:
    """name -> (kind, experiment)."""
    if args.tiny:
        return {"small": ("mjx", bench_config(Experiment(
            RunConfig(tasks="CartpoleBalance", batch_size=16, buffer_capacity=1000, episode_length=50),
            SACConfig(critic_width=16, actor_width=16)), chunk=20))}
    cpu = jax.default_backend() == "cpu"  # CPU: the same programs, sized to finish in minutes
    return {
        "small": ("mjx", bench_config(Experiment(
            RunConfig(tasks=CHEAP, batch_size=128, buffer_capacity=100_000),
            SACConfig(critic_width=128, actor_width=128)), chunk=250)),
        "paper": ("mjx", bench_config(Experiment(RunConfig(tasks="humanoids", batch_size=1024), SACConfig()),
                                      chunk=2 if cpu else 250)),  # the warm-up grows to fill a batch
        "minatar": ("minatar", bench_config(Experiment(
            RunConfig(tasks="minatar", batch_size=128 if cpu else 1024, num_envs=16 if cpu else 64,
                      buffer_capacity=100_000),
            DQNConfig(critic_width=256 if cpu else 4096)), chunk=100 if cpu else 500)),
    }


SWEEPS = {"num_seeds": (1, 2, 4, 8), "num_envs": (1, 4, 16), "critic_width": (64, 128, 256, 512)}


# -- output ---------------------------------------------------------------------------------------
COLUMNS = (("name", "{}"), ("compile_s", "{:.1f}"), ("iterations_per_s", "{:,.1f}"),
           ("env_steps_per_s", "{:,.0f}"), ("grad_steps_per_s", "{:,.1f}"), ("env_share", "{:.2f}"),
           ("peak_memory_bytes", "{:.3g}"), ("achieved_flops_per_s", "{:.3g}"), ("mfu", "{:.4f}"))


def table(records) -> str:
    rows = [[c for c, _ in COLUMNS]]
    for r in records:
        rows.append([fmt.format(r[c]) if r.get(c) is not None else "-" for c, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)


def plot_sweeps(records, path: Path) -> bool:
    sweeps = {}
    for r in records:
        if r.get("sweep"):
            sweeps.setdefault(r["sweep"], []).append(r)
    if not sweeps:
        return False
    fig = Figure(figsize=(4.2 * len(sweeps), 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sweeps), squeeze=False)
    for ax, (name, rs) in zip(axes[0], sweeps.items()):
        xs = [r[name] for r in rs]
        ax.plot(xs, [r["env_steps_per_s"] for r in rs], "o-", label="env-steps/s")
        ax.plot(xs, [r["grad_steps_per_s"] for r in rs], "s--", label="gradient steps/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(name.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"purejaxbrc fused loop, small config, {jax.devices()[0].device_kind}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(args: Args):
    default = "small" if args.quick or args.tiny else "small,paper,minatar"
    names = [n for n in (args.configs or default).split(",") if n]
    all_configs = configurations(args)
    unknown = [n for n in names if n not in all_configs]
    if unknown:
        raise ConfigError(f"unknown --configs {', '.join(unknown)}; known: {', '.join(all_configs)}")
    if args.timed_chunks <= 0 or args.compare_seeds <= 0 or 0 < args.compare_steps < 300:
        raise ConfigError("--timed-chunks and --compare-seeds must be > 0, --compare-steps 0 or >= 300")
    parse_widths(args.widths)
    out = Path(args.out or f"bench/results/{device_slug()}-{datetime.date.today().isoformat()}.json")
    program.enable_compilation_cache()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    records, ratios = [], {}
    device = jax.devices()[0]
    head = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), device=device.device_kind,
                platform=device.platform, cpu=cpu_model(), cpu_count=os.cpu_count(),
                versions=rundir.run_info(None)["versions"], command=" ".join(sys.argv))
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(more=()):
        """`out` rewritten with every record so far: a later failure loses no figure."""
        records.extend(more)
        out.write_text(json.dumps(dict(head, max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                                       **ratios, records=records), indent=1, default=float) + "\n")
    if args.width_sweep or args.population:
        names, args = [], dataclasses.replace(args, sweeps=False, compare=False)
    if args.width_sweep:
        save(width_sweep(args.widths, args.reference, args.timed_chunks, log))
    if args.population:
        gpu = jax.default_backend() != "cpu"
        save([dict(r, name=f"population/devices={r['devices']}/members={r['members']}")
              for r in population.sweep([1] if gpu else [1, 2, 4], [1, 2, 4, 8, 16] if gpu else [4],
                                        chunk=250, chunks=2, log=log)])
    for name in names:
        kind, config = all_configs[name]
        log(f"measuring {name} ...")
        save([dict(measure_fused(kind, config, args.timed_chunks), name=name)])
    if args.sweeps and not (args.quick or args.tiny) and "small" in all_configs:
        kind, base = all_configs["small"]
        for field, values in SWEEPS.items():
            for v in values:
                log(f"sweep {field}={v} ...")
                config = base.replace(**{field: v})
                if field == "critic_width":
                    config = config.replace(actor_width=v)
                save([dict(measure_fused(kind, config, args.timed_chunks), name=f"small/{field}={v}", sweep=field)])
    if args.compare and not args.tiny:
        more, got = compare(args, log)
        ratios.update(got)
        save(more)
    save()
    print(table([r for r in records if "env_steps_per_s" in r]))
    for r in records:
        if "ratio_vs_reference" in r:
            print(f"{r['name']}: {r['iterations_per_s']:.2f} it/s, the authors' code "
                  f"{r['reference_iterations_per_s']:.2f}: {r['ratio_vs_reference']:.2f}x")
        if "population_iterations_per_s" in r:
            print(f"{r['name']}: {r['population_iterations_per_s']:.1f} population-iterations/s")
    for k, v in ratios.items():
        print(f"{k} = {v:.2f}")
    if plot_sweeps(records, out.with_suffix(".png")):
        log(f"wrote {out.with_suffix('.png')}")
    log(f"wrote {out}")
    return json.loads(out.read_text())


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
