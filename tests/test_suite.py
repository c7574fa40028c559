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
