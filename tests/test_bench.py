"""The throughput benchmark runs on a tiny configuration and writes well-formed JSON. Timings
themselves are never asserted here (they belong to bench/, not to tests)."""

import json
import math
import os
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
