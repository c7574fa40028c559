"""The run directory, in one place: config.json (the resolved experiment), run_info.json (kind,
versions, devices), metrics.jsonl (one row per evaluation, member and task), summary.json and
checkpoints/ (purejaxbrc.checkpoint). Here config.json is written and read, a stored config is
compared with a given one (one definition of the fields that may differ), and checkpoints are
restored for a run. Conflicts are found before anything is compiled.

A resumed run keeps the rows up to its checkpoint's iteration and drops the later ones (written
after that checkpoint, they are written again), so that metrics.jsonl and summary.json equal an
uninterrupted run's except for the wall-clock fields: `wall_s` in rows and summary and
`compile_s` in the summary (cumulative over the run's sessions, not reproducible)."""

import dataclasses
import importlib.metadata
import json
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

import purejaxbrc
from purejaxbrc import distributed, kinds
from purejaxbrc.checkpoint import Checkpoints, CorruptCheckpoint, Restored, list_steps
from purejaxbrc.config import ConfigError, Experiment, RunConfig, TransferConfig

PACKAGES = ("jax", "jaxlib", "equinox", "optax", "orbax-checkpoint", "mujoco", "mujoco-mjx",
            "playground", "gymnax", "purejaxbrc")

# -- config.json ----------------------------------------------------------------------------------
# The run's fields that change no number it computes, and how far each may differ: between a run
# and its resumption ("session"; where and how often it saves, how processes find each other, the
# sweep's spelling: its resolved variants are compared), or also between the processes of one run
# ("process": process 0 may name itself localhost where the others name its host).
FREE_FIELDS = {
    "resume": "session", "run_dir": "session", "checkpoint_every": "session", "keep_checkpoints": "session",
    "buffer_checkpoint": "session", "num_processes": "session", "sweep": "session", "sweep_file": "session",
    "track": "session",
    "coordinator_address": "process", "process_id": "process",
}


def free_fields(across: str) -> set[str]:
    """The fields that may differ `across` "session"s or "process"es."""
    if across not in ("session", "process"):
        raise ValueError(f"across must be 'session' or 'process', got {across!r}")
    return {k for k, where in FREE_FIELDS.items() if across == "session" or where == "process"}


def config_dict(experiment: Experiment, variants=({},), transfer: TransferConfig | None = None) -> dict:
    """config.json: `{"run": ..., "agent": ..., ("transfer": ...,) "variants": [...]}`; `variants`
    are the resolved sweep (`[{}]` without one)."""
    d = {"run": dataclasses.asdict(experiment.run), "agent": dataclasses.asdict(experiment.agent)}
    if transfer is not None:
        d["transfer"] = dataclasses.asdict(transfer)
    d["variants"] = list(variants)
    return json.loads(json.dumps(d))  # as config.json holds it: tuples become lists


def _flat(d: dict) -> dict:
    """config.json's parts as one dict of flag names (names are unique across the parts)."""
    out = {}
    for part, value in d.items():
        if isinstance(value, dict):
            out.update(value)
        else:
            out[part] = value
    return out


def _today(stored: dict) -> dict:
    """A stored config in today's terms: a transfer run from before `--temperature` carried the
    pretrained temperature over."""
    if "transfer" in stored and "temperature" not in stored["transfer"]:
        stored = dict(stored, transfer=dict(stored["transfer"], temperature="carry"))
    return stored


def config_diff(stored: dict, given: dict, across: str = "session") -> list[str]:
    """`name (stored X, given Y)` for every field that differs, the fields free `across`
    sessions (or processes) left out."""
    ignore = free_fields(across)
    stored, given = _flat(_today(stored)), _flat(given)
    names = sorted(k for k in set(stored) | set(given) if k not in ignore and stored.get(k) != given.get(k))
    return [f"{k} (stored {stored.get(k)!r}, given {given.get(k)!r})" for k in names]


class Stored(NamedTuple):
    """A run directory's resolved experiment, as its config.json and run_info.json hold it."""

    kind: kinds.Kind
    experiment: Experiment  # the agent with the flags' values (a sweep's are in `variants`)
    transfer: TransferConfig | None
    variants: tuple[dict, ...]
    config: dict  # config.json


def _build(cls, fields: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"stored config has fields {cls.__name__} does not know: {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def read_config(run_dir) -> Stored:
    """The run stored in `run_dir`; ConfigError when it is missing or unreadable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist")
    try:
        info = json.loads((run_dir / "run_info.json").read_text())
        stored = _today(json.loads((run_dir / "config.json").read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"run dir {run_dir}: cannot read run_info.json and config.json ({e})")
    if not info.get("kind"):
        raise ConfigError(f"run dir {run_dir}: run_info.json names no kind (written before checkpoints existed)")
    kind = kinds.get(info["kind"])
    parts = {"run", "agent", "variants", "transfer"}
    if set(stored) - parts or not {"run", "agent"} <= set(stored):
        raise ConfigError(f"stored config has the parts {', '.join(sorted(stored))}; expected run, agent, "
                          f"variants (and transfer)")
    experiment = Experiment(run=_build(RunConfig, stored["run"]), agent=_build(kind.agent_config, stored["agent"]))
    transfer = _build(TransferConfig, stored["transfer"]) if "transfer" in stored else None
    return Stored(kind, experiment, transfer, tuple(stored.get("variants", [{}])), stored)


def check_run_dir(run_dir: str, config: dict, resume: bool = False) -> None:
    """Refuse a run directory that already holds a run (with `resume`: one that does not hold
    this run and a checkpoint of it); nothing is written here."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {run_dir} exists and is not a directory")
    stored = path / "config.json"
    if resume:
        return _check_resumable(run_dir, stored, config)
    if stored.exists():
        try:
            old = json.loads(stored.read_text())
        except (OSError, json.JSONDecodeError):
            raise ConfigError(f"--run-dir {run_dir} holds an unreadable config.json; choose another run dir")
        differ = [d.split(" (")[0] for d in config_diff(old, config)]
        if differ:
            raise ConfigError(f"--run-dir {run_dir} already holds a different run "
                              f"(differs in: {', '.join(differ)}); choose another run dir")
        raise ConfigError(f"--run-dir {run_dir} already holds this run; choose another run dir "
                          f"or pass --resume to continue it")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"--run-dir {run_dir} is not empty and holds no run; choose another run dir")


