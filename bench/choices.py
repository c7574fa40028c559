"""The CPU-specific implementation choices, each against the plain alternative, in one process.

    python bench/choices.py                          # widths 128, 512 and 1024, 2 pairs of rounds
    python bench/choices.py --widths 512:256 --pairs 3

On the width sweep's configuration (`throughput.width_experiment`: CartpoleSwingup, one seed,
UTD 2) it compiles the shipped chunk, a second copy of it (the A/A control: what the noise
alone makes of a ratio), one chunk per alternative and one with the plain matmul gradient and
the plain LayerNorm together, then times them in pairs of rounds of one chunk each: a round in
an order rotated from pair to pair, then the same order reversed, so a drift linear in time
cancels within a pair. Per variant it reports the median, min and max over pairs of (shipped
it/s) / (variant it/s), each over the pair's two rounds: above 1, the shipped choice is faster.

Then one chunk of the shipped program runs under the XLA profiler and the time of its thunks
per iteration is split into matmuls (dots and fusions holding one, LayerNorm's row-mean
products included) and everything else (elementwise fusions, reductions, copies, the
environment step, buffer sampling). Writes `--out` (JSON).
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
from unittest import mock

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import tyro

from bench.device import cpu_model, device_slug
from bench.fused import counted_update_flops, start_fused
from bench.width import parse_widths, width_experiment
from purejaxbrc import bronet, program, rundir
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError


@dataclass(frozen=True)
class Args:
    widths: str = "128:128,512:256,1024:256"
    """critic_width:batch_size pairs."""
    pairs: int = 2
    """Timed pairs of rounds; a round runs one chunk of every variant."""
    profile: bool = True
    """Profile one chunk of the shipped program per width (matmul vs other thunk time)."""
    out: str = ""
    """JSON output; default bench/results/choices-<device>-<date>.json."""


def _plain_layer_norm(x, scale, bias, eps):
    """LayerNorm as flax's `nn.LayerNorm` computes it by default (one-pass variance), gradient
    by autodiff."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean))
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def _ynn_dots_only(lowered, batched_members: bool = True):
    del batched_members  # as if the device vmapped several members; no fallback to the defaults
    return lowered.compile(compiler_options=program.CPU_BATCHED_OPTIONS)


# name -> [(module, attribute, the plain alternative to the shipped choice)]
ALTERNATIVES = {
    "autodiff matmul gradient": [(bronet, "matmul", lambda x, w: x @ w)],
    "jnp.mean row means (hand-written gradient kept)": [(bronet, "row_mean", lambda x: jnp.mean(x, axis=-1, keepdims=True))],
    "plain LayerNorm (jnp.mean, autodiff)": [(bronet, "layer_norm", _plain_layer_norm)],
    # Shipped: XLA:CPU's defaults where a device runs one member (as here), YNNPACK kept to dots
    # where it vmaps several (program.CPU_BATCHED_OPTIONS).
    "YNNPACK kept to dots": [(program, "compile_lowered", _ynn_dots_only)],
}
ALTERNATIVES["all plain (matmul, LayerNorm)"] = (ALTERNATIVES["autodiff matmul gradient"]
                                                 + ALTERNATIVES["plain LayerNorm (jnp.mean, autodiff)"])


def replaced(replacements) -> contextlib.ExitStack:
    """`module.name = value` for each replacement while a variant is traced and compiled."""
    with contextlib.ExitStack() as stack:  # a patch that fails undoes those already applied
        for module, name, value in replacements:
            stack.enter_context(mock.patch.object(module, name, value))
        return stack.pop_all()


# -- the profile ----------------------------------------------------------------------------------
CONTROL_FLOW = ("while", "conditional", "call")  # their thunks last as long as the thunks they run


def thunk_kinds(hlo_text: str) -> dict[str, str]:
    """The thunks of an optimised HLO module that the profiler times, by the name the CPU runtime
    gives them (their instruction's): "matmul" for a dot or a fusion holding one at any depth,
    else "other". Parameters, constants and tuples, and control flow (whose thunks contain the
    thunks they run), are left out."""
    body, calls, computation = {}, {}, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and " = " not in line:
            computation = head.group(1)
            body[computation], calls[computation] = [], set()
        elif computation and " = " in line:
            body[computation].append(line)
            calls[computation].update(re.findall(r"calls=%([\w.\-]+)", line))

    def holds_dot(name, seen=()):
        return any(" dot(" in line for line in body.get(name, ())) or any(
            holds_dot(c, seen + (name,)) for c in calls.get(name, ()) if c not in seen)

    kinds = {}
    for lines in body.values():
        for line in lines:
            m = re.search(r"%([\w.\-]+) = .*? (\w[\w-]*)\(", line)
            if not m or m.group(2) in CONTROL_FLOW + ("parameter", "constant", "tuple", "get-tuple-element"):
                continue
            called = re.findall(r"calls=%([\w.\-]+)", line)
            kinds[m.group(1)] = "matmul" if m.group(2) == "dot" or any(map(holds_dot, called)) else "other"
    return kinds


