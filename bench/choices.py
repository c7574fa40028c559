"""The CPU-specific implementation choices, each against the plain alternative, in one process.

    python bench/choices.py                          # widths 128, 512 and 1024, 5 rounds
    python bench/choices.py --widths 512:256 --rounds 3

On the width sweep's configuration (`throughput.width_experiment`: CartpoleSwingup, one seed,
UTD 2) it compiles the shipped chunk and one chunk per alternative, then times them in
alternating rounds of one chunk each, so the machine's drift hits all of them alike. Per
alternative it reports the median over rounds of (shipped it/s) / (alternative it/s) from the
same round: above 1, the shipped choice is faster.

Then one chunk of the shipped program runs under the XLA profiler and its thunk time per
iteration is split into matmuls (plain dots and fusions holding one) and everything else:
the matmuls' rate against the best f32 matmul of this process says how much a faster
implementation of the rest could still gain. Writes `--out` (JSON).
"""

import contextlib
import datetime
import gzip
import json
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import tyro

from bench.throughput import cpu_model, device_slug, peak_flops, start_fused, update_flops, width_experiment
from purejaxbrc import bronet, run
from purejaxbrc.config import ConfigError
from purejaxbrc.run import enable_compilation_cache, exit_on_error, run_info


@dataclass(frozen=True)
class Args:
    widths: str = "128:128,512:256,1024:256"
    """critic_width:batch_size pairs."""
    rounds: int = 5
    """Timed rounds; each runs one chunk of every variant."""
    profile: bool = True
    """Profile one chunk of the shipped program per width (matmul vs other thunk time)."""
    out: str = ""
    """JSON output; default bench/results/choices-<device>-<date>.json."""


_compile_lowered = run.compile_lowered


def _ynn_dots_only(lowered, batched_members: bool = True):
    return _compile_lowered(lowered, batched_members=True)

# name -> (module, attribute, the plain alternative to the shipped choice)
ALTERNATIVES = {
    "autodiff matmul gradient": (bronet, "matmul", lambda x, w: x @ w),
    "jnp.mean row means": (bronet, "row_mean", lambda x: jnp.mean(x, axis=-1, keepdims=True)),
    "autodiff LayerNorm gradient": (bronet, "layer_norm",
                                    lambda x, scale, bias, eps: bronet._layer_norm_fwd(x, scale, bias, eps)[0]),
    # Shipped: XLA:CPU's defaults where a device runs one member (as here), YNNPACK kept to dots
    # where it vmaps several (run.CPU_BATCHED_OPTIONS).
    "YNNPACK kept to dots": (run, "compile_lowered", _ynn_dots_only),
}


