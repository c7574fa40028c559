"""BRC's three central claims at laptop scale (README, "Study"): one multi-task agent against
single-task agents, two critic widths, and transfer to a held-out task. One command per arm; the
defaults are the configuration the README reports.

    python experiments/brc_study.py multitask --width 128    # one program: the family, 3 seeds
    python experiments/brc_study.py single --width 128       # one program per task, 3 seeds each
    python experiments/brc_study.py multitask --width 32
    python experiments/brc_study.py single --width 32
    python experiments/brc_study.py pretrain --case cheetah  # the transfer source (one seed)
    python experiments/brc_study.py transfer --case cheetah --mode finetune --temperature reset
    python experiments/brc_study.py transfer --mode finetune --temperature carry
    python experiments/brc_study.py transfer --mode embedding --temperature reset
    python experiments/brc_study.py transfer --mode scratch
    python experiments/brc_study.py report --out docs        # tables (markdown) and figures

Each arm runs the ordinary entry points (experiments/brc_mjx.py, experiments/brc_transfer.py) as
subprocesses, one after another, with every flag spelled out (`--dry-run` prints the commands),
and writes `cost.json` beside each run's metrics: the process's wall clock and CPU time (user +
system, children included) on this machine. A run directory that already holds a summary.json
is done and skipped, so an interrupted arm continues where it stopped. `report` reads only
metrics.jsonl, summary.json and cost.json, so it also works on the copies kept under
bench/results/study/ (`report --root bench/results/study`; `export DIR` makes such a copy).
Bad input is one line starting `error:` and exit code 2.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # no pyplot: no GUI backend

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python experiments/brc_study.py` from a checkout
    sys.path.insert(0, str(ROOT))

from purejaxbrc.aggregate import iqm, mean, stratified_bootstrap_ci  # noqa: E402
from purejaxbrc.checkpoint import list_steps  # noqa: E402
from purejaxbrc.config import default_batch_size  # noqa: E402
from purejaxbrc.plot import DMC_TASKS, InputError, Run, load_run, write_plots  # noqa: E402

# -- the configuration the README reports ----------------------------------------------------
FAMILY = "CartpoleBalance,CartpoleBalanceSparse,CartpoleSwingup,CheetahRun"
WIDTHS = (128, 32)
# Transfer cases: `case -> (pretraining tasks, held-out target)`. cheetah: a second family besides
# Cartpole's (README, "Transfer"), whose target has a dense reward that scratch learns within
# the budget.
CASES = {"cheetah": ("WalkerStand,WalkerWalk,WalkerRun", "CheetahRun")}
# Defaults that differ by arm: one pretrained seed (each transfer seed starts from it), trained
# longer than the transfer runs.
ARM_DEFAULTS = {"pretrain": dict(num_seeds=1, total_iterations=10_000)}
TRAIN_ARMS = ("multitask", "single", "pretrain", "transfer")
MODES = ("finetune", "embedding", "scratch")
TEMPERATURES = ("reset", "carry")
NEW_ROWS = ("mean", "fresh")
FILES = ("metrics.jsonl", "summary.json", "config.json", "cost.json")  # what `export` copies


class StudyError(Exception):
    """Bad input: one line on stderr starting `error:`, exit code 2."""


@dataclass(frozen=True)
class Arm:
    """One arm: the entry point's flags it passes, and where its runs go."""

    arm: str
    root: str = "runs/study"
    tasks: str = ""  # default: FAMILY (multitask, single), SOURCE (pretrain), TARGET (transfer)
    width: int = 128
    """The critic's width (BroNet depth 2); the actor keeps --actor-width."""
    actor_width: int = 128
    num_seeds: int = 3
    total_iterations: int = 8_000
    """Environment steps per task, warm-up included (one environment per task)."""
    warmup_iterations: int = 1_000
    eval_every: int = 1_000
    eval_episodes: int = 5
    utd: int = 2
    batch_size: int = 0
    """0: the reference's rule, 256 transitions for one task and 1024 for several."""
    case: str = "cheetah"  # pretrain and transfer: a key of CASES
    mode: str = "finetune"  # transfer only
    temperature: str = "reset"  # transfer only
    new_rows: str = "mean"  # transfer only
    dry_run: bool = False

    def validate(self) -> None:
        """StudyError naming the first bad value; nothing is run or written before this."""
        if self.arm not in TRAIN_ARMS:
            raise StudyError(f"unknown arm {self.arm!r}; the arms are {', '.join(TRAIN_ARMS)} (and report, export)")
        for name in ("width", "actor_width", "num_seeds", "total_iterations", "eval_every", "eval_episodes", "utd"):
            if getattr(self, name) <= 0:
                raise StudyError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.warmup_iterations < 0 or self.batch_size < 0:
            raise StudyError("--warmup-iterations and --batch-size must be >= 0")
        if self.warmup_iterations >= self.total_iterations:
            raise StudyError(f"--warmup-iterations ({self.warmup_iterations}) must be smaller than "
                             f"--total-iterations ({self.total_iterations})")
        if self.total_iterations % self.eval_every:
            raise StudyError(f"--total-iterations ({self.total_iterations}) must be a multiple of "
                             f"--eval-every ({self.eval_every})")
        if self.case not in CASES:
            raise StudyError(f"--case must be one of {', '.join(CASES)}, got {self.case!r}")
        if not self.task_list:
            raise StudyError("--tasks names no task")
        unknown = [t for t in self.task_list if t not in DMC_TASKS]
        if unknown:
            raise StudyError(f"unknown task {unknown[0]!r}; the study takes control-suite tasks: "
                             f"{', '.join(sorted(DMC_TASKS))}")
        if self.arm == "multitask" and len(self.task_list) < 2:
            raise StudyError("the multitask arm needs at least two tasks")
        if self.arm == "pretrain" and len(self.task_list) < 2:
            raise StudyError("pretrain needs at least two tasks (a one-task run has no task embedding)")
        if self.arm == "transfer":
            if self.mode not in MODES:
                raise StudyError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
            if self.temperature not in TEMPERATURES:
                raise StudyError(f"--temperature must be one of {', '.join(TEMPERATURES)}, got {self.temperature!r}")
            if self.new_rows not in NEW_ROWS:
                raise StudyError(f"--new-rows must be one of {', '.join(NEW_ROWS)}, got {self.new_rows!r}")
            if not self.dry_run and not (self.source_dir / "summary.json").is_file():
                raise StudyError(f"the transfer source {self.source_dir} holds no finished run; run "
                                 f"`python experiments/brc_study.py pretrain --case {self.case} --root {self.root}` first")

    @property
    def task_list(self) -> list[str]:
        source, target = CASES[self.case]
        default = {"multitask": FAMILY, "single": FAMILY, "pretrain": source, "transfer": target}.get(self.arm, "")
        return [t.strip() for t in (self.tasks or default).split(",") if t.strip()]

    @property
    def source_dir(self) -> Path:
        return Path(self.root) / "transfer" / self.case / "pretrain"

    def batch(self, num_tasks: int) -> int:
        return self.batch_size or default_batch_size(num_tasks)

    def common(self, tasks: list[str]) -> list[str]:
        return ["--tasks", ",".join(tasks), "--num-seeds", str(self.num_seeds),
                "--total-iterations", str(self.total_iterations), "--warmup-iterations", str(self.warmup_iterations),
                "--eval-every", str(self.eval_every), "--eval-episodes", str(self.eval_episodes),
                "--utd", str(self.utd), "--batch-size", str(self.batch(len(tasks)))]

    def runs(self) -> list[tuple[Path, list[str]]]:
        """`(run dir, argv)` of every program this arm runs, in order."""
        root, tasks = Path(self.root), self.task_list
        net = ["--critic-width", str(self.width), "--actor-width", str(self.actor_width)]
        mjx = [sys.executable, str(HERE / "brc_mjx.py"), "demo"]
        if self.arm == "multitask":
            d = root / f"w{self.width}" / "multitask"
            return [(d, mjx + self.common(tasks) + net + ["--run-dir", str(d)])]
        if self.arm == "single":
            out = []
            for task in tasks:
                d = root / f"w{self.width}" / "single" / task
                out.append((d, mjx + self.common([task]) + net + ["--run-dir", str(d)]))
            return out
        if self.arm == "pretrain":
            d = self.source_dir
            return [(d, mjx + self.common(tasks) + net + ["--run-dir", str(d)])]
        # transfer: the architecture is the pretrained run's (brc_transfer.py checks it)
        name = self.mode if self.mode == "scratch" else f"{self.mode}-{self.temperature}"
        name += "" if self.new_rows == "mean" else f"-{self.new_rows}rows"
        d = root / "transfer" / self.case / name
        return [(d, [sys.executable, str(HERE / "brc_transfer.py"), "--from", str(self.source_dir)]
                 + self.common(tasks) + ["--mode", self.mode, "--temperature", self.temperature,
                                         "--new-rows", self.new_rows, "--run-dir", str(d)])]