def profile_chunk(started) -> dict:
    """Thunk time per iteration of one chunk under the XLA profiler, matmuls apart."""
    kinds = thunk_kinds(started.chunk.as_text())
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            wall, _ = started.advance(1)
        (trace,) = Path(trace_dir).glob("**/*perfetto_trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    us = {"matmul": 0.0, "other": 0.0}
    for e in events:
        if e.get("ph") == "X" and e["name"] in kinds:
            us[kinds[e["name"]]] += e.get("dur", 0)
    config = started.experiment.run
    its = config.chunk
    return dict(profiled_wall_ms_per_it=1e3 * wall / its, matmul_thunk_ms_per_it=us["matmul"] / 1e3 / its,
                other_thunk_ms_per_it=us["other"] / 1e3 / its,
                update_flops_per_it=counted_update_flops(started.built.agent, config.batch_size) * config.utd,
                note="thunk durations are wall time on the thread that ran them (a thread switched out "
                     "still counts), summed over threads; matmul thunks include LayerNorm's row-mean "
                     "products; update_flops_per_it is counted from the update's matmul shapes")


# -- the A/B --------------------------------------------------------------------------------------
def ab(width: int, batch: int, pairs: int, log):
    """Per variant: it/s per pair of rounds and the shipped/variant ratio per pair; and the shipped
    `Started`, for the profile."""
    experiment = width_experiment(width, batch)
    log(f"width {width}, batch {batch}: compiling the shipped chunk twice and {len(ALTERNATIVES)} alternatives ...")
    variants = {"shipped": start_fused("mjx", experiment), "shipped (A/A control)": start_fused("mjx", experiment)}
    for name, replacements in ALTERNATIVES.items():
        with replaced(replacements):
            variants[name] = start_fused("mjx", experiment)
    names = list(variants)
    seconds = {name: [] for name in names}  # per pair: the variant's wall seconds over both rounds
    for pair in range(pairs):
        order = names[pair % len(names):] + names[:pair % len(names)]
        spent = dict.fromkeys(names, 0.0)
        for name in order + order[::-1]:  # reversed: each variant's time offset to the others cancels
            spent[name] += variants[name].advance(1)[0]
        for name in names:
            seconds[name].append(spent[name])
        log(f"  pair {pair + 1}/{pairs}: " + ", ".join(f"{n} {2 * experiment.run.chunk / t:.2f}"
                                                      for n, t in spent.items()))
    ratios = {n: [a / s for s, a in zip(seconds["shipped"], v)] for n, v in seconds.items() if n != "shipped"}
    rates = {n: [2 * experiment.run.chunk / t for t in v] for n, v in seconds.items()}
    record = dict(critic_width=width, batch_size=batch, chunk_iterations=experiment.run.chunk, pairs=pairs,
                  iterations_per_s={n: dict(median=statistics.median(v), pairs=v) for n, v in rates.items()},
                  shipped_over={n: dict(median=statistics.median(v), min=min(v), max=max(v))
                                for n, v in ratios.items()},
                  compile_s={n: s.compile_s for n, s in variants.items()})
    return record, variants["shipped"]


def main(args: Args):
    if args.pairs <= 0:
        raise ConfigError("--pairs must be > 0")
    configurations = parse_widths(args.widths)
    if jax.default_backend() != "cpu":
        raise ConfigError("bench/choices.py compares CPU-specific choices: run it on the CPU backend")
    out = Path(args.out or f"bench/results/choices-{device_slug()}-{datetime.date.today().isoformat()}.json")
    program.enable_compilation_cache()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = []
    for width, batch in configurations:
        record, shipped = ab(width, batch, args.pairs, log)
        if args.profile:
            record["profile"] = profile_chunk(shipped)
        records.append(record)
        del shipped
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), cpu=cpu_model(),
                  versions=rundir.run_info(None)["versions"], command=" ".join(sys.argv), records=records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in records:
        ratios = ", ".join(f"{n} {v['median']:.2f}x" for n, v in r["shipped_over"].items())
        print(f"width {r['critic_width']}/{r['batch_size']}: shipped "
              f"{r['iterations_per_s']['shipped']['median']:.2f} it/s; shipped over: {ratios}")
        if "profile" in r:
            p = r["profile"]
            print(f"  per iteration: {p['profiled_wall_ms_per_it']:.1f} ms wall, matmul thunks "
                  f"{p['matmul_thunk_ms_per_it']:.1f} ms, other thunks {p['other_thunk_ms_per_it']:.1f} ms")
    print(f"wrote {out}")


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
