"""experiments/brc_study.py: a tiny multi-task and single-task arm end to end (the subprocesses,
cost.json, the report's tables and figures, export), and bad input (one `error:` line, exit 2)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_study  # noqa: E402

TINY = ["--tasks", "CartpoleBalance,CartpoleSwingup", "--width", "16", "--actor-width", "16", "--num-seeds", "2",
        "--total-iterations", "40", "--warmup-iterations", "20", "--eval-every", "20", "--eval-episodes", "1",
        "--batch-size", "16"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    assert brc_study.main(["multitask", "--root", str(root)] + TINY) == 0
    single = [a if a != "CartpoleBalance,CartpoleSwingup" else "CartpoleBalance" for a in TINY]
    assert brc_study.main(["single", "--root", str(root)] + single) == 0
    return root


def test_arms_write_runs_and_costs(study, capsys):
    mt, st = study / "w16" / "multitask", study / "w16" / "single" / "CartpoleBalance"
    for d in (mt, st):
        assert (d / "summary.json").is_file()
        cost = json.loads((d / "cost.json").read_text())
        assert cost["exit_code"] == 0 and cost["wall_s"] > 0 and cost["cpu_s"] > 0
        assert "--run-dir" in cost["command"] and str(d) in cost["command"]
    rows = [json.loads(line) for line in (mt / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"CartpoleBalance", "CartpoleSwingup"} and {r["seed"] for r in rows} == {0, 1}
    assert json.loads((mt / "config.json").read_text())["run"]["batch_size"] == 16
    # a finished run is skipped, not refused: an interrupted arm continues where it stopped
    capsys.readouterr()
    assert brc_study.main(["multitask", "--root", str(study)] + TINY) == 0
    assert "done already" in capsys.readouterr().out


def test_report_tables_figures_and_export(study, tmp_path, capsys):
    figs = tmp_path / "figs"
    assert brc_study.main(["report", "--root", str(study), "--out", str(figs), "--reps", "50"]) == 0
    out = capsys.readouterr().out
    assert "### critic width 16" in out
    assert "| multitask w16 | CartpoleBalance |" in out and "| single-task w16 | CartpoleBalance |" in out
    assert "| multitask w16 | 1 |" in out and "| single-task w16 | 1 |" in out  # the cost table: programs
    assert (figs / "study_multitask_vs_single.png").is_file()
    assert brc_study.main(["export", "--root", str(study), str(tmp_path / "copy")]) == 0
    copied = sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert "w16/multitask/metrics.jsonl" in copied and "w16/single/CartpoleBalance/cost.json" in copied
    assert not any("checkpoints" in p for p in copied)
    capsys.readouterr()
    assert brc_study.main(["report", "--root", str(tmp_path / "copy"), "--reps", "50"]) == 0
    assert capsys.readouterr().out.count("CartpoleBalance") >= 2  # the copy reports as the original


@pytest.mark.parametrize("args, message", [
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "name an arm"),
    (["multitask", "--width", "0"], "--width must be > 0, got 0"),
    (["multitask", "--width", "wide"], "invalid int value: 'wide'"),
    (["single", "--tasks", "CartpoleBalance,Nope"], "unknown task 'Nope'"),
    (["multitask", "--tasks", "CartpoleBalance"], "the multitask arm needs at least two tasks"),
    (["multitask", "--total-iterations", "1500"], "must be a multiple of --eval-every (1000)"),
    (["transfer", "--mode", "frozen"], "--mode must be one of finetune, embedding, scratch"),
    (["pretrain", "--case", "humanoid"], "--case must be one of cheetah, got 'humanoid'"),
    (["report", "--root", "/nonexistent/study"], "--root /nonexistent/study does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    if args[:1] == ["transfer"]:
        args = args + ["--root", str(tmp_path)]
    assert brc_study.main(args) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not captured.out


def test_missing_transfer_source_and_empty_root_from_the_command_line(tmp_path):
    for args, message in ((["transfer", "--root", str(tmp_path)], "holds no finished run"),
                          (["report", "--root", str(tmp_path)], "holds no study run")):
        p = subprocess.run([sys.executable, str(ROOT / "experiments" / "brc_study.py"), *args],
                           capture_output=True, text=True, cwd=ROOT)
        err = [line for line in p.stderr.splitlines() if line.strip()]
        assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], p.stderr


def test_an_interrupted_run_resumes_from_its_checkpoint_or_starts_again(tmp_path):
    argv = ["python", "brc_mjx.py", "--run-dir", "x"]
    fresh = tmp_path / "fresh"
    assert brc_study.continued(fresh, argv, log=lambda m: None) == argv  # nothing there yet
    with_checkpoint = tmp_path / "a"
    (with_checkpoint / "checkpoints" / "1000").mkdir(parents=True)
    (with_checkpoint / "config.json").write_text("{}")
    assert brc_study.continued(with_checkpoint, argv, log=lambda m: None) == argv + ["--resume"]
    interrupted_save = tmp_path / "c"  # killed during its first save: orbax's temporary dir only
    (interrupted_save / "checkpoints" / "1000.orbax-checkpoint-tmp-1733").mkdir(parents=True)
    (interrupted_save / "config.json").write_text("{}")
    assert brc_study.continued(interrupted_save, argv, log=lambda m: None) == argv
    without = tmp_path / "b"
    without.mkdir()
    (without / "config.json").write_text("{}")
    assert brc_study.continued(without, argv, log=lambda m: None) == argv
    assert not without.exists() and len(list(tmp_path.glob("b.interrupted-*"))) == 1
    assert len(list(tmp_path.glob("c.interrupted-*"))) == 1


def test_batch_sizes_follow_the_reference_rule():
    multi, single = brc_study.Arm(arm="multitask"), brc_study.Arm(arm="single")
    assert multi.batch(4) == 1024 and single.batch(1) == 256
    for arm, argv in [(multi, multi.runs()[0][1])] + [(single, a) for _, a in single.runs()]:
        assert argv[argv.index("--batch-size") + 1] == ("1024" if arm is multi else "256")
        assert argv[argv.index("--total-iterations") + 1] == "8000" and argv[argv.index("--utd") + 1] == "2"