# -- running ----------------------------------------------------------------------------------
def machine() -> dict:
    """The CPU this ran on, for the cost table."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=model, cores=os.cpu_count())


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_one(run_dir: Path, argv: list[str], log=print) -> int:
    """Run one program; write run_dir/cost.json (wall clock and CPU time of the process, summed
    over the sessions of a resumed run; load average before and after). Ctrl-C reaches the
    program too, which stops after its chunk with a checkpoint; this waits for it. Returns its
    exit code."""
    log("$ " + " ".join(argv[1:] if argv[0] == sys.executable else argv))
    before, load0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), load_average(), time.time()
    # The child imports this checkout's purejaxbrc, whatever is installed.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # the child got the same SIGINT: let it write its checkpoint
            continue
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if (run_dir / "config.json").is_file():  # the program got as far as its run directory
        path = run_dir / "cost.json"
        earlier = json.loads(path.read_text()) if "--resume" in argv and path.is_file() else {}
        cost = dict(command=argv[1:], exit_code=code, wall_s=round(wall + earlier.get("wall_s", 0), 1),
                    cpu_s=round(cpu + earlier.get("cpu_s", 0), 1), sessions=earlier.get("sessions", 0) + 1,
                    load_before=earlier.get("load_before", load0), load_after=load_average(),
                    started=earlier.get("started", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))),
                    **machine())
        path.write_text(json.dumps(cost, indent=2) + "\n")
    if code == -signal.SIGINT or code == 128 + signal.SIGINT:
        raise KeyboardInterrupt
    return code


def continued(run_dir: Path, argv: list[str], log=print) -> list[str]:
    """`argv` for a run dir that an interrupted arm left: with `--resume` when it holds a
    checkpoint, else the dir moved aside (`<dir>.interrupted-<time>`) for a fresh start."""
    if not (run_dir / "config.json").is_file():
        return argv
    if list_steps(run_dir):  # finished checkpoints only, not an interrupted save's temporary dir
        log(f"{run_dir}: unfinished, resuming from its last checkpoint")
        return argv + ["--resume"]
    aside = run_dir.with_name(f"{run_dir.name}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(aside)
    log(f"{run_dir}: unfinished without a checkpoint, moved to {aside}; starting it again")
    return argv


def train(arm: Arm, log=print) -> int:
    """Run the arm's programs that have not finished; the first failing exit code stops it."""
    for run_dir, argv in arm.runs():
        if arm.dry_run:
            log(" ".join(argv[1:]))
            continue
        if (run_dir / "summary.json").is_file():
            log(f"{run_dir}: done already (summary.json), skipped")
            continue
        code = run_one(run_dir, continued(run_dir, argv, log), log)
        if code:
            log(f"{run_dir}: exit code {code}; stopping this arm")
            return code
    return 0


