"""The run directory: config.json, run_info.json (kind, versions, devices), metrics.jsonl (one
row per evaluation, member and task), summary.json and checkpoints/ (purejaxbrc.checkpoint).
Conflicts are found before anything is compiled.

A resumed run keeps the rows up to its checkpoint's iteration and drops the later ones (written
after that checkpoint, they are written again), so that metrics.jsonl and summary.json equal an
uninterrupted run's except for the wall-clock fields: `wall_s` in rows and summary and
`compile_s` in the summary (cumulative over the run's sessions, not reproducible)."""

import json
import os
from pathlib import Path

import numpy as np

from purejaxbrc.config import ConfigError, config_diff


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
        differ = [d.split(" (")[0] for d in config_diff(old, config_dict)]
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
    """Writes config.json, run_info.json, metrics.jsonl and summary.json; with `write=False`
    (processes other than 0) it only keeps the latest returns."""

    def __init__(self, run_dir: str, config_dict: dict, task_names, population, extra: dict | None = None,
                 resume_iteration: int | None = None, write: bool = True):
        """`population`: purejaxbrc.run.Population; `resume_iteration`: continue the run stored
        here from that checkpoint's iteration."""
        self.dir, self.write = Path(run_dir), write
        self.task_names = list(task_names)
        self.seeds, self.variant_of = list(population.seeds), list(population.variant_of)
        self.variants = list(population.variants)
        self.last_returns = None
        if resume_iteration is not None:
            self._read_last_returns(resume_iteration)
        if not write:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.dir / "config.json", config_dict)
        if resume_iteration is not None:
            self._resume(resume_iteration, extra)
        elif extra:
            _write_json(self.dir / "run_info.json", extra)

    def _member_key(self, m: int):
        return self.seeds[m], self.variant_of[m]

    def _read_last_returns(self, iteration: int) -> None:
        rows = [r for r in read_rows(self.dir / "metrics.jsonl") if r["iteration"] <= iteration]
        if rows:
            last = [r for r in rows if r["iteration"] == rows[-1]["iteration"]]
            by_key = {(r["seed"], r.get("variant", 0), r["task"]): r["eval_return"] for r in last}
            self.last_returns = np.array([[by_key[self._member_key(m) + (t,)] for t in self.task_names]
                                          for m in range(len(self.seeds))])

    def _resume(self, iteration: int, extra: dict | None) -> None:
        """Drop rows after `iteration` and the summary; note the resumption in run_info.json."""
        path = self.dir / "metrics.jsonl"
        text = path.read_text() if path.exists() else ""
        kept = "".join(json.dumps(r) + "\n" for r in read_rows(path) if r["iteration"] <= iteration)
        if kept != text:
            _write_text(path, kept)
        (self.dir / "summary.json").unlink(missing_ok=True)
        info_path = self.dir / "run_info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        info.setdefault("resumed", []).append(dict(extra or {}, iteration=iteration))
        _write_json(info_path, info)

    def log_eval(self, iteration: int, env_steps: int, returns, wall_s: float, train_metrics=None):
        """`returns` [members, tasks]; appends one JSON line per (member, task), carrying the
        member's seed, variant index and swept hyperparameters. Returns the rows written."""
        returns = np.asarray(returns, np.float64)
        self.last_returns = returns
        if not self.write:
            return []
        rows = []
        for m, (seed, v) in enumerate(zip(self.seeds, self.variant_of)):
            extra = {k: np.asarray(val)[m].item() for k, val in (train_metrics or {}).items()}
            for t, task in enumerate(self.task_names):
                rows.append(dict(iteration=iteration, env_steps=env_steps, seed=seed, variant=v,
                                 hparams=self.variants[v], task=task, eval_return=float(returns[m, t]),
                                 wall_s=round(wall_s, 3), **extra))
        with open(self.dir / "metrics.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return rows

    def write_summary(self, iteration: int, env_steps: int, wall_s: float, compile_s: float) -> dict:
        """summary.json: final returns per task, mean over seeds, for every variant (and over
        all members at the top level)."""
        def per_task(rows):
            return {t: float(r) for t, r in zip(self.task_names, rows.mean(axis=0))}
        members = np.asarray(self.variant_of)
        variants = []
        for v, hparams in enumerate(self.variants):
            final = per_task(self.last_returns[members == v])
            variants.append(dict(variant=v, hparams=hparams, final_eval_return=final,
                                 mean_eval_return=float(np.mean(list(final.values())))))
        final = per_task(self.last_returns)
        summary = dict(
            iteration=iteration, env_steps=env_steps, seeds=sorted(set(self.seeds)),
            final_eval_return=final, mean_eval_return=float(np.mean(list(final.values()))),
            variants=variants, wall_s=round(wall_s, 3), compile_s=round(compile_s, 3),
        )
        if self.write:
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