@contextlib.contextmanager
def replaced(module, name, value):
    """`module.name = value` while tracing and compiling a variant."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def parse_widths(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in pair.split(":")) for pair in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) <= 0 for p in pairs):
        raise ConfigError(f"--widths {text!r}: expected positive critic_width:batch_size pairs, e.g. 512:256")
    return pairs


# -- the profile ----------------------------------------------------------------------------------
def matmul_thunks(hlo_text: str) -> set[str]:
    """Names of the instructions of an optimised HLO module that are or hold a dot: the thunks
    the CPU runtime names after them."""
    holds_dot, computation = set(), None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and " = " not in line:
            computation = head.group(1)
        elif " dot(" in line and computation:
            holds_dot.add(computation)
    names = set()
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?(?: dot\(|calls=%([\w.\-]+))", hlo_text):
        if m.group(2) is None or m.group(2) in holds_dot:
            names.add(m.group(1))
    return names


def profile_chunk(started) -> dict:
    """Thunk time per iteration of one chunk under the XLA profiler, matmuls apart."""
    hlo = started.chunk.as_text()
    matmuls = matmul_thunks(hlo)
    # Control flow thunks last as long as the thunks they run: leave them out.
    thunks = {n for n in re.findall(r"%([\w.\-]+) = ", hlo) if not n.startswith(("while", "conditional", "call"))}
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        wall, _ = started.advance(1)
        jax.profiler.stop_trace()
        (trace,) = Path(trace_dir).glob("**/*perfetto_trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    us = {"matmul": 0.0, "other": 0.0}
    for e in events:
        if e.get("ph") == "X" and e["name"] in thunks:
            us["matmul" if e["name"] in matmuls else "other"] += e.get("dur", 0)
    its = started.experiment.run.chunk
    config = started.experiment.run
    flops = update_flops(started.agent, started.state, config, len(started.names)) * config.utd
    matmul_s = us["matmul"] / 1e6 / its
    return dict(profiled_wall_ms_per_it=1e3 * wall / its, matmul_thunk_ms_per_it=1e3 * matmul_s,
                other_thunk_ms_per_it=us["other"] / 1e3 / its, update_flops_per_it=flops,
                matmul_flops_per_thunk_s=flops / matmul_s if matmul_s else None,
                note="thunk times sum over threads (concurrent thunks each count in full); matmul "
                     "thunks include LayerNorm's row-mean products")


# -- the A/B --------------------------------------------------------------------------------------
def ab(width: int, batch: int, rounds: int, log):
    """Median it/s of the shipped chunk and each alternative, and the shipped `Started`."""
    experiment = width_experiment(width, batch)
    log(f"width {width}, batch {batch}: compiling the shipped chunk and {len(ALTERNATIVES)} alternatives ...")
    variants = {"shipped": start_fused("mjx", experiment)}
    for name, (module, attr, value) in ALTERNATIVES.items():
        with replaced(module, attr, value):
            variants[name] = start_fused("mjx", experiment)
    rates = {name: [] for name in variants}
    for r in range(rounds):
        for name, started in variants.items():
            wall, _ = started.advance(1)
            rates[name].append(experiment.run.chunk / wall)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in rates.items()))
    shipped = rates["shipped"]
    record = dict(critic_width=width, batch_size=batch, chunk_iterations=experiment.run.chunk, rounds=rounds,
                  iterations_per_s={n: dict(median=statistics.median(v), best=max(v), rounds=v)
                                    for n, v in rates.items()},
                  shipped_over_alternative={n: statistics.median(s / a for s, a in zip(shipped, v))
                                            for n, v in rates.items() if n != "shipped"},
                  compile_s={n: s.compile_s for n, s in variants.items()})
    return record, variants["shipped"]


def main(args: Args):
    if jax.default_backend() != "cpu":
        raise ConfigError("bench/choices.py compares CPU-specific choices: run it on the CPU backend")
    if args.rounds <= 0:
        raise ConfigError("--rounds must be > 0")
    pairs = parse_widths(args.widths)
    out = Path(args.out or f"bench/results/choices-{device_slug()}-{datetime.date.today().isoformat()}.json")
    enable_compilation_cache()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = []
    for width, batch in pairs:
        record, shipped = ab(width, batch, args.rounds, log)
        if args.profile:
            record["profile"] = profile_chunk(shipped)
        records.append(record)
        del shipped
    peak, peak_source = peak_flops("float32")
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), cpu=cpu_model(),
                  versions=run_info(None)["versions"], command=" ".join(sys.argv),
                  peak_flops_per_s=peak, peak_flops_source=peak_source, records=records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in records:
        ratios = ", ".join(f"{n} {v:.2f}x" for n, v in r["shipped_over_alternative"].items())
        print(f"width {r['critic_width']}/{r['batch_size']}: shipped "
              f"{r['iterations_per_s']['shipped']['median']:.2f} it/s; shipped over: {ratios}")
        if "profile" in r:
            p = r["profile"]
            print(f"  per iteration: {p['profiled_wall_ms_per_it']:.1f} ms wall, matmul thunks "
                  f"{p['matmul_thunk_ms_per_it']:.1f} ms, other thunks {p['other_thunk_ms_per_it']:.1f} ms; "
                  f"matmuls at {p['matmul_flops_per_thunk_s'] / 1e9:.0f} GFLOP/s per thunk-second "
                  f"(best f32 matmul of this process: {peak / 1e9:.0f} GFLOP/s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