# -- reading results ---------------------------------------------------------------------------
def merge(runs: list[Run], label: str) -> Run:
    """Single-task runs as one Run over their tasks (same seeds in each)."""
    seeds = runs[0].seeds
    for r in runs[1:]:
        if r.seeds != seeds:
            raise InputError(f"{r.path} has seeds {r.seeds}, {runs[0].path} has {seeds}; the arm's runs must share seeds")
    curves = {t: c for r in runs for t, c in r.curves.items()}
    return Run(runs[0].path.parent, label, seeds, curves)


def load_arm(path: Path, label: str) -> Run | None:
    """A finished multitask or transfer run dir, or a single/ dir of finished one-task run dirs
    (a summary.json each: a run in progress would shrink the points every arm shares); None if
    there is none."""
    if (path / "summary.json").is_file():
        return load_run(str(path), label)[0]
    if path.is_dir():
        parts = sorted(p for p in path.iterdir() if (p / "summary.json").is_file())
        if parts:
            return merge([load_run(str(p), p.name)[0] for p in parts], label)
    return None


def scores(run: Run, tasks, at: float) -> np.ndarray:
    """[seeds, tasks] of return / 1000 at the last evaluation at or before `at` env steps."""
    return run.final_scores(tasks, at) / 1000.0


def cell(x: np.ndarray, reps: int, statistic=iqm) -> str:
    lo, hi = stratified_bootstrap_ci(x, statistic, reps=reps)
    return f"{statistic(x):.3f} [{lo:.3f}, {hi:.3f}]"


