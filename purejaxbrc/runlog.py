"""The run directory: config.json, metrics.jsonl (one row per evaluation, seed and task) and
summary.json. Conflicts are found before anything is compiled."""

import json
import os
from pathlib import Path

import numpy as np

from purejaxbrc.config import ConfigError


def check_run_dir(run_dir: str, config_dict: dict) -> None:
    """Refuse a run directory that already holds a run; nothing is written here."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {run_dir} exists and is not a directory")
    stored = path / "config.json"
    if stored.exists():
        try:
            old = json.loads(stored.read_text())
        except (OSError, json.JSONDecodeError):
            raise ConfigError(f"--run-dir {run_dir} holds an unreadable config.json; choose another run dir")
        differ = sorted(k for k in set(old) | set(config_dict) if old.get(k) != config_dict.get(k))
        if differ:
            raise ConfigError(f"--run-dir {run_dir} already holds a different run "
                              f"(differs in: {', '.join(differ)}); choose another run dir")
        raise ConfigError(f"--run-dir {run_dir} already holds this run; choose another run dir")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"--run-dir {run_dir} is not empty and holds no run; choose another run dir")


class RunLog:
    def __init__(self, run_dir: str, config_dict: dict, task_names, seeds, extra: dict | None = None):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task_names, self.seeds = list(task_names), list(seeds)
        _write_json(self.dir / "config.json", config_dict)
        if extra:
            _write_json(self.dir / "run_info.json", extra)
        self.last_returns = None

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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file
