"""The run directory: config.json, run_info.json (kind, versions, device), metrics.jsonl (one
row per evaluation, seed and task), summary.json and checkpoints/ (purejaxbrc.checkpoint).
Conflicts are found before anything is compiled.

A resumed run keeps the rows up to its checkpoint's iteration and drops the later ones (written
after that checkpoint, they are written again), so that metrics.jsonl and summary.json equal an
uninterrupted run's except for the wall-clock fields: `wall_s` in rows and summary and
`compile_s` in the summary (cumulative over the run's sessions, not reproducible)."""

import json
import os
from pathlib import Path

import numpy as np

from purejaxbrc.config import RESUME_FREE, ConfigError, config_diff


def check_run_dir(run_dir: str, config_dict: dict, resume: bool = False) -> None:
    """Refuse a run directory that already holds a run (with `resume`: one that does not hold
    this run and a checkpoint of it); nothing is written here."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {run_dir} exists and is not a directory")
    stored = path / "config.json"
    if resume:
        return _check_resumable(run_dir, stored, config_dict)
    if stored.exists():
        try:
            old = json.loads(stored.read_text())
        except (OSError, json.JSONDecodeError):
            raise ConfigError(f"--run-dir {run_dir} holds an unreadable config.json; choose another run dir")
        differ = sorted(k for k in set(old) | set(config_dict)
                        if k not in RESUME_FREE and old.get(k) != config_dict.get(k))
        if differ:
            raise ConfigError(f"--run-dir {run_dir} already holds a different run "
                              f"(differs in: {', '.join(differ)}); choose another run dir")
        raise ConfigError(f"--run-dir {run_dir} already holds this run; choose another run dir "
                          f"or pass --resume to continue it")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"--run-dir {run_dir} is not empty and holds no run; choose another run dir")


def _check_resumable(run_dir: str, stored: Path, config_dict: dict) -> None:
    from purejaxbrc.checkpoint import list_steps
    if not stored.exists():
        raise ConfigError(f"--resume: --run-dir {run_dir} holds no run to resume (no config.json)")
    try:
        old = json.loads(stored.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"--resume: --run-dir {run_dir} holds an unreadable config.json")
    differ = config_diff(old, config_dict)
    if differ:
        raise ConfigError(f"--resume: the flags contradict the run stored in {run_dir} "
                          f"(differs in: {', '.join(differ)})")
    if not list_steps(run_dir):
        raise ConfigError(f"--resume: --run-dir {run_dir} has no checkpoint to resume from")


def read_rows(path: Path) -> list[dict]:
    """metrics.jsonl's rows; a half-written last line (a killed run) is left out."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunLog:
    def __init__(self, run_dir: str, config_dict: dict, task_names, seeds, extra: dict | None = None,
                 resume_iteration: int | None = None):
        """`resume_iteration`: continue the run stored here from that checkpoint's iteration."""
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task_names, self.seeds = list(task_names), list(seeds)
        self.last_returns = None
        _write_json(self.dir / "config.json", config_dict)
        if resume_iteration is not None:
            self._resume(resume_iteration, extra)
        elif extra:
            _write_json(self.dir / "run_info.json", extra)

    def _resume(self, iteration: int, extra: dict | None) -> None:
        """Drop rows after `iteration` and the summary; note the resumption in run_info.json."""
        path = self.dir / "metrics.jsonl"
        text = path.read_text() if path.exists() else ""
        rows = [r for r in read_rows(path) if r["iteration"] <= iteration]
        kept = "".join(json.dumps(r) + "\n" for r in rows)
        if kept != text:
            _write_text(path, kept)
        if rows:
            last = [r for r in rows if r["iteration"] == rows[-1]["iteration"]]
            by_key = {(r["seed"], r["task"]): r["eval_return"] for r in last}
            self.last_returns = np.array([[by_key[(s, t)] for t in self.task_names] for s in self.seeds])
        (self.dir / "summary.json").unlink(missing_ok=True)
        info_path = self.dir / "run_info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        info.setdefault("resumed", []).append(dict(extra or {}, iteration=iteration))
        _write_json(info_path, info)

    def log_eval(self, iteration: int, env_steps: int, returns, wall_s: float, train_metrics=None):
        """`returns` [seeds, tasks]; appends one JSON line per (seed, task)."""
        returns = np.asarray(returns, np.float64)
        self.last_returns = returns
        rows = []
        for s, seed in enumerate(self.seeds):
            extra = {k: float(np.asarray(v)[s]) for k, v in (train_metrics or {}).items()}
            for t, task in enumerate(self.task_names):
                rows.append(dict(iteration=iteration, env_steps=env_steps, seed=seed, task=task,
                                 eval_return=float(returns[s, t]), wall_s=round(wall_s, 3), **extra))
        with open(self.dir / "metrics.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_summary(self, iteration: int, env_steps: int, wall_s: float, compile_s: float) -> dict:
        per_task = self.last_returns.mean(axis=0)
        summary = dict(
            iteration=iteration, env_steps=env_steps, seeds=self.seeds,
            final_eval_return={t: float(r) for t, r in zip(self.task_names, per_task)},
            mean_eval_return=float(per_task.mean()),
            wall_s=round(wall_s, 3), compile_s=round(compile_s, 3),
        )
        _write_json(self.dir / "summary.json", summary)
        return summary


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: a reader (or a killed writer) never leaves half a file