def thinned(points: list[float]) -> list[float]:
    """Every other point from the last one back, when there are more than 6."""
    return points[::-1][::2][::-1] if len(points) > 6 else points


def common_points(runs: list[Run], tasks) -> list[float]:
    """Env-step points every run evaluated every task at."""
    sets = [set(r.curves[t][0].tolist()) for r in runs for t in tasks]
    return sorted(set.intersection(*sets)) if sets else []


def table(runs: list[Run], tasks, points, reps: int) -> str:
    """Markdown: one row per run and task (and the aggregate), IQM [95% CI] at each point."""
    head = "| arm | task | " + " | ".join(f"{int(p) // 1000}k" for p in points) + " |"
    out = [head, "|" + " --- |" * (len(points) + 2)]
    for run in runs:
        rows = ([("**all**", tasks)] if len(tasks) > 1 else []) + [(t, [t]) for t in tasks]
        for name, ts in rows:
            out.append(f"| {run.label} | {name} | " + " | ".join(cell(scores(run, ts, p), reps) for p in points) + " |")
    return "\n".join(out)


def aggregate_table(groups: dict, reps: int, statistic=iqm) -> str:
    """Markdown: the aggregate `statistic` (IQM) [95% CI] of every arm of every width at the
    points all share."""
    arms = [(run, tasks) for runs, tasks, _ in groups.values() for run in runs]
    points = sorted(set.intersection(*[set(p) for _, _, p in groups.values()]))
    points = thinned(points)
    out = ["| arm | " + " | ".join(f"{int(p) // 1000}k" for p in points) + " |", "|" + " --- |" * (len(points) + 1)]
    for run, tasks in arms:
        out.append(f"| {run.label} | " + " | ".join(cell(scores(run, tasks, p), reps, statistic) for p in points) + " |")
    return "\n".join(out)


def aggregate_curve(run: Run, tasks, points, reps: int):
    """IQM over tasks x seeds and its stratified bootstrap CI at each point: three [points]."""
    stats = [(iqm(s), *stratified_bootstrap_ci(s, iqm, reps=reps)) for s in (scores(run, tasks, p) for p in points)]
    return tuple(np.array(x) for x in zip(*stats))


def plot_aggregate(groups: dict, path: Path, title: str, reps: int) -> None:
    """One panel per group (`title -> (runs, tasks, points)`): IQM of return / 1000 with 95% CIs."""
    fig = Figure(figsize=(5 * len(groups), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), squeeze=False).ravel()
    for ax, (name, (runs, tasks, points)) in zip(axes, groups.items()):
        for i, run in enumerate(runs):
            mid, lo, hi = aggregate_curve(run, tasks, points, reps)
            ax.plot(points, mid, marker=".", color=f"C{i}", label=f"{run.label} ({len(run.seeds)} seeds)")
            ax.fill_between(points, lo, hi, color=f"C{i}", alpha=0.2, linewidth=0)
        ax.set_title(name)
        ax.set_xlabel("env steps per task")
        ax.set_ylabel("IQM of return / 1000")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def cost_rows(root: Path, arms: list[tuple[str, Path]]) -> str:
    """Markdown: programs, compile s, training s, process wall s and CPU s of each arm (summed
    over its programs), from summary.json and cost.json."""
    out = ["| arm | programs | compile s | training s | process wall s | CPU s | load avg |", "|" + " --- |" * 7]
    for label, path in arms:
        dirs = [path] if (path / "summary.json").is_file() else sorted(p for p in path.glob("*") if (p / "summary.json").is_file())
        if not dirs:
            continue
        summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
        costs = [json.loads((d / "cost.json").read_text()) for d in dirs if (d / "cost.json").is_file()]
        comp, wall = sum(s["compile_s"] for s in summaries), sum(s["wall_s"] for s in summaries)
        pw = f"{sum(c['wall_s'] for c in costs):.0f}" if len(costs) == len(dirs) else "-"
        cpu = f"{sum(c['cpu_s'] for c in costs):.0f}" if len(costs) == len(dirs) else "-"
        loads = [x for c in costs for x in (c.get("load_before"), c.get("load_after")) if x is not None]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        out.append(f"| {label} | {len(dirs)} | {comp:.0f} | {wall:.0f} | {pw} | {cpu} | {load} |")
    return "\n".join(out)


