"""bench/suite.py on its tiny configuration: a figure is never lost to a failure, a second run
with the same --out continues where the first stopped, and bad input exits 2. Timings are
never asserted (they belong to bench/, not to tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = os.environ.get("PUREJAXBRC_CACHE", str(ROOT / ".jax_cache"))


def suite(*flags, fail=None, timeout=900):
    env = dict(os.environ, PUREJAXBRC_CACHE=CACHE)
    env.pop("BENCH_SUITE_FAIL", None)
    if fail:
        env["BENCH_SUITE_FAIL"] = fail
    return subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), *flags], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def lines(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_failing_item_keeps_its_figures_and_the_others_and_a_rerun_continues(tmp_path):
    out = tmp_path / "suite.jsonl"
    first = suite("--tiny", "--only", "ceilings,paper", "--out", str(out), fail="paper")
    assert first.returncode == 0, first.stderr[-3000:]
    ceilings, paper = lines(out)
    assert ceilings["item"] == "ceilings" and ceilings["status"] == "ok"
    assert ceilings["f32_matmul_flops_per_s"] > 0 and ceilings["bf16_matmul_flops_per_s"] > 0
    assert ceilings["copy_bytes_per_s"] > 0
    for field in ("seconds", "device", "commit", "command"):
        assert field in ceilings and field in paper
    assert paper["item"] == "paper" and paper["status"] == "error" and "failing on purpose" in paper["message"]
    assert paper["compile_s"] > 0 and "iterations_per_s" not in paper  # reported before the failure
    assert (tmp_path / "suite.jsonl.logs" / "paper.log").exists()
    assert "ceilings" in first.stdout and "error" in first.stdout  # the table

    again = suite("--tiny", "--only", "ceilings,paper", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    items = [(line["item"], line["status"]) for line in lines(out)]
    assert items == [("ceilings", "ok"), ("paper", "error"), ("paper", "ok")]  # ceilings not run again
    done = lines(out)[-1]
    for field in ("compile_s", "env_only_iterations_per_s", "iterations_per_s", "update_flops", "mfu"):
        assert done[field] > 0, field
    assert done["env_s_per_iteration"] > 0 and done["learning_s_per_iteration"] > 0


def test_bad_input_exits_2(tmp_path):
    proc = suite("--only", "ceilings,nope", "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown item nope")
    assert not (tmp_path / "x.jsonl").exists()


def test_startup_figures_read_this_line_the_resumed_one_and_62d8bfcs():
    sys.path.insert(0, str(ROOT))
    from bench.items import startup_figures
    now = ("traced and compiled in 173.8s (tracing 66.7s of it; each piece's compile: init 51.4s, chunk 114.2s, "
           "evaluate 108.4s, fingerprint state 19.8s; 2 at a time), initial state built in 75.1s: 3 tasks x 1 members")
    assert startup_figures(now) == dict(traced_s=66.7, compile_wall_s=173.8, compile_init_s=51.4, compile_chunk_s=114.2,
                                        compile_evaluate_s=108.4, initial_state_s=75.1)
    resumed = ("traced and compiled in 90.0s (tracing 40.0s of it; each piece's compile: chunk 60.0s, evaluate 30.0s; "
               "2 at a time), restored in 3.5s: 3 tasks")
    assert startup_figures(resumed) == dict(traced_s=40.0, compile_wall_s=90.0, compile_chunk_s=60.0,
                                            compile_evaluate_s=30.0, initial_state_s=3.5)
    old = "compiled in 322.4s: 3 tasks x 1 members (1 seeds x 1 variants) on 1 devices, chunk 1 iterations"
    assert startup_figures(old) == dict(compile_wall_s=322.4)
