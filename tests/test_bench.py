"""The throughput benchmark runs on a tiny configuration and writes well-formed JSON. Timings
themselves are never asserted here (they belong to bench/, not to tests)."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = os.environ.get("PUREJAXBRC_CACHE", str(ROOT / ".jax_cache"))


def bench(*flags, out=None):
    env = dict(os.environ, PUREJAXBRC_CACHE=CACHE)
    return subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), *flags]
                          + ([f"--out={out}"] if out else []),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


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


def test_choices_counts_the_thunks_holding_dots():
    import jax
    import jax.numpy as jnp

    from bench.choices import matmul_thunks

    x = jnp.ones((8, 16), jnp.float32)
    hlo = jax.jit(lambda a, b: jnp.tanh(a @ b) * 2.0).lower(x, x.T).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    ops = {m.group(1): (m.group(2), re.findall(r"%([\w.\-]+)", m.group(3)))  # name -> opcode, operands
           for m in re.finditer(r"%([\w.\-]+) = \S+ (\w+)\(([^)]*)\)", entry)}
    params = {n for n, (op, _) in ops.items() if op == "parameter"}
    (dot,) = matmul_thunks(hlo) & set(ops)
    assert set(ops[dot][1]) == params  # the thunk taking a and b is the product
    (elementwise,) = set(ops) - params - {dot}
    assert ops[elementwise][1] == [dot]  # tanh(...) * 2 of it is not counted


def test_choices_bad_widths_exit_2():
    env = dict(os.environ, PUREJAXBRC_CACHE=CACHE)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "choices.py"), "--widths", "512"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --widths '512'")