def train_metrics(path: Path, at: float) -> str:
    """Mean over seeds of alpha, entropy, q_mean and critic_loss at `at` env steps (the
    transfer evidence), from metrics.jsonl."""
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    mine = [r for r in rows if r["env_steps"] == at and "alpha" in r]
    if not mine:
        return "-"
    return ", ".join(f"{k} {np.mean([r[k] for r in mine]):.3g}" for k in ("alpha", "entropy", "q_mean", "critic_loss"))


def report(root: Path, out: Path | None, reps: int = 2000, log=print) -> int:
    """Print the study's tables (markdown); with `out`, write its figures there."""
    if not root.is_dir():
        raise StudyError(f"--root {root} does not exist; run the arms first (or --root bench/results/study)")
    found = False
    mt_groups = {}
    for width in sorted({int(p.name[1:]) for p in root.glob("w*") if p.name[1:].isdigit()}, reverse=True):
        arms = [load_arm(root / f"w{width}" / "multitask", f"multitask w{width}"),
                load_arm(root / f"w{width}" / "single", f"single-task w{width}")]
        arms = [a for a in arms if a is not None]
        if not arms:
            continue
        found = True
        tasks = [t for t in arms[0].tasks if all(t in a.curves for a in arms)]  # the tasks every arm ran
        points = common_points(arms, tasks)
        if not points:
            raise StudyError(f"the arms of width {width} share no evaluation point")
        log(f"\n### critic width {width}: IQM of return / 1000 [95% stratified bootstrap CI], {len(tasks)} tasks\n")
        log(table(arms, tasks, thinned(points), reps))
        log("\n" + cost_rows(root, [(a.label, root / f"w{width}" / ("multitask" if a.label.startswith("multi") else "single"))
                                    for a in arms]))
        mt_groups[f"critic width {width}"] = (arms, tasks, points)
        if out:
            write_plots(arms, out / f"study_w{width}_tasks")
    if len(mt_groups) > 1:
        log("\n### every width: aggregate IQM of return / 1000 over tasks x seeds [95% CI]\n")
        log(aggregate_table(mt_groups, reps))
        # With 3 seeds x 4 tasks the IQM drops each arm's 3 highest and 3 lowest scores, often one
        # task's seeds: the mean, beside it, shows whether a gap rests on those.
        log("\n### every width: aggregate mean of return / 1000 over tasks x seeds [95% CI]\n")
        log(aggregate_table(mt_groups, reps, mean))
    tr_groups = {}
    for case_dir in sorted(p for p in (root / "transfer").glob("*") if p.is_dir()):
        tr = [load_arm(p, p.name) for p in sorted(case_dir.glob("*")) if p.name != "pretrain"]
        tr = [r for r in tr if r is not None]
        if not tr:
            continue
        found = True
        tasks = tr[0].tasks
        points = common_points(tr, tasks)
        if not points:
            raise StudyError(f"the transfer arms of {case_dir} share no evaluation point")
        log(f"\n### transfer ({case_dir.name}) to {', '.join(tasks)}: IQM of return / 1000 [95% CI]\n")
        log(table(tr, tasks, points[:1] + thinned(points[1:]) if len(points) > 6 else points, reps))
        run = json.loads((tr[0].path / "config.json").read_text())["run"]
        warmup = run["warmup_iterations"] * run["num_envs"]  # in env steps per task
        early = min((p for p in points if p > warmup), default=points[-1])  # the first evaluation after learning began
        log(f"\ntraining metrics at {int(early)} env steps (mean over seeds):")
        for r in tr:
            log(f"- {r.label}: {train_metrics(r.path, early)}")
        pre = load_arm(case_dir / "pretrain", "pretrain")
        if pre is not None:
            log(f"\npretrain ({', '.join(pre.tasks)}), final return mean over seeds: " + ", ".join(
                f"{t} {pre.curves[t][1][:, -1].mean():.0f}" for t in pre.tasks) + "; " + train_metrics(
                pre.path, max(pre.curves[pre.tasks[0]][0])))
        log("\n" + cost_rows(root, [(r.label, r.path) for r in tr]))
        tr_groups[f"{case_dir.name}: transfer to {', '.join(tasks)}"] = (tr, tasks, points)
    if not found:
        raise StudyError(f"--root {root} holds no study run (w<WIDTH>/multitask, w<WIDTH>/single/<task>, transfer/<case>/<arm>)")
    if out:
        if mt_groups:
            tasks = next(iter(mt_groups.values()))[1]
            plot_aggregate(mt_groups, out / "study_multitask_vs_single.png",
                           f"{', '.join(tasks)}: one multi-task agent vs one agent per task", reps)
        if tr_groups:
            plot_aggregate(tr_groups, out / "study_transfer.png", "finetune, embedding and scratch", reps)
        log(f"\nfigures in {out}")
    return 0


