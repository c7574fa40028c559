"""The measurements of bench/suite.py, in its order, each sized for an H100/H200 (and shrunk by
`--tiny` to a cheap task and tiny networks). An item reports each figure as soon as it exists
(`report(name=value)`), so a later failure in the same item never loses it.

- ceilings: the device's measured bf16 and f32 matmul rates (random data) and copy bandwidth.
- paper / paper_bf16: humanoids, width 4096, batch 1024, UTD 2, one seed (f32 / bf16 matmuls):
  compile and initial-state seconds, env-only and learning iterations/s, the time split of an
  iteration, peak memory, counted (and XLA's) FLOPs of a gradient step, MFU.
- population: 1, 2, 4 and 8 seeds of `paper` in one program (seed-iterations/s).
- minatar: the five MinAtar games x 64 environments, width 4096 (env-steps/s).
- small: CartpoleSwingup at widths 128 and 512, one seed (what bench/lockstep.py times beside
  the authors' code on the CPU).
- wide: critic width 16384 (the 1B-parameter critic): whether it fits, and its rate.
- script: experiments/brc_mjx.py on humanoids through an evaluation and a checkpoint, its
  start-up split from its log; then purejaxbrc.evaluate on that checkpoint.
- lowering: the paper configuration's and the five MinAtar games' chunk and evaluation
  exported for cuda and tpu, and the custom calls those platforms would lack.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax

from bench import lowering
from bench.device import copy_bandwidth, matmul_rate
from bench.fused import bench_config, measure_fused, with_full_warmup
from bench.width import width_experiment
from purejaxbrc import program
from purejaxbrc.config import Experiment, RunConfig
from purejaxbrc.dqn import DQNConfig
from purejaxbrc.sac import SACConfig

ROOT = Path(__file__).resolve().parent.parent
# Tests make an item fail on purpose: BENCH_SUITE_FAIL=<item> raises after its first figure.
FAIL = "BENCH_SUITE_FAIL"


class Report:
    """An item's figures, rewritten to `path` whole (write, then rename) after each call."""

    def __init__(self, path: Path, item: str):
        self.path, self.item, self.figures = Path(path), item, {}

    def __call__(self, **figures):
        self.figures.update(figures)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.figures, default=float))
        os.replace(tmp, self.path)
        if os.environ.get(FAIL) == self.item:
            raise RuntimeError(f"{FAIL}={self.item}: failing on purpose after a figure")

    @staticmethod
    def read(path: Path) -> dict:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            return {}


# -- configurations ---------------------------------------------------------------------------------
def paper(tiny: bool, **changes) -> Experiment:
    """The paper's configuration (`tiny`: one cheap task, tiny networks), with a warm-up that
    fills a batch (as a user's run must: every item plans it)."""
    if tiny:
        base = Experiment(RunConfig(tasks="CartpoleBalance", batch_size=32, buffer_capacity=2_000, episode_length=50),
                          SACConfig(critic_width=32, actor_width=32))
        return with_full_warmup("mjx", bench_config(base, chunk=20).replace(**changes))
    base = Experiment(RunConfig(tasks="humanoids", batch_size=1024), SACConfig())
    return with_full_warmup("mjx", bench_config(base, chunk=100).replace(**changes))


def minatar(tiny: bool) -> Experiment:
    if tiny:
        base = Experiment(RunConfig(tasks="Breakout-MinAtar", num_envs=4, batch_size=32, buffer_capacity=2_000),
                          DQNConfig(critic_width=32))
        return with_full_warmup("minatar", bench_config(base, chunk=20))
    base = Experiment(RunConfig(tasks="minatar", num_envs=64, buffer_capacity=100_000), DQNConfig())
    return with_full_warmup("minatar", bench_config(base, chunk=100))


# -- the items ------------------------------------------------------------------------------------------
def ceilings(tiny: bool, report: Report):
    n = 256 if tiny else 8192
    report(matmul_n=n, f32_matmul_flops_per_s=matmul_rate("float32", n))
    report(bf16_matmul_flops_per_s=matmul_rate("bfloat16", n))
    report(copy_bytes_per_s=copy_bandwidth(16 if tiny else 2048))


def _fused(kind: str, experiment: Experiment, report: Report, timed_chunks: int = 2):
    measure_fused(kind, experiment, timed_chunks, report)


def paper_f32(tiny: bool, report: Report):
    _fused("mjx", paper(tiny), report)


def paper_bf16(tiny: bool, report: Report):
    _fused("mjx", paper(tiny, critic_matmul_dtype="bfloat16"), report)


