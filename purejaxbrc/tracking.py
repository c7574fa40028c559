"""Experiment tracking: a run's evaluations, training metrics, config and run_info also go to
Weights & Biases and/or TensorBoard (`--track wandb tensorboard`), to watch runs live beside
others. metrics.jsonl stays the record of truth: the trackers get exactly its rows.

- Each member (seed x sweep variant) is one tracked run. W&B: one run per member, grouped by
  the run directory's name (W&B draws a group's mean and spread per curve and groups runs by
  any config value, e.g. a swept `agent.lr`); the runs' files go under RUN_DIR/wandb.
  TensorBoard: one run (subdirectory RUN_DIR/tensorboard/<member>) per member, all overlaid on
  each chart.
- Per evaluation and member: `eval_return/<task>` for every task, `train/<metric>` (the means
  over the chunk's gradient steps, as in metrics.jsonl), `iteration` and `wall_s`, against
  `env_steps` (per task) as the x-axis. The config (the member's swept values written into
  `agent`, its seed and variant in `member`) and run_info go to W&B's config and to
  TensorBoard's text tab.
- Logging runs on the host after an evaluation's values are read, like the progress bar: W&B
  hands the values to its service process, TensorBoard's writer to a thread.
- Only process 0 logs; the other processes get trackers that do nothing.
- RUN_DIR/tracking.json keeps the W&B run ids (a resumed run continues the same W&B runs) and
  the last iteration each tracker logged. A resumed run starting at checkpoint C sends each
  tracker the rows up to C that it lacks (all of them for a tracker added at the resume). The
  rows after C that metrics.jsonl drops and the run computes again: TensorBoard purges what it
  holds after C (a SessionLog.START event, its mechanism for restarted jobs), so they are
  logged anew; W&B cannot drop history, so its runs keep the first values of those
  iterations (equal to the new ones when the resume is bit-exact, `wall_s` aside).
"""

import importlib
import json
import os
import secrets
import shutil
import string
import time
from pathlib import Path
from typing import NamedTuple

import jax

from purejaxbrc.config import ConfigError
from purejaxbrc.rundir import read_rows, write_json

# wandb and tensorboard are optional extras (`pip install -e ".[wandb]"`): each is imported where
# its tracker starts, and `check_installed` says which extra is missing before anything compiles.

TRACKERS = ("wandb", "tensorboard")
# What each tracker needs importable, checked before anything compiles.
MODULES = {"wandb": "wandb", "tensorboard": "tensorboard.summary.writer.event_file_writer"}
STATE_FILE = "tracking.json"
# metrics.jsonl fields that say which member, task and time a row is; the rest of a row's fields
# but `eval_return` are the chunk's training metrics.
ROW_KEYS = ("iteration", "env_steps", "seed", "variant", "hparams", "task", "eval_return", "wall_s")


def check_installed(names) -> None:
    """ConfigError (one line) for the first tracker whose package is missing, naming the extra
    to install; with W&B logging online from this process (process 0), for a missing API key."""
    for name in names:
        if name not in MODULES:
            raise ConfigError(f"--track {name}: unknown tracker; known: {', '.join(TRACKERS)}")
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            raise ConfigError(f'--track {name} needs the {name} package: pip install -e ".[{name}]"')
    if "wandb" in names and jax.process_index() == 0:
        _check_wandb_key()


def _check_wandb_key() -> str:
    """W&B's mode (WANDB_MODE, or `wandb offline`); ConfigError when it is online without a key."""
    import wandb
    mode = wandb.setup(wandb.Settings(silent=True)).settings.mode
    if mode in ("online", "run") and not wandb.login(prompt=False, verify=False):
        raise ConfigError("--track wandb: no W&B API key; run `wandb login` (or set WANDB_API_KEY), or "
                          "log offline with WANDB_MODE=offline and upload later with `wandb sync`")
    return mode


# -- members and rows ----------------------------------------------------------------------------
class Member(NamedTuple):
    index: int
    seed: int
    variant: int
    hparams: dict
    label: str  # `seed0`, or `v1-seed0` in a sweep: the tracked run's name


def members_of(population) -> list[Member]:
    """One Member per population member (purejaxbrc.program.Population), in member order."""
    many = len(population.variants) > 1
    return [Member(m, s, v, dict(population.variants[v]), (f"v{v}-" if many else "") + f"seed{s}")
            for m, (s, v) in enumerate(zip(population.seeds, population.variant_of))]


