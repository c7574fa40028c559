"""Learning curves and aggregate scores for run directories (written by purejaxbrc.rundir).

    python -m purejaxbrc.plot RUN_DIR [RUN_DIR ...] [--out DIR] [--normalize {none,dmc,auto}]

Writes one PNG per task (x = env_steps, y = eval_return: mean over seeds with a 95% bootstrap
band, one line per run dir, and per sweep variant within a run dir) and `all_tasks.png`
(every task in a grid) to --out (default: RUN_DIR/plots for one run dir, ./plots for several).
Prints the final score of every task (mean over seeds at each run's last evaluation, raw
returns) and, per run or variant, the mean and IQM over tasks x seeds of the (normalised)
final scores with 95% stratified bootstrap CIs, ranked by IQM.

Normalisation (aggregate scores only; curves and the per-task table stay raw):
  none  every task raw
  dmc   every task divided by 1000 (the control suite's maximum return), except MinAtar
        tasks (names ending in -MinAtar), which stay raw
  auto  the 25 MuJoCo Playground control-suite names divided by 1000, every other task raw
        (the default)

Bad input (a missing or empty run dir, no metrics.jsonl, unreadable rows) prints one line on
stderr and exits with code 2.
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from purejaxbrc.aggregate import bootstrap_band, iqm, mean, stratified_bootstrap_ci

# mujoco_playground.dm_control_suite.ALL_ENVS, listed here so that plotting needs no jax.
DMC_TASKS = frozenset((
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
    "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun",
    "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop", "HopperStand",
    "HumanoidStand", "HumanoidWalk", "HumanoidRun", "PendulumSwingup", "PointMass",
    "ReacherEasy", "ReacherHard", "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk",
))
DMC_MAX_RETURN = 1000.0
REQUIRED_KEYS = ("iteration", "env_steps", "seed", "task", "eval_return")


class InputError(Exception):
    """Bad command-line input: reported as one line on stderr, exit code 2."""


def task_scale(task: str, normalize: str) -> float:
    """The divisor that normalises `task`'s returns (1.0: the task stays raw)."""
    if normalize == "none" or task.endswith("-MinAtar"):
        return 1.0
    if normalize == "dmc" or (normalize == "auto" and task in DMC_TASKS):
        return DMC_MAX_RETURN
    return 1.0


class Run:
    """One run dir's evaluations: `curves[task] = (env_steps [points], returns [seeds, points])`,
    holding only evaluations at which every seed of the run reported."""

    def __init__(self, path: Path, label: str, seeds: list, curves: dict):
        self.path, self.label, self.seeds, self.curves = path, label, seeds, curves

    @property
    def tasks(self) -> list[str]:
        return list(self.curves)

    def final_scores(self, tasks, at: float | None = None) -> np.ndarray:
        """[seeds, tasks]: each task's returns at the run's last evaluation of it (with `at`: the
        last at or before `at` env steps)."""
        return np.stack([self.curves[t][1][:, self.point(t, at)] for t in tasks], axis=1)

    def point(self, task: str, at: float | None) -> int:
        steps = self.curves[task][0]
        if at is None:
            return len(steps) - 1
        if steps[0] > at:
            raise InputError(f"{self.label}: no evaluation of {task} at or before env_steps={at:g} "
                             f"(the first is at {steps[0]:g})")
        return int(np.searchsorted(steps, at, side="right")) - 1


