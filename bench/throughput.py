"""Throughput of purejaxbrc's fused training loop, side by side with brax SAC and an unfused loop.

    python bench/throughput.py --quick     # CPU: small critic + both comparisons, < 10 min
    python bench/throughput.py             # + paper preset on humanoids, MinAtar, sweeps
    python bench/throughput.py --configs paper --no-compare --no-sweeps   # one configuration
    python bench/throughput.py --width-sweep   # learning it/s by critic width, beside the authors' code
    python bench/throughput.py --population    # population-it/s on 1, 2, 4 (simulated) devices

Per configuration it measures compile seconds (apart from running), iterations/s, env-steps/s,
gradient steps/s, the env-only rate (warm-up iterations: act, step, insert, no gradient steps),
peak memory, and the update's achieved FLOP/s and MFU. FLOPs are XLA's cost analysis of one
lowered gradient step (`agent.update`: critic with its target pass, actor, temperature), times
gradient steps per second in the running loop; the peak is the device's datasheet dense peak
on GPU and, on CPU, the best f32 matmul rate measured in this process.

It prints a table and writes `--out` (default `bench/results/<device>-<date>.json`) with one
record per configuration plus the device and versions, and a PNG of the sweeps beside it.
"""

import dataclasses
import datetime
import functools
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import tyro

from purejaxbrc import kinds
from purejaxbrc.config import ConfigError, Experiment, RunConfig
from purejaxbrc.dqn import DQNConfig
from purejaxbrc.run import Program, enable_compilation_cache, exit_on_error, make_population, run_info
from purejaxbrc.sac import SACConfig
from purejaxbrc.sweep import hyperparameters
from purejaxbrc.train import make_train

CHEAP = "CartpoleBalance,CartpoleSwingup,PendulumSwingup"


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
def bench_config(base: Experiment, *, chunk: int, **overrides) -> Experiment:
    """`base` with a warm-up of one chunk and room for the timed chunks, and no evaluation."""
    return base.replace(warmup_iterations=chunk, chunk_iterations=chunk, eval_every=chunk,
                        total_iterations=1_000_000, eval_episodes=1, **overrides)


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
                                      chunk=2 if cpu else 250)),
        "minatar": ("minatar", bench_config(Experiment(
            RunConfig(tasks="minatar", batch_size=128 if cpu else 1024, num_envs=16 if cpu else 64,
                      buffer_capacity=100_000),
            DQNConfig(critic_width=256 if cpu else 4096)), chunk=100 if cpu else 500)),
    }


SWEEPS = {"num_seeds": (1, 2, 4, 8), "num_envs": (1, 4, 16), "critic_width": (64, 128, 256, 512)}


# -- the width sweep ---------------------------------------------------------------------------
def parse_widths(text: str) -> list[tuple[int, int]]:
    """`--widths`: comma-separated critic_width:batch_size pairs."""
    try:
        pairs = [tuple(int(v) for v in pair.split(":")) for pair in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) <= 0 for p in pairs):
        raise ConfigError(f"--widths {text!r}: expected positive critic_width:batch_size pairs, e.g. 512:256")
    return pairs