def member_scalars(rows) -> dict[tuple[int, int], dict]:
    """metrics.jsonl rows of one evaluation -> `{(seed, variant): {key: value}}`: `env_steps`,
    `iteration`, `wall_s`, `eval_return/<task>` per task and `train/<metric>` per training
    metric (one value per member: every task's row repeats it)."""
    out = {}
    for row in rows:
        scalars = out.setdefault((row["seed"], row.get("variant", 0)), dict(
            env_steps=row["env_steps"], iteration=row["iteration"], wall_s=row["wall_s"],
            **{f"train/{k}": v for k, v in row.items() if k not in ROW_KEYS}))
        scalars[f"eval_return/{row['task']}"] = row["eval_return"]
    return out


def member_config(config: dict, run_info: dict, member: Member) -> dict:
    """config.json as this member trained it: its swept values in `agent`, who it is in `member`."""
    return dict(config, agent=dict(config["agent"], **member.hparams), run_info=run_info,
                member=dict(index=member.index, seed=member.seed, variant=member.variant,
                            hparams=member.hparams))


def _by_iteration(rows) -> list[list[dict]]:
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["iteration"], []).append(row)
    return [groups[it] for it in sorted(groups)]


class Context(NamedTuple):
    """What every tracker gets to open."""

    run_dir: Path
    name: str  # the run directory's name: W&B's group
    config: dict  # config.json
    run_info: dict
    members: list[Member]
    resume_step: int | None  # env steps of the checkpoint a resumed run starts from
    log: object  # one line to the user


# -- Weights & Biases ----------------------------------------------------------------------------
def _run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandB:
    """One W&B run per member, grouped by the run directory's name."""

    name, purges = "wandb", False

    def __init__(self, ctx: Context, state: dict):
        import wandb
        mode = _check_wandb_key()
        project = state.get("project") or os.environ.get("WANDB_PROJECT") or "purejaxbrc"
        group = state.get("group") or ctx.name
        ids = state.get("ids") or [_run_id() for _ in ctx.members]
        self.state = dict(state, project=project, group=group, ids=ids)
        self.runs = []
        try:
            for m in ctx.members:
                # The first member's run records the machine's use (CPU, GPU): the others
                # would repeat it.
                settings = wandb.Settings(console="off", silent=True, x_disable_stats=m.index > 0)
                run = wandb.init(project=project, group=group, name=f"{group}/{m.label}", id=ids[m.index],
                                 resume="allow", dir=str(ctx.run_dir), job_type=ctx.run_info.get("kind"),
                                 reinit="create_new", settings=settings)
                self.runs.append(run)
                run.config.update(member_config(ctx.config, ctx.run_info, m), allow_val_change=True)
                run.define_metric("env_steps")
                run.define_metric("*", step_metric="env_steps")
        except BaseException:
            self.close(1)
            raise
        offline = mode in ("offline", "dryrun")
        ctx.log(f"W&B: {len(self.runs)} run(s) in project {project}, group {group}"
                + (f" (offline: upload with `wandb sync {ctx.run_dir}/wandb/offline-run-*`)" if offline else ""))

    def log(self, scalars: list[dict]) -> None:
        for run, values in zip(self.runs, scalars):
            run.log(values)

    def close(self, exit_code: int) -> None:
        for run in self.runs:
            run.finish(exit_code=exit_code)


# -- TensorBoard ---------------------------------------------------------------------------------
def _text(tag: str, text: str):
    """A TensorBoard text summary value (markdown)."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(display_name=tag, description=""),
        tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                      tensor_shape=tensor_shape_pb2.TensorShapeProto()))


def _as_code(obj) -> str:
    """JSON as a markdown code block (TensorBoard's text tab renders markdown)."""
    return "\n".join("    " + line for line in json.dumps(obj, indent=2).splitlines())


class TensorBoard:
    """One TensorBoard run (RUN_DIR/tensorboard/<member>) per member, a new event file per
    session. Values are float32 (TensorBoard's scalars)."""

    name, purges = "tensorboard", True

    def __init__(self, ctx: Context, state: dict):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.state = dict(state)
        root = ctx.run_dir / "tensorboard"
        # The writer's thread flushes every few seconds: nothing waits on the disk.
        self.writers = [EventFileWriter(str(root / m.label), flush_secs=5) for m in ctx.members]
        step = 0 if ctx.resume_step is None else ctx.resume_step
        for w, m in zip(self.writers, ctx.members):
            if ctx.resume_step is not None:  # drop what an interrupted session logged after the checkpoint
                w.add_event(event_pb2.Event(wall_time=time.time(), step=ctx.resume_step + 1,
                                            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
            w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[
                _text("config", _as_code(member_config(ctx.config, {}, m))), _text("run_info", _as_code(ctx.run_info))])))
        ctx.log(f"TensorBoard: tensorboard --logdir {root}")

    def log(self, scalars: list[dict]) -> None:
        now = time.time()
        for w, values in zip(self.writers, scalars):
            summary = self._summary(value=[self._summary.Value(tag=k, simple_value=float(v))
                                           for k, v in values.items() if k != "env_steps"])
            w.add_event(self._event(wall_time=now, step=int(values["env_steps"]), summary=summary))

    def close(self, exit_code: int) -> None:
        del exit_code
        for w in self.writers:
            w.close()