def export(root: Path, dest: Path, log=print) -> int:
    """Copy each finished run's small files (FILES) under `dest`, keeping the layout: no
    checkpoints, no run still in progress."""
    if not root.is_dir():
        raise StudyError(f"--root {root} does not exist")
    n = 0
    for run_dir in sorted(p.parent for p in root.rglob("summary.json") if "checkpoints" not in p.parts):
        for name in FILES:
            if (run_dir / name).is_file():
                target = dest / run_dir.relative_to(root) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / name, target)
                n += 1
    log(f"copied {n} files to {dest}")
    return 0


# -- command line ------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        raise StudyError(message)


def parse(argv=None):
    p = Parser(prog="python experiments/brc_study.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="arm", metavar="ARM", parser_class=Parser)
    for arm in TRAIN_ARMS:
        defaults = Arm(arm=arm, **ARM_DEFAULTS.get(arm, {}))
        s = sub.add_parser(arm, help=f"train the {arm} arm")
        for f in fields(Arm):
            if f.name in ("arm",) or (arm != "transfer" and f.name in ("mode", "temperature", "new_rows")):
                continue
            if f.name == "case" and arm not in ("pretrain", "transfer"):
                continue
            if arm == "transfer" and f.name in ("width", "actor_width"):
                continue  # the pretrained architecture
            name = "--" + f.name.replace("_", "-")
            if f.type in (bool, "bool"):
                s.add_argument(name, action="store_true")
            else:
                kind = int if f.type in (int, "int") else str
                s.add_argument(name, type=kind, default=getattr(defaults, f.name))
    r = sub.add_parser("report", help="tables and figures")
    r.add_argument("--root", default="runs/study")
    r.add_argument("--out", type=Path, default=None, help="where the figures go (default: none)")
    r.add_argument("--reps", type=int, default=2000)
    e = sub.add_parser("export", help="copy metrics, configs and costs (no checkpoints)")
    e.add_argument("--root", default="runs/study")
    e.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    if args.arm is None:
        raise StudyError(f"name an arm: {', '.join(TRAIN_ARMS)}, report or export")
    return args


def main(argv=None, log=print) -> int:
    try:
        args = parse(argv)
        if args.arm == "report":
            if args.reps < 1:
                raise StudyError(f"--reps must be >= 1, got {args.reps}")
            return report(Path(args.root), args.out, args.reps, log)
        if args.arm == "export":
            return export(Path(args.root), args.dest, log)
        arm = Arm(**{k: v for k, v in vars(args).items()})
        arm.validate()
        return train(arm, log)
    except (StudyError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