def width_experiment(width: int, batch: int) -> Experiment:
    """The configuration the authors' code was timed on: CartpoleSwingup (a cheap reset), one
    seed, UTD 2, the default actor (width 256), critic width and batch as given. Chunks shrink
    with width so each lasts seconds; the warm-up covers one batch."""
    chunk = max(10, 25_600 // width)
    experiment = bench_config(Experiment(RunConfig(tasks="CartpoleSwingup", batch_size=batch, utd=2,
                                                   buffer_capacity=100_000),
                                         SACConfig(critic_width=width)), chunk=chunk)
    return experiment.replace(warmup_iterations=-(-batch // chunk) * chunk)


def width_sweep(args: Args, log) -> list[dict]:
    """Learning iterations/s of `width_experiment` per `--widths` pair, beside the authors' code
    as measured on this CPU model (another model's figures would make a meaningless ratio)."""
    reference = {}
    if Path(args.reference).exists():
        for r in json.loads(Path(args.reference).read_text())["records"]:
            if r.get("cpu_model") == cpu_model() and r.get("cpu_count", os.cpu_count()) == os.cpu_count():
                reference[(r["task"], r["critic_width"], r["batch_size"])] = r
    if not reference:
        log(f"no figures of the authors' code on this CPU ({cpu_model()}) in {args.reference}: "
            "bench/lockstep.py --reference measures them side by side")
    records = []
    for width, batch in parse_widths(args.widths):
        experiment = width_experiment(width, batch)
        log(f"width sweep: critic width {width}, batch {batch} ...")
        record = dict(measure_fused("mjx", experiment, timed_chunks=args.timed_chunks), name=f"width={width}/batch={batch}",
                      sweep="critic_width")
        ref = reference.get(("cartpole-swingup", width, batch))
        if ref:
            record.update(reference_iterations_per_s=ref["learning_iterations_per_s"],
                          reference_cores=ref.get("learning_cores"),
                          ratio_vs_reference=record["iterations_per_s"] / ref["learning_iterations_per_s"])
            log(f"  {record['iterations_per_s']:.2f} it/s ({record['cores']:.2f} cores) vs the authors' "
                f"{ref['learning_iterations_per_s']:.2f}: {record['ratio_vs_reference']:.2f}x")
        records.append(record)
    return records


# -- the device -----------------------------------------------------------------------------------
# Dense datasheet peaks (FLOP/s). XLA runs f32 matmuls on these GPUs as TF32 by default.
GPU_PEAKS = {"H100": {"float32": 494.7e12, "bfloat16": 989.4e12},
             "H200": {"float32": 494.7e12, "bfloat16": 989.4e12},
             "A100": {"float32": 156e12, "bfloat16": 312e12}}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@functools.lru_cache
def peak_flops(dtype: str) -> tuple[float, str]:
    device = jax.devices()[0]
    for name, peaks in GPU_PEAKS.items():
        if name in device.device_kind:
            return peaks[dtype], f"datasheet dense {dtype} peak of {name}"
    n = 1024
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a).lower(a).compile()
    mm(a).block_until_ready()
    best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(10))
    return 2 * n**3 / best, f"best f32 {n}x{n} matmul measured in this process"


def device_slug() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu-{os.cpu_count()}core"
    return device.device_kind.lower().replace(" ", "-")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- measuring the fused loop ---------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time of this process, all threads: over a wall interval, the cores it kept busy."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def update_flops(agent, state, run, num_tasks: int) -> float:
    """XLA's FLOP count of one gradient step of one member, from the lowered `agent.update`."""
    one = lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype)  # noqa: E731  (drop the member axis)
    agent_state = jax.tree.map(one, state.agent)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((run.batch_size,) + x.shape[3:], x.dtype),
                         state.buffer.data)  # leaves [members, tasks, capacity, ...]
    tasks = jax.ShapeDtypeStruct((run.batch_size,), jnp.int32)
    scale = jax.ShapeDtypeStruct((num_tasks,), jnp.float32)
    key = jax.ShapeDtypeStruct(state.key.shape[1:], state.key.dtype)
    hp = hyperparameters(agent.config, {})
    update = jax.jit(lambda *args: agent.update(*args, hp))
    cost = update.lower(agent_state, batch, tasks, scale, key).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def peak_memory(compiled) -> tuple[int, str]:
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device memory_stats peak_bytes_in_use"
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return int(total), "XLA memory_analysis of the chunk (arguments + outputs + temporaries - donated)"


@dataclass
class Started:
    """A compiled chunk past its warm-up: `advance` runs learning chunks from where it stands."""

    experiment: Experiment
    names: tuple[str, ...]
    agent: object
    chunk: object  # the compiled chunk: (state, it, learn_from) -> (state, metrics, info)
    state: object
    it: int
    compile_s: float
    env_only_s: float  # seconds per warm-up chunk (act, step, insert; no gradient steps)

    def advance(self, chunks: int) -> tuple[float, float]:
        """Run `chunks` (> 0) chunks; their wall seconds and the cores this process kept busy."""
        if chunks <= 0:
            raise ValueError(f"advance({chunks}): at least one chunk")
        learn_from = jnp.int32(self.experiment.run.warmup_iterations)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        for _ in range(chunks):
            self.state, metrics, _ = self.chunk(self.state, jnp.int32(self.it), learn_from)
            self.it += self.experiment.run.chunk
        jax.block_until_ready((self.state, metrics))
        wall = time.perf_counter() - t0
        return wall, (cpu_seconds() - cpu0) / wall


