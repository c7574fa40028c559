"""Aggregate statistics and the plot command (numpy + matplotlib only, no jax)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from purejaxbrc import aggregate as A
from purejaxbrc import plot

REPO = Path(__file__).resolve().parents[1]


# --- iqm / mean ---------------------------------------------------------------------------------

def test_iqm_hand_computed():
    assert A.iqm(np.arange(1, 9)) == 4.5  # n=8: drop 2 each end, mean(3, 4, 5, 6)
    assert A.iqm([1, 2, 3, 4, 5, 6, 7]) == 4.0  # n=7: int(1.75) = 1 each end, mean(2..6)
    assert A.iqm([1, 2, 3, 4, 100]) == 3.0  # n=5: drop 1 each end, the outlier goes
    assert A.iqm([[1, 2], [3, 40]]) == 2.5  # flattened, n=4: mean(2, 3)
    assert A.iqm([7.0]) == 7.0


@pytest.mark.parametrize("shape", [(7,), (9,), (11,), (5, 3), (3, 5), (10, 25), (2,), (3,)])
def test_iqm_matches_scipy_trim_mean(shape):
    x = np.random.default_rng(sum(shape)).normal(size=shape) * 10
    assert A.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None), rel=1e-12)


def test_mean():
    assert A.mean([[1, 2], [3, 10]]) == 4.0
    with pytest.raises(ValueError):
        A.mean([])
    with pytest.raises(ValueError):
        A.iqm([])


# --- stratified bootstrap -----------------------------------------------------------------------

def test_identical_seeds_give_zero_width_interval_at_point_estimate():
    scores = np.tile([[0.2, 0.9, 0.5]], (4, 1))  # 4 seeds agreeing on every task
    for stat in (A.mean, A.iqm):
        lo, hi = A.stratified_bootstrap_ci(scores, stat, reps=500)
        assert lo == pytest.approx(stat(scores)) and hi == pytest.approx(stat(scores))


def test_interval_contains_point_estimate_and_is_deterministic():
    scores = np.random.default_rng(3).normal(size=(10, 5)) + np.arange(5)
    for stat in (A.mean, A.iqm):
        lo, hi = A.stratified_bootstrap_ci(scores, stat, reps=2000, seed=1)
        assert lo < stat(scores) < hi
        assert (lo, hi) == A.stratified_bootstrap_ci(scores, stat, reps=2000, seed=1)
    narrow = A.stratified_bootstrap_ci(scores, A.mean, confidence=0.5)
    wide = A.stratified_bootstrap_ci(scores, A.mean, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_resampling_stays_within_each_task():
    # Seeds differ only across tasks: task 0 always scores 0, task 1 always 10. Resampling
    # within each task can never change the mean (5); pooling all values and resampling would.
    scores = np.array([[0.0, 10.0]] * 3)
    assert A.stratified_bootstrap_ci(scores, A.mean, reps=2000) == (5.0, 5.0)
    rng = np.random.default_rng(0)
    pooled = [rng.choice(scores.ravel(), scores.size).mean() for _ in range(2000)]
    assert np.percentile(pooled, 2.5) < 5.0 < np.percentile(pooled, 97.5)


def test_tasks_are_resampled_independently():
    # Two seeds that trade places across tasks: resampling whole seeds (rows) always keeps the
    # mean at 0.5; resampling each task's column independently reaches 0 and 1 with
    # probability 1/16 each (> 2.5%), so the 95% interval is exactly [0, 1].
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert A.stratified_bootstrap_ci(scores, A.mean, reps=2000) == (0.0, 1.0)


def test_bootstrap_band():
    curves = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    lo, hi = A.bootstrap_band(curves, reps=2000)
    assert lo.shape == hi.shape == (3,)
    np.testing.assert_allclose(lo, [0.0, 1.0, 2.0])  # all-seed-0 resamples: P = 1/4
    np.testing.assert_allclose(hi, [2.0, 3.0, 4.0])
    same = np.tile([[1.0, 5.0, 3.0]], (3, 1))
    for band in A.bootstrap_band(same, reps=200):
        np.testing.assert_allclose(band, [1.0, 5.0, 3.0])
    noisy = np.random.default_rng(0).normal(size=(8, 20))
    lo, hi = A.bootstrap_band(noisy)
    assert np.all(lo <= noisy.mean(0)) and np.all(noisy.mean(0) <= hi) and np.all(lo < hi)


# --- normalisation ------------------------------------------------------------------------------

def test_task_scale():
    assert len(plot.DMC_TASKS) == 25
    assert plot.task_scale("HumanoidRun", "auto") == 1000.0
    assert plot.task_scale("HumanoidRun", "dmc") == 1000.0
    assert plot.task_scale("HumanoidRun", "none") == 1.0
    assert plot.task_scale("Breakout-MinAtar", "auto") == 1.0
    assert plot.task_scale("Breakout-MinAtar", "dmc") == 1.0
    assert plot.task_scale("SomethingElse", "auto") == 1.0
    assert plot.task_scale("SomethingElse", "dmc") == 1000.0


# --- the plot command ---------------------------------------------------------------------------

# [seed][evaluation] returns per task; seeds 0 and 1, evaluations at 1000, 2000, 3000 env steps.
RETURNS = {"CartpoleBalance": [[100.0, 200.0, 300.0], [300.0, 400.0, 500.0]],
           "Breakout-MinAtar": [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]}


def write_run(run_dir: Path, returns=RETURNS, seeds=(0, 1)) -> Path:
    """A run dir as purejaxbrc.rundir writes it: one line per (evaluation, seed, task)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"tasks": ",".join(returns)}))
    n_evals = len(next(iter(returns.values()))[0])
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e in range(n_evals):
            for s, seed in enumerate(seeds):
                for task, r in returns.items():
                    f.write(json.dumps(dict(iteration=e + 1, env_steps=(e + 1) * 1000, seed=seed,
                                            task=task, eval_return=r[s][e], wall_s=0.5 * e,
                                            critic_loss=0.1)) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"iteration": n_evals}))
    return run_dir