def load_run(run_dir: str, label: str | None = None) -> list[Run]:
    """The run dir's evaluations: one Run, or one per sweep variant (rows carry `variant` and
    `hparams`), labelled `<label> lr=0.0001 tau=0.005`."""
    path = Path(run_dir)
    if not path.exists():
        raise InputError(f"run dir {run_dir} does not exist")
    if not path.is_dir():
        raise InputError(f"run dir {run_dir} is not a directory")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        what = "is empty" if not any(path.iterdir()) else "holds no metrics.jsonl"
        raise InputError(f"run dir {run_dir} {what}")
    lines = metrics.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a run killed mid-write leaves at most a cut-off last line
                print(f"warning: {metrics}: skipping the cut-off last line {n}", file=sys.stderr)
                continue
            raise InputError(f"{metrics}: line {n} is not JSON")
        if not isinstance(row, dict):
            raise InputError(f"{metrics}: line {n} is not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise InputError(f"{metrics}: line {n} lacks {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise InputError(f"{metrics} holds no evaluations")
    label = label or path.resolve().name
    variants = sorted({r.get("variant", 0) for r in rows})
    if len(variants) == 1:
        return [_curves(path, label, rows, metrics)]
    runs = []
    for v in variants:
        mine = [r for r in rows if r.get("variant", 0) == v]
        hparams = mine[0].get("hparams") or {}
        name = " ".join(f"{k}={val:g}" for k, val in hparams.items()) or f"variant {v}"
        runs.append(_curves(path, f"{label} {name}", mine, metrics))
    return runs


def _curves(path: Path, label: str, rows: list, metrics: Path) -> Run:
    """One Run from the rows of one variant."""
    seeds = sorted({r["seed"] for r in rows})
    # (task, iteration) -> (env_steps, {seed: return}); a repeated row replaces the earlier one
    points: dict = {}
    for r in rows:
        try:
            ret = float(r["eval_return"])
        except (TypeError, ValueError):
            raise InputError(f"{metrics}: eval_return {r['eval_return']!r} is not a number")
        key = (r["task"], r["iteration"])
        by_seed = points[key][1] if key in points else {}
        by_seed[r["seed"]] = ret
        points[key] = (r["env_steps"], by_seed)
    curves = {}
    for task in dict.fromkeys(r["task"] for r in rows):  # first-seen order: the run's order
        its = sorted(it for (t, it) in points if t == task and len(points[t, it][1]) == len(seeds))
        if its:
            steps = np.array([points[task, it][0] for it in its], np.float64)
            returns = np.array([[points[task, it][1][s] for it in its] for s in seeds], np.float64)
            curves[task] = (steps, returns)
    if not curves:
        raise InputError(f"{metrics} holds no evaluation at which every seed reported")
    return Run(path, label, seeds, curves)


def load_runs(run_dirs) -> list[Run]:
    names = [Path(d).resolve().name for d in run_dirs]
    # label each run by its dir name; dirs sharing a name are labelled by the path as given
    return [run for d, n in zip(run_dirs, names) for run in load_run(d, n if names.count(n) == 1 else str(d))]


def all_tasks(runs) -> list[str]:
    return list(dict.fromkeys(t for run in runs for t in run.tasks))


def _safe_filename(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task) or "task"


def _draw_task(ax, runs, task, reps, seed):
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, color in zip(runs, colors):
        if task not in run.curves:
            continue
        steps, returns = run.curves[task]
        lo, hi = bootstrap_band(returns, reps=reps, seed=seed)
        ax.plot(steps, returns.mean(axis=0), color=color, marker="." if len(steps) < 30 else None,
                label=f"{run.label} ({returns.shape[0]} seeds)")
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_title(task)
    ax.set_xlabel("env_steps")
    ax.set_ylabel("eval_return")
    ax.grid(alpha=0.3)


def write_plots(runs, out_dir: Path, reps: int = 2000, seed: int = 0) -> list[Path]:
    """One PNG per task plus all_tasks.png; returns the paths written."""

    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = all_tasks(runs)
    written = []
    for task in tasks:
        fig = Figure(figsize=(6, 4), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        _draw_task(ax, runs, task, reps, seed)
        ax.legend(fontsize="small")
        path = out_dir / f"{_safe_filename(task)}.png"
        fig.savefig(path, dpi=100)
        written.append(path)

    ncols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.3 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        _draw_task(ax, runs, task, reps, seed)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:len(tasks)]:  # runs missing the first task still get a legend entry
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))
    path = out_dir / "all_tasks.png"
    fig.savefig(path, dpi=80)
    written.append(path)
    return written


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def _table(header, rows) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(runs, normalize: str = "auto", reps: int = 2000, seed: int = 0, at: float | None = None) -> str:
    tasks = all_tasks(runs)
    when = "each run's last evaluation" if at is None else f"each run's last evaluation at or before env_steps={at:g}"
    out = [f"Final eval_return (raw; mean over seeds at {when}, +- std over seeds)"]
    rows = []
    for task in tasks:
        row = [task]
        for run in runs:
            if task in run.curves:
                final = run.curves[task][1][:, run.point(task, at)]
                row.append(f"{_fmt(final.mean())} +- {_fmt(final.std())}")
            else:
                row.append("-")
        rows.append(row)
    out.append(_table(["task"] + [r.label for r in runs], rows))
    out.append("")
    for run in runs:
        last = max(run.curves[t][0][-1] for t in run.tasks)
        out.append(f"{run.label}: {len(run.seeds)} seeds, {len(run.tasks)} tasks, "
                   f"last evaluation at env_steps={int(last)}  ({run.path})")
    out.append("")

    scaled = [t for t in tasks if task_scale(t, normalize) != 1.0]
    raw = [t for t in tasks if task_scale(t, normalize) == 1.0]
    if normalize == "none" or not scaled:
        how = "raw returns"
    elif not raw:
        how = f"returns / {DMC_MAX_RETURN:g}"
    else:
        how = f"returns / {DMC_MAX_RETURN:g} for {', '.join(scaled)}; raw for {', '.join(raw)}"
    out.append(f"Aggregate over tasks x seeds of {'final scores' if at is None else f'scores at env_steps<={at:g}'} (normalize={normalize}: {how}); "
               f"95% stratified bootstrap CIs, {reps} reps; ranked by IQM")
    ranked = []
    for run in runs:
        scales = np.array([task_scale(t, normalize) for t in run.tasks])
        scores = run.final_scores(run.tasks, at) / scales  # [seeds, tasks]
        cells = [run.label, str(len(run.tasks)), str(len(run.seeds))]
        for stat in (mean, iqm):
            lo, hi = stratified_bootstrap_ci(scores, stat, reps=reps, seed=seed)
            cells.append(f"{_fmt(stat(scores))} [{_fmt(lo)}, {_fmt(hi)}]")
        ranked.append((-iqm(scores), cells))
    rows = [[str(rank)] + cells for rank, (_, cells) in enumerate(sorted(ranked, key=lambda r: r[0]), 1)]
    out.append(_table(["rank", "run", "tasks", "seeds", "mean [95% CI]", "IQM [95% CI]"], rows))
    if scaled and raw:
        out.append("note: these aggregates mix normalised and raw scores; compare runs on "
                   "tasks of one kind (or use --normalize none)")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m purejaxbrc.plot",
        description="Learning curves (PNG) and aggregate scores for purejaxbrc run directories.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None,
                   help="where the PNGs go (default: RUN_DIR/plots for one run dir, ./plots "
                        "for several)")
    p.add_argument("--normalize", choices=("none", "dmc", "auto"), default="auto",
                   help="aggregate-score normalisation: none = raw; dmc = divide by 1000 "
                        "(MinAtar stays raw); auto = divide control-suite tasks by 1000, "
                        "others raw (default: auto)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    p.add_argument("--at", type=float, default=None, metavar="ENV_STEPS",
                   help="score each run at its last evaluation at or before ENV_STEPS env steps per "
                        "task (default: its last evaluation), e.g. to compare runs at equal env steps")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.reps < 1:
            raise InputError(f"--reps must be at least 1, got {args.reps}")
        runs = load_runs(args.run_dirs)
        text = report(runs, args.normalize, reps=args.reps, seed=args.seed, at=args.at)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or (runs[0].path / "plots" if len(runs) == 1 else Path("plots"))
    written = write_plots(runs, out, reps=args.reps, seed=args.seed)
    print(text)
    print(f"\nwrote {len(written)} plots to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