def _check_resumable(run_dir: str, stored: Path, config: dict) -> None:
    if not stored.exists():
        raise ConfigError(f"--resume: --run-dir {run_dir} holds no run to resume (no config.json)")
    try:
        old = json.loads(stored.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"--resume: --run-dir {run_dir} holds an unreadable config.json")
    differ = config_diff(old, config)
    if differ:
        raise ConfigError(f"--resume: the flags contradict the run stored in {run_dir} "
                          f"(differs in: {', '.join(differ)})")
    if not list_steps(run_dir):
        raise ConfigError(f"--resume: --run-dir {run_dir} has no checkpoint to resume from")


def check_same_config(config: dict) -> None:
    """ConfigError on every process unless all were given the same run (`config`: config.json's
    dict): a process started with other flags would train members that the logs attribute to
    other seeds or values."""
    if jax.process_count() == 1:
        return
    ignore = free_fields("process")
    config = dict(config, run={k: v for k, v in config["run"].items() if k not in ignore})
    digest = zlib.crc32(json.dumps(config, sort_keys=True).encode()) & 0x7FFFFFFF
    digests = distributed.gather(np.int32(digest)).reshape(-1)
    others = [i for i, d in enumerate(digests) if d != digests[0]]
    if others:
        raise ConfigError(f"processes {', '.join(map(str, others))} were given another configuration than "
                          f"process 0; start every process with the same flags (only --process-id differs)")


def run_info(kind: str | None) -> dict:
    """run_info.json: the kind, package versions and devices."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["purejaxbrc"] = versions["purejaxbrc"] or purejaxbrc.__version__  # run from a checkout
    device = jax.devices()[0]
    return dict(kind=kind, versions=versions, device=str(device.device_kind),
                backend=jax.default_backend(), num_devices=jax.device_count(),
                num_processes=jax.process_count())


# -- checkpoints of a run -------------------------------------------------------------------------
def check_step(run_dir, step: int | None) -> None:
    """ConfigError unless `step` is None or one of the run's checkpoints."""
    steps = list_steps(run_dir)
    if step is not None and step not in steps:
        raise ConfigError(f"--checkpoint {step}: no such checkpoint in {run_dir}; there are: "
                          f"{', '.join(map(str, steps))}")


def restore(run_dir, abstract, config: dict, step: int | None = None, with_buffer: bool = True,
            sharding=None, read_only: bool = False) -> Restored:
    """Checkpoint `step` of the run in `run_dir` into `abstract` (the population's state shape),
    or with `step=None` the latest readable one (falling back past damaged ones). ConfigError
    when there is none, `step` is not one, or a checkpoint is of another config than `config`."""
    check_step(run_dir, step)
    ckpts = Checkpoints(run_dir, read_only=read_only, sharding=sharding)

    def check(meta):
        differ = config_diff(meta["config"], config)
        if differ:
            raise ConfigError(f"checkpoint {meta['iteration']} in {ckpts.dir} is from a different config "
                              f"(differs in: {', '.join(differ)})")
    if step is None:
        return ckpts.restore_latest(abstract, check, with_buffer=with_buffer)
    try:  # exactly this one: no fallback to an older one
        return ckpts.restore_checked(step, abstract, check, with_buffer=with_buffer)
    except CorruptCheckpoint as e:
        raise ConfigError(f"--checkpoint {step} is corrupt or incomplete ({e})")


def read_agent(run_dir, step: int) -> dict:
    """`{name: numpy [members, ...]}`: the agent arrays (networks, targets, optimiser states,
    temperature) of checkpoint `step`, by name without the ".agent" prefix."""
    try:
        arrays = Checkpoints(run_dir, read_only=True).read(step, ".agent.")
    except CorruptCheckpoint as e:
        raise ConfigError(f"checkpoint {step} of {run_dir} is corrupt or incomplete ({e})")
    return {k[len(".agent"):]: v for k, v in arrays.items()}


# -- metrics.jsonl and summary.json ---------------------------------------------------------------
def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (metrics.jsonl); a half-written line (a killed writer) is
    left out."""
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
        """`population`: purejaxbrc.program.Population; `extra`: run_info.json; `resume_iteration`:
        continue the run stored here from that checkpoint's iteration."""
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
        write_json(self.dir / "config.json", config_dict)
        if resume_iteration is not None:
            self._resume(resume_iteration, extra)
        elif extra:
            write_json(self.dir / "run_info.json", extra)

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
        write_json(info_path, info)

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
            write_json(self.dir / "summary.json", summary)
        return summary


def write_json(path: Path, obj) -> None:
    """`obj` as indented JSON, written whole (write, fsync, rename)."""
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: a reader (or a killed writer) never leaves half a file