def test_plot_command_writes_pngs_and_table(tmp_path, capsys):
    run = write_run(tmp_path / "brc_run")
    out = tmp_path / "figs"
    assert plot.main([str(run), "--out", str(out), "--reps", "500"]) == 0
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == ["Breakout-MinAtar.png", "CartpoleBalance.png", "all_tasks.png"]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "brc_run" in text and "CartpoleBalance" in text and "Breakout-MinAtar" in text
    assert "400 +- 100" in text and "4 +- 1" in text  # final means over the 2 seeds
    # auto: CartpoleBalance / 1000 -> scores [[0.3, 3], [0.5, 5]]: mean 2.2, IQM mean(0.5, 3)
    agg = text.split("Aggregate")[1]
    assert "2.2 [" in agg and "1.75 [" in agg


def test_scores_at_equal_env_steps(tmp_path, capsys):
    run = write_run(tmp_path / "r")
    assert plot.main([str(run), "--out", str(tmp_path / "f"), "--reps", "200", "--at", "2500"]) == 0
    text = capsys.readouterr().out
    assert "300 +- 100" in text and "3 +- 1" in text  # the evaluation at 2000 env steps
    assert "scores at env_steps<=2500" in text
    assert plot.main([str(run), "--out", str(tmp_path / "f"), "--at", "500"]) == 2
    assert "no evaluation of CartpoleBalance at or before env_steps=500" in capsys.readouterr().err


def test_plot_normalize_none_and_default_out(tmp_path, capsys):
    run = write_run(tmp_path / "r")
    assert plot.main([str(run), "--normalize", "none", "--reps", "200"]) == 0
    assert (run / "plots" / "all_tasks.png").is_file()
    agg = capsys.readouterr().out.split("Aggregate")[1]
    assert "202 [" in agg and "152.5 [" in agg  # raw [[300, 3], [500, 5]]


def test_plot_two_runs_and_partial_rows(tmp_path, capsys):
    a = write_run(tmp_path / "x" / "run")
    b = write_run(tmp_path / "y" / "run", {"CartpoleBalance": [[10.0, 20.0], [30.0, 40.0]]})
    with open(b / "metrics.jsonl", "a") as f:  # seed 0 of a third evaluation, then a cut line
        f.write(json.dumps(dict(iteration=3, env_steps=3000, seed=0, task="CartpoleBalance",
                                eval_return=999.0, wall_s=1.0)) + "\n" + '{"iteration": 3, "en')
    out = tmp_path / "cmp"
    assert plot.main([str(a), str(b), "--out", str(out), "--reps", "200"]) == 0
    captured = capsys.readouterr()
    assert "cut-off last line" in captured.err
    text = captured.out
    assert str(a) in text and str(b) in text  # same dir names: labelled by path
    assert "30 +- 10" in text  # the incomplete third evaluation is left out
    assert (out / "Breakout-MinAtar.png").is_file() and (out / "all_tasks.png").is_file()


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "noMetrics").mkdir()
    (tmp_path / "noMetrics" / "config.json").write_text("{}")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "metrics.jsonl").write_text("")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "metrics.jsonl").write_text('nope\n{"iteration": 1}\n')
    good = write_run(tmp_path / "good")
    for bad in ["missing", "empty", "noMetrics", "blank", "garbled"]:
        assert plot.main([str(good), str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (good / "plots").exists()  # nothing is written before the input is checked


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "purejaxbrc.plot", str(tmp_path / "nope")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: run dir {tmp_path / 'nope'} does not exist"
    proc = subprocess.run([sys.executable, "-m", "purejaxbrc.plot"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2  # argparse usage error: no RUN_DIR