def start_fused(kind: str, experiment: Experiment) -> Started:
    """Compile the population's chunk (the program the run loop calls), run the warm-up chunks
    (env only) and one learning chunk, untimed."""
    spec = kinds.get(kind)
    config = experiment.run
    names = spec.resolve_tasks(config.tasks)
    env, eval_env, agent = spec.build(experiment, names)
    program = Program(make_train(config, env, eval_env, agent), make_population(config))
    state = program.fresh_state()
    jax.block_until_ready(state)
    learn_from = jnp.int32(config.warmup_iterations)

    t0 = time.perf_counter()
    chunk = program.compile_chunk(state, 0, learn_from)
    compile_s = time.perf_counter() - t0

    warmup_chunks = len(range(0, config.warmup_iterations, config.chunk))
    t0 = time.perf_counter()
    for it in range(0, config.warmup_iterations, config.chunk):  # random actions, no updates
        state, _, _ = chunk(state, jnp.int32(it), learn_from)
    jax.block_until_ready(state)
    env_only_s = (time.perf_counter() - t0) / warmup_chunks
    started = Started(experiment, names, agent, chunk, state, config.warmup_iterations,
                      compile_s, env_only_s)
    started.advance(1)  # the first learning chunk
    return started


def measure_fused(kind: str, experiment: Experiment, timed_chunks: int) -> dict:
    """Start the chunk (`start_fused`), then time `timed_chunks` learning chunks."""
    started = start_fused(kind, experiment)
    run_s, cores = started.advance(timed_chunks)
    config, names, env_only_s = experiment.run, started.names, started.env_only_s

    its = timed_chunks * config.chunk
    steps_per_it = config.num_seeds * len(names) * config.num_envs
    flops = update_flops(started.agent, started.state, config, len(names))
    grad_steps_per_s = its * config.utd * config.num_seeds / run_s
    peak, peak_source = peak_flops(experiment.agent.critic_matmul_dtype)
    memory, memory_source = peak_memory(started.chunk)
    return dict(
        kind=kind, tasks=list(names), num_tasks=len(names), num_seeds=config.num_seeds,
        num_envs=config.num_envs, critic_width=experiment.agent.critic_width,
        actor_width=getattr(experiment.agent, "actor_width", None),
        batch_size=config.batch_size, utd=config.utd, matmul_dtype=experiment.agent.critic_matmul_dtype,
        chunk_iterations=config.chunk, timed_iterations=its,
        compile_s=started.compile_s, run_s=run_s,
        iterations_per_s=its / run_s, env_steps_per_s=its * steps_per_it / run_s,
        grad_steps_per_s=grad_steps_per_s,
        env_only_iterations_per_s=config.chunk / env_only_s,
        env_share=(env_only_s / config.chunk) / (run_s / its), cores=cores,
        peak_memory_bytes=memory, peak_memory_source=memory_source,
        update_flops=flops, flops_source="XLA cost_analysis of one lowered agent.update (per seed)",
        achieved_flops_per_s=flops * grad_steps_per_s, peak_flops_per_s=peak,
        peak_flops_source=peak_source, mfu=flops * grad_steps_per_s / peak,
    )


# -- the comparisons ------------------------------------------------------------------------------
def compare_config(args: Args, tasks: str, num_seeds: int, steps: int) -> Experiment:
    """Our side of a comparison: the networks, batch per task and UTD brax gets; a third of
    the steps warm up, a third learn untimed (brax's first epoch, which compiles), a third is
    timed (brax's second epoch)."""
    n = len(tasks.split(","))
    warmup = steps // 3
    return Experiment(
        RunConfig(tasks=tasks, num_seeds=num_seeds, batch_size=args.compare_batch * n, utd=2,
                  warmup_iterations=warmup, chunk_iterations=warmup, eval_every=warmup,
                  total_iterations=steps, eval_episodes=1),
        SACConfig(critic_width=args.compare_width, actor_width=args.compare_width, actor_depth=2))