BACKENDS = {"wandb": WandB, "tensorboard": TensorBoard}


# -- all trackers of a run -----------------------------------------------------------------------
class Trackers:
    """The run's trackers; `log_eval(rows)` takes the rows one evaluation added to metrics.jsonl."""

    def __init__(self, backends=(), members=(), path: Path | None = None, kept: dict | None = None):
        """`kept`: tracking.json's entries of trackers this session does not use (kept as they
        are, so a later session that uses them again continues their runs)."""
        self.backends, self.path = list(backends), path
        self.index = {(m.seed, m.variant): m.index for m in members}
        self.state = {**(kept or {}), **{b.name: dict(b.state, logged_through=-1) for b in self.backends}}
        self.held = {b.name: -1 for b in self.backends}  # iterations up to this one each holds

    def send(self, backend, rows) -> None:
        """One evaluation's rows to one tracker."""
        by_member = member_scalars(rows)
        backend.log([by_member[k] for k in sorted(by_member, key=self.index.__getitem__)])
        self.state[backend.name]["logged_through"] = rows[0]["iteration"]
        write_json(self.path, self.state)

    def log_eval(self, rows) -> None:
        for b in self.backends:
            if rows and rows[0]["iteration"] > self.held[b.name]:
                self.send(b, rows)

    def close(self, error: BaseException | None = None) -> None:
        """`error`: what ended the run (None: it finished), for W&B's run state."""
        code = 0 if error is None else getattr(error, "code", 1)
        backends, self.backends = self.backends, []
        for b in backends:
            b.close(code if isinstance(code, int) else 1)


def open_trackers(names, run_dir, config: dict, run_info: dict, population,
                  resume_iteration: int | None = None, primary: bool = True, log=print) -> Trackers:
    """The trackers `names` (RunConfig.track) of the run in `run_dir`. `config`: config.json;
    `population`: purejaxbrc.program.Population; `resume_iteration`: the checkpoint a resumed run
    starts from (metrics.jsonl's rows up to it go to the trackers that lack them). Nothing is
    opened on processes other than 0 (`primary`). ConfigError (one line) when a tracker cannot
    start; a fresh run's directory is then left as it was."""
    names = tuple(dict.fromkeys(names))
    if not names or not primary:
        return Trackers()
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    resumed = resume_iteration is not None
    state = json.loads(path.read_text()) if resumed and path.exists() else {}
    members = members_of(population)
    ctx = Context(run_dir, run_dir.resolve().name, config, run_info, members,
                  resume_iteration * config["run"]["num_envs"] if resumed else None, log)
    existed, backends = run_dir.exists(), []
    try:
        for name in names:
            backends.append(BACKENDS[name](ctx, state.get(name, {})))
    except BaseException as e:
        Trackers(backends).close(e)
        if not resumed:  # leave the run directory as check_run_dir found it
            for sub in ("wandb", "tensorboard"):
                shutil.rmtree(run_dir / sub, ignore_errors=True)
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        if isinstance(e, Exception) and not isinstance(e, ConfigError):
            raise ConfigError(f"--track {name}: could not start ({type(e).__name__}: {e})".replace("\n", " "))
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    trackers = Trackers(backends, members, path, kept={k: v for k, v in state.items() if k not in names})
    if resumed:
        past = _by_iteration([r for r in read_rows(run_dir / "metrics.jsonl") if r["iteration"] <= resume_iteration])
        for b in backends:
            held = state.get(b.name, {}).get("logged_through", -1)
            for rows in past:
                if rows[0]["iteration"] > held:  # what this tracker lacks, before the new rows
                    trackers.send(b, rows)
            # TensorBoard purged what it held after the checkpoint; W&B keeps it.
            trackers.held[b.name] = resume_iteration if b.purges else max(held, resume_iteration)
            trackers.state[b.name]["logged_through"] = trackers.held[b.name]
    write_json(path, trackers.state)
    return trackers
