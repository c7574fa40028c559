"""Time to the first iteration, cold: a short experiments/brc_mjx.py run with an empty compilation
cache, in this checkout and in another one (an older commit), side by side in one run.

    python bench/startup.py --baseline <checkout of 62d8bfc> --sets humanoids,dmc --rounds 1

Per task set and round, each checkout runs the same command (the paper preset, two iterations,
tiny batch and buffer: what a new user's first try costs) in its own process, in an order
reversed every round, each with a fresh empty compilation cache. Recorded from the wall clock
of the parent: when each output line appeared, when config.json appeared (62d8bfc writes it
once the initial state is built; later commits once everything is compiled: not comparable
across them), the first evaluation line and the end; and this checkout's own start-up lines
(built; compiled: chunk, evaluation, init and checkpoint fingerprints apiece; initial state).
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from bench.items import startup_figures
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--total-iterations", "2", "--warmup-iterations", "1", "--eval-every", "2", "--eval-episodes", "1",
         "--chunk-iterations", "1", "--batch-size", "2", "--buffer-capacity", "100", "--episode-length", "20"]


@dataclass(frozen=True)
class Args:
    baseline: str = ""
    """Another checkout of purejaxbrc (e.g. a worktree of an older commit) to time beside this one."""
    sets: str = "humanoids,dmc"
    """Comma-separated `--tasks` values, each timed on its own."""
    rounds: int = 1
    out: str = ""
    """JSON output; default bench/results/startup-<date>-<commit>.json."""


def revision(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=repo).stdout.strip() or "unknown"


def one(repo: Path, tasks: str) -> dict:
    """One cold run of the command in `repo`: its timeline in seconds from the start."""
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        run_dir, cache = Path(tmp) / "run", Path(tmp) / "cache"
        env = dict(os.environ, PYTHONPATH=str(repo), PUREJAXBRC_CACHE=str(cache), PYTHONUNBUFFERED="1")
        command = [sys.executable, str(repo / "experiments" / "brc_mjx.py"), "--tasks", tasks, *FLAGS,
                   "--run-dir", str(run_dir)]
        t0 = time.time()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo, env=env)
        lines = [(round(time.time() - t0, 2), line.rstrip()) for line in proc.stdout]
        rc = proc.wait()
        total = time.time() - t0
        config = run_dir / "config.json"
        record = dict(repo=str(repo), commit=revision(repo), tasks=tasks, exit_code=rc, total_s=round(total, 2),
                      config_json_at_s=round(config.stat().st_mtime - t0, 2) if config.exists() else None,
                      lines=lines)
    for at, line in lines:
        if line.startswith("built "):
            record.update(built_at_s=at, build_s=float(re.search(r"in ([\d.]+)s", line).group(1)))
        elif "compiled in" in line:
            record.update(compiled_at_s=at, **startup_figures(line))
        elif line.startswith("iter ") and "first_eval_at_s" not in record:
            record["first_eval_at_s"] = at
    return record


def main(args: Args):
    if not args.baseline or not (Path(args.baseline) / "experiments" / "brc_mjx.py").exists():
        raise ConfigError(f"--baseline must be a checkout of purejaxbrc, got {args.baseline!r}")
    if args.rounds <= 0:
        raise ConfigError(f"--rounds must be > 0, got {args.rounds}")
    repos = [Path(args.baseline).resolve(), ROOT]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = []
    for tasks in [s for s in args.sets.split(",") if s]:
        for r in range(args.rounds):
            for repo in repos if r % 2 == 0 else repos[::-1]:
                log(f"{tasks}, round {r + 1}: {repo} ({revision(repo)}) ...")
                rec = one(repo, tasks)
                rec["round"] = r
                log(f"  exit {rec['exit_code']}, {rec['total_s']:.0f}s in all"
                    + (f"; config.json at {rec['config_json_at_s']:.0f}s" if rec["config_json_at_s"] else ""))
                if rec["exit_code"]:
                    log("\n".join(line for _, line in rec["lines"][-20:]))
                records.append(rec)
    out = Path(args.out or ROOT / "bench" / "results" /
               f"startup-{datetime.date.today().isoformat()}-{revision(ROOT)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                                   command=" ".join(sys.argv), flags=FLAGS, cpus=os.cpu_count(),
                                   records=records), indent=1) + "\n")
    for tasks in dict.fromkeys(r["tasks"] for r in records):
        mine = [r["total_s"] for r in records if r["tasks"] == tasks and Path(r["repo"]) == ROOT]
        theirs = [r["total_s"] for r in records if r["tasks"] == tasks and Path(r["repo"]) != ROOT]
        print(f"{tasks}: this checkout {sum(mine) / len(mine):.0f}s, baseline {sum(theirs) / len(theirs):.0f}s: "
              f"{sum(mine) / sum(theirs):.2f} of the baseline's time")
    log(f"wrote {out}")


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