def compare(args: Args, log) -> tuple[list[dict], dict]:
    """(i) one task, one seed and (ii) three tasks x `compare_seeds` seeds: our fused loop (one
    program) against brax SAC (one run per task and seed, one after another); for (i) also the
    unfused loop with our own agent."""
    from bench import brax_sac, unfused
    steps = args.compare_steps or (600 if args.quick else 2000)
    records, ratios = [], {}
    for label, tasks, seeds in (("single", "CartpoleSwingup", 1), ("multi", CHEAP, args.compare_seeds)):
        experiment = compare_config(args, tasks, seeds, steps)
        config = experiment.run
        log(f"{label}: fused loop, {tasks} x {seeds} seeds ...")
        ours = measure_fused("mjx", experiment, timed_chunks=max(1, steps // config.chunk - 2))
        ours.update(name=f"fused_{label}")
        hidden = 1 + 2 * experiment.agent.critic_depth  # BroNet matmuls before the head
        log(f"{label}: brax SAC, {len(tasks.split(','))} tasks x {seeds} seeds, one run each ...")
        runs = [brax_sac.measure(task, config.seed + s, env_steps=steps,
                                 warmup=config.warmup_iterations, width=args.compare_width,
                                 hidden_layers=hidden, batch_size=args.compare_batch, utd=config.utd)
                for task in tasks.split(",") for s in range(seeds)]
        brax = dict(name=f"brax_sac_{label}", kind="brax_sac", tasks=tasks.split(","), num_seeds=seeds,
                    runs=runs, width=args.compare_width, hidden_layers=hidden,
                    batch_size=args.compare_batch, utd=config.utd,
                    env_steps_per_s=sum(r["timed_env_steps"] for r in runs) / sum(r["timed_s"] for r in runs),
                    total_s=sum(r["total_s"] for r in runs))
        key = "ratio_vs_brax_sac_single" if label == "single" else "ratio_vs_brax_sac"
        ratios[key] = ours["env_steps_per_s"] / brax["env_steps_per_s"]
        log(f"{label}: fused {ours['env_steps_per_s']:,.1f} env-steps/s, brax SAC "
            f"{brax['env_steps_per_s']:,.1f} -> {key} = {ratios[key]:.2f}")
        records += [ours, brax]
        if label == "single":
            log("single: unfused loop ...")
            env, _, agent = kinds.build_mjx(experiment, (tasks,))
            slow = unfused.measure(config, env, agent, iterations=max(100, steps // 3),
                                   warmup=config.warmup_iterations)
            ratios["ratio_vs_unfused"] = ours["env_steps_per_s"] / slow["env_steps_per_s"]
            log(f"single: fused {ours['env_steps_per_s']:,.1f} env-steps/s, unfused "
                f"{slow['env_steps_per_s']:,.1f} -> ratio_vs_unfused = {ratios['ratio_vs_unfused']:.2f}")
            records.append(dict(slow, name="unfused_single", kind="unfused", tasks=[tasks], num_seeds=1,
                                critic_width=experiment.agent.critic_width, batch_size=config.batch_size,
                                utd=config.utd))
    return records, ratios


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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.4), squeeze=False)
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
    enable_compilation_cache()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    records, ratios = [], {}
    if args.width_sweep or args.population:
        names, args = [], dataclasses.replace(args, sweeps=False, compare=False)
    if args.width_sweep:
        records += width_sweep(args, log)
    if args.population:
        from bench import population
        gpu = jax.default_backend() != "cpu"
        records += [dict(r, name=f"population/devices={r['devices']}/members={r['members']}")
                    for r in population.sweep([1] if gpu else [1, 2, 4], [1, 2, 4, 8, 16] if gpu else [4],
                                              chunk=250, chunks=2, log=log)]
    for name in names:
        kind, config = all_configs[name]
        log(f"measuring {name} ...")
        records.append(dict(measure_fused(kind, config, args.timed_chunks), name=name))
    if args.sweeps and not (args.quick or args.tiny) and "small" in all_configs:
        kind, base = all_configs["small"]
        for field, values in SWEEPS.items():
            for v in values:
                log(f"sweep {field}={v} ...")
                config = base.replace(**{field: v})
                if field == "critic_width":
                    config = config.replace(actor_width=v)
                records.append(dict(measure_fused(kind, config, args.timed_chunks),
                                    name=f"small/{field}={v}", sweep=field))
    if args.compare and not args.tiny:
        more, ratios = compare(args, log)
        records += more

    device = jax.devices()[0]
    info = run_info(None)
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                  device=device.device_kind, platform=device.platform, cpu=cpu_model(),
                  cpu_count=os.cpu_count(), versions=info["versions"], command=" ".join(sys.argv),
                  max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  **ratios, records=records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
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
    return result


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