def population(tiny: bool, report: Report):
    rows = []
    for seeds in (1, 2) if tiny else (1, 2, 4, 8):
        r = measure_fused("mjx", paper(tiny, num_seeds=seeds), timed_chunks=1)
        rows.append(dict(num_seeds=seeds, compile_s=r["compile_s"], iterations_per_s=r["iterations_per_s"],
                         seed_iterations_per_s=seeds * r["iterations_per_s"], peak_memory_bytes=r["peak_memory_bytes"]))
        report(population=rows)


def minatar_item(tiny: bool, report: Report):
    _fused("minatar", minatar(tiny), report)


def small(tiny: bool, report: Report):
    rows = []
    for width, batch in ((16, 16), (32, 32)) if tiny else ((128, 128), (512, 256)):
        experiment = width_experiment(width, batch)
        if tiny:
            experiment = experiment.replace(chunk_iterations=20, eval_every=20, warmup_iterations=20,
                                            episode_length=50, buffer_capacity=2_000, actor_width=16)
        r = measure_fused("mjx", experiment, timed_chunks=2)
        rows.append({k: r[k] for k in ("critic_width", "batch_size", "compile_s", "iterations_per_s",
                                       "env_only_iterations_per_s", "mfu")})
        report(small=rows)


def wide(tiny: bool, report: Report):
    experiment = paper(tiny, critic_width=64 if tiny else 16384, chunk_iterations=20, eval_every=20)
    built = program.build(program.plan("mjx", experiment))
    need = program.memory_needed(built.program.abstract_state())
    report(critic_width=experiment.agent.critic_width, state_bytes=sum(need.values()), **{f"{k}_bytes": v for k, v in need.items()},
           critic_parameters=_critic_parameters(built))
    timed = False

    def fitted(**figures):
        nonlocal timed
        report(**figures)
        if "iterations_per_s" in figures and not timed:  # it trained: it fits
            timed = True
            report(fits=True)
    try:
        measure_fused("mjx", experiment, 1, fitted)
    except Exception as e:  # out of device memory before it trained: the answer to "does it fit"
        if timed or ("RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower()):
            raise
        report(fits=False, out_of_memory=str(e).splitlines()[0][:300])


def _critic_parameters(built) -> int:
    critic = jax.eval_shape(built.agent.init, jax.random.PRNGKey(0), built.agent.config.hyperparameters({})).critic
    return int(sum(x.size for x in jax.tree.leaves(critic)))


def script(tiny: bool, report: Report):
    """The experiment script as a user runs it, on a fresh run directory; start-up from its log."""
    run_dir = Path(tempfile.mkdtemp(prefix="suite-script-")) / "run"
    flags = (["demo", "--tasks", "CartpoleBalance", "--critic-width", "16", "--actor-width", "16", "--batch-size", "16",
              "--episode-length", "50", "--total-iterations", "40", "--warmup-iterations", "20", "--eval-every", "20",
              "--chunk-iterations", "20", "--eval-episodes", "1"] if tiny else
             ["paper", "--tasks", "humanoids", "--total-iterations", "800", "--warmup-iterations", "400",
              "--eval-every", "400", "--chunk-iterations", "200", "--eval-episodes", "1"])
    command = [sys.executable, str(ROOT / "experiments" / "brc_mjx.py"), *flags, "--run-dir", str(run_dir)]
    report(script_command=" ".join(command[1:]))
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    first_eval_s = None
    for line in proc.stdout:  # streams into this item's log as it comes
        print(line, end="", flush=True)
        seconds = round(time.perf_counter() - t0, 2)
        if line.startswith("built "):
            report(built_at_s=seconds, **_floats(r"in ([\d.]+)s", line, "build_s"))
        elif line.startswith("traced and compiled in"):
            report(compiled_at_s=seconds, startup=line.strip(), **startup_figures(line))
        elif line.startswith("iter ") and first_eval_s is None:
            first_eval_s = seconds
            report(first_eval_at_s=seconds)
    if proc.wait():
        raise RuntimeError(f"experiments/brc_mjx.py exited {proc.returncode}")
    report(total_s=round(time.perf_counter() - t0, 2), checkpoints=sorted(os.listdir(run_dir / "checkpoints")))
    out = subprocess.run([sys.executable, "-m", "purejaxbrc.evaluate", str(run_dir)], capture_output=True, text=True,
                         cwd=ROOT)
    print(out.stdout + out.stderr, flush=True)
    report(evaluate_matches_training="identical" in out.stdout)


def _floats(pattern: str, line: str, name: str) -> dict:
    m = re.search(pattern, line)
    return {name: float(m.group(1))} if m else {}


def startup_figures(line: str) -> dict:
    """The run loop's start-up line: `traced and compiled in W s (tracing T s of it; each
    piece's compile: init I s, chunk C s, evaluate E s, ...; K at a time), initial state built in
    S s: ...`; `compile_wall_s` is W, from the first piece's tracing to the last compile's end.
    Also the line of 62d8bfc and before: `compiled in W s (...): ...`, whose W counted the initial
    state's build too."""
    out = _floats(r"tracing ([\d.]+)s", line, "traced_s")
    out.update(_floats(r"compiled in ([\d.]+)s", line, "compile_wall_s"))
    for name in ("chunk", "evaluate", "init"):
        out.update(_floats(rf"\b{name} ([\d.]+)s", line, f"compile_{name}_s"))
    out.update(_floats(r"(?:initial state built|restored) in ([\d.]+)s", line, "initial_state_s"))
    return out


def lowering_item(tiny: bool, report: Report):
    missing = []
    for name, kind, experiment in (("paper", "mjx", paper(tiny)), ("minatar", "minatar", minatar(tiny))):
        calls = lowering.exported_calls(program.build(program.plan(kind, experiment)))
        report(**{f"{name}_custom_calls": calls})
        missing += [f"{name} {m}" for m in lowering.unprovided(calls)]
    report(unprovided=missing)
    if missing:
        raise RuntimeError(f"custom calls those platforms lack: {'; '.join(missing)}")


# -- the list -------------------------------------------------------------------------------------------
# Estimates on an H100/H200, compiles included. Guesses until a GPU run's `seconds` replace them:
# at 62d8bfc a humanoid program took a minute or more to compile there (../shared/GPU.md); these
# assume about 40 s now. They sum to about 14 minutes: two commands with --budget-s 540. Limits
# are generous: an item whose estimate was short is stopped only at its limit or the budget's end.
@dataclass(frozen=True)
class Item:
    run: Callable[[bool, Report], None]
    estimate_s: float  # whether it still fits what is left of the budget
    limit_s: float  # stopped after this
    tiny_estimate_s: float
    tiny_limit_s: float
    headline: Callable[[dict], str]


def _rate(line, key="iterations_per_s", unit="it/s"):
    return f"{line[key]:,.1f} {unit}" if line.get(key) is not None else "-"


def _paper_headline(line):
    mfu = f", MFU {line['mfu']:.3f}" if line.get("mfu") is not None else ""
    return (f"compile {line.get('compile_s', 0):.0f}s, env-only {_rate(line, 'env_only_iterations_per_s')}, "
            f"learning {_rate(line)}{mfu}")


ITEMS = {
    "ceilings": Item(ceilings, 20, 120, 20, 120,
                     lambda l: f"f32 {l['f32_matmul_flops_per_s'] / 1e12:.1f}, bf16 {l['bf16_matmul_flops_per_s'] / 1e12:.1f} "
                               f"TFLOP/s, copy {l['copy_bytes_per_s'] / 1e9:.0f} GB/s"),
    "paper": Item(paper_f32, 90, 400, 60, 240, _paper_headline),
    "paper_bf16": Item(paper_bf16, 75, 400, 60, 240, _paper_headline),
    "population": Item(population, 180, 560, 90, 300,
                       lambda l: ", ".join(f"{r['num_seeds']} seeds {r['seed_iterations_per_s']:,.1f}"
                                           for r in l["population"]) + " seed-it/s"),
    "minatar": Item(minatar_item, 75, 400, 60, 240, lambda l: _rate(l, "env_steps_per_s", "env-steps/s")),
    "small": Item(small, 60, 300, 90, 240,
                  lambda l: ", ".join(f"width {r['critic_width']} {r['iterations_per_s']:,.1f} it/s" for r in l["small"])),
    "wide": Item(wide, 90, 500, 60, 240,
                 lambda l: f"{l.get('critic_parameters', 0) / 1e9:.2f}B critic parameters, fits {l.get('fits')}, "
                           f"{_rate(l)}"),
    "script": Item(script, 120, 560, 90, 300,
                   lambda l: f"first evaluation at {l.get('first_eval_at_s', float('nan')):.0f}s, "
                             f"evaluate {'identical' if l.get('evaluate_matches_training') else 'DIFFERENT'}"),
    "lowering": Item(lowering_item, 120, 400, 90, 300,
                     lambda l: f"{len(l.get('unprovided', []))} custom calls cuda/tpu lack"),
}


def run_item(name: str, tiny: bool, figures: Path) -> None:
    program.enable_compilation_cache()  # a rerun of an item (the second command) compiles from disk
    ITEMS[name].run(tiny, Report(figures, name))
