"""The throughput benchmark runs on a tiny configuration and writes well-formed JSON. Timings
themselves are never asserted here (they belong to bench/, not to tests)."""

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from bench.choices import thunk_kinds

ROOT = Path(__file__).resolve().parent.parent
CACHE = os.environ.get("PUREJAXBRC_CACHE", str(ROOT / ".jax_cache"))


def bench(*flags, out=None, script="throughput.py", timeout=600):
    env = dict(os.environ, PUREJAXBRC_CACHE=CACHE)
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *flags]
                          + ([f"--out={out}"] if out else []),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def test_tiny_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = bench("--tiny", out=out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] and result["versions"]["jax"]
    (record,) = result["records"]
    assert record["name"] == "small" and record["tasks"] == ["CartpoleBalance"]
    for field in ("compile_s", "iterations_per_s", "env_steps_per_s", "grad_steps_per_s",
                  "peak_memory_bytes", "update_flops", "achieved_flops_per_s", "mfu"):
        assert math.isfinite(record[field]) and record[field] > 0, field
    # One environment per task and seed: env steps equal iterations; utd gradient steps each.
    assert math.isclose(record["env_steps_per_s"], record["iterations_per_s"])
    assert math.isclose(record["grad_steps_per_s"], record["iterations_per_s"] * record["utd"])
    assert "small" in proc.stdout  # the table


def test_bad_flags_exit_2(tmp_path):
    proc = bench("--configs", "nope", out=tmp_path / "x.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown --configs nope")
    assert not (tmp_path / "x.json").exists()


def test_choices_tells_matmul_thunks_from_the_rest():
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU runtime's thunks")
    x = jnp.ones((8, 16), jnp.float32)
    hlo = jax.jit(lambda a, b: jnp.tanh(a @ b) * 2.0).lower(x, x.T).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    operands = {m.group(1): re.findall(r"%([\w.\-]+)", m.group(2))  # compute instruction -> operands
                for m in re.finditer(r"%([\w.\-]+) = \S+ (?!parameter)\w+\(([^)]*)\)", entry)}
    kinds = thunk_kinds(hlo)
    (product,) = [n for n in operands if kinds[n] == "matmul"]
    assert len(operands[product]) == 2  # the thunk taking a and b
    (rest,) = [n for n in operands if kinds[n] == "other"]
    assert operands[rest] == [product]  # tanh(...) * 2 of it

    # Control flow is left out (its thunks contain the thunks they run); what it runs is kept.
    square = jnp.ones((16, 16), jnp.float32)
    loop = lambda a, flag: jax.lax.cond(flag, lambda: jax.lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y @ a), a),
                                        lambda: a)  # noqa: E731
    kinds = thunk_kinds(jax.jit(loop).lower(square, True).compile().as_text())
    assert "matmul" in kinds.values() and "other" in kinds.values()
    assert not [n for n in kinds if n.startswith(("while", "cond", "call"))], kinds


def test_bad_widths_exit_2(tmp_path):
    proc = bench("--widths", "512", script="choices.py", timeout=300)  # refused before it looks at the backend
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --widths '512'")
    proc = bench("--width-sweep", "--widths", "512:0", out=tmp_path / "x.json")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --widths")


def test_lockstep_refuses_bad_variants_and_references():
    proc = bench("--variants", "nameonly", script="lockstep.py", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --variants 'nameonly'")
    proc = bench("--variants", "old:REPO=/nonexistent", script="lockstep.py", timeout=300)
    assert proc.returncode == 2 and "not a purejaxbrc checkout" in proc.stderr
    for command in ("run.sh {width} {batch} | awk '{print}'", "run.sh {width}"):
        proc = bench("--reference", command, script="lockstep.py", timeout=300)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --reference")


def test_lockstep_times_the_reference_from_its_own_lines_and_stops_it_between_windows():
    """A stand-in for the authors' code: 10 iterations per line, a line every 0.05 s by the wall
    clock; when it finds it was stopped, it first prints a late line from before the stop.
    Its windows must hold no time it spent stopped (1 s between windows here)."""
    from bench.lockstep import Reference

    printer = (f"{shlex.quote(sys.executable)} -c \"import json, time\n"
               "last = time.time()\n"
               "for k in range(100000):\n"
               "    now = time.time()\n"
               "    if now - last > 0.5: print(json.dumps(dict(i=5000 + 10 * k - 5, wall=last)), flush=True)\n"
               "    print(json.dumps(dict(i=5000 + 10 * k, wall=now)), flush=True); last = now; time.sleep(0.05)\"")
    ref = Reference(printer + " # {width} {batch}", 512, 256)
    try:
        for _ in range(3):
            window = ref.time(0.1)
            assert window["seconds"] < 0.9 and window["iterations_per_s"] > 60, window  # 200 at most; ~18 across a stop
            for _ in range(200):  # SIGSTOP takes effect asynchronously
                state = Path(f"/proc/{ref.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state == "T":
                    break
                time.sleep(0.01)
            assert state == "T"  # stopped between windows
            time.sleep(1.0)
    finally:
        ref.close()


def test_counted_flops_agree_with_xla_and_figures_survive_a_backend_without_analyses(monkeypatch):
    """The update's FLOPs counted from its matmul shapes are XLA's count less the elementwise
    work (within 5% at width 512, both agents); where the backend has no cost or memory analysis
    (a GPU under jax 0.11), the figures that need them are absent and nothing fails."""
    from bench.device import peak_memory
    from bench.fused import counted_update_flops, xla_update_flops
    from purejaxbrc import program
    from purejaxbrc.config import Experiment, RunConfig
    from purejaxbrc.dqn import DQNConfig
    from purejaxbrc.sac import SACConfig
    loop = dict(batch_size=256, buffer_capacity=1000, run_dir="/nonexistent/unused")
    for kind, experiment in (
            ("mjx", Experiment(RunConfig(tasks="CartpoleBalance,PendulumSwingup", **loop), SACConfig(critic_width=512))),
            ("minatar", Experiment(RunConfig(tasks="Breakout-MinAtar", **loop), DQNConfig(critic_width=512)))):
        built = program.build(program.plan(kind, experiment))
        state = built.program.abstract_state()
        counted, xla = counted_update_flops(built.agent, 256), xla_update_flops(built, state)
        assert 0.95 * xla < counted <= xla, (kind, counted, xla)
        with monkeypatch.context() as m:
            m.setattr(jax.stages.Lowered, "cost_analysis", lambda self: None)
            assert xla_update_flops(built, state) is None

    class NoAnalysis:
        def memory_analysis(self):
            return None
    assert peak_memory(NoAnalysis())[0] is None
