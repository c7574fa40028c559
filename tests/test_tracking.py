"""Experiment tracking (purejaxbrc.tracking): what W&B (offline) and TensorBoard hold, read back
from their files, equals metrics.jsonl; a resumed run continues the same W&B runs and leaves
TensorBoard one value per step; a tracker added at a resume gets the earlier rows; a missing
extra or W&B key is one error line before anything compiles. Tiny DQN runs on gymnax CartPole-v1,
a sweep of two variants x two seeds."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_minatar  # noqa: E402
from purejaxbrc import program, rundir, tracking  # noqa: E402
from purejaxbrc.checkpoint import Checkpoints  # noqa: E402
from purejaxbrc.cli import RunStopped  # noqa: E402
from purejaxbrc.config import Experiment, RunConfig  # noqa: E402
from purejaxbrc.dqn import DQNConfig  # noqa: E402
from purejaxbrc.run import run  # noqa: E402

TINY = Experiment(
    RunConfig(tasks="CartPole-v1", num_seeds=2, num_envs=4, total_iterations=60, warmup_iterations=20,
              eval_every=20, eval_episodes=2, batch_size=16, utd=2, chunk_iterations=10,
              checkpoint_every=10, keep_checkpoints=10, sweep=("lr=0.0003,0.001",), run_dir="unused"),
    DQNConfig(critic_width=16, critic_depth=1, num_atoms=11, embed_dim=4, eps_decay=30))
BOTH = ("wandb", "tensorboard")


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "purejaxbrc-tests")


def metrics(run_dir, drop=()):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=_order)


def _order(row):
    return row["iteration"], row["seed"], row["variant"], row["task"]


def rows_of(member: dict, scalars: dict, tasks) -> list[dict]:
    """metrics.jsonl rows from one member's logged values of one evaluation."""
    train = {k.removeprefix("train/"): v for k, v in scalars.items() if k.startswith("train/")}
    return [dict(iteration=int(scalars["iteration"]), env_steps=int(scalars["env_steps"]),
                 seed=member["seed"], variant=member["variant"], hparams=member["hparams"], task=t,
                 eval_return=scalars[f"eval_return/{t}"], wall_s=scalars["wall_s"], **train)
            for t in tasks]


# -- W&B: the records of its offline run files ----------------------------------------------------
def wandb_records(path: Path):
    """The protobuf Records of a W&B run file (`run-<id>.wandb`): a 7-byte header (":W&B", a
    magic, a version), then LevelDB's log format: 32 KiB blocks of chunks, each a 4-byte CRC,
    2-byte length and 1-byte type (1 whole, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2
    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # zeros to the block's end
            pos += -pos % block
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)


def wandb_runs(run_dir) -> dict[str, list[dict]]:
    """`{run id: [one dict per session: config, history]}` of the offline runs in RUN_DIR/wandb,
    sessions in the order they started."""
    out = {}
    for d in sorted((Path(run_dir) / "wandb").glob("offline-run-*")):
        config, history, run_id, group = {}, [], None, None
        for record in wandb_records(next(d.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id, group = record.run.run_id, record.run.run_group
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":  # a key is `key` or, split at "/", `nested_key`
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                history.append({k: v for k, v in items.items() if not k.startswith("_")})
        out.setdefault(run_id, []).append(dict(config=config, history=history, group=group))
    return out


def wandb_rows(run_dir, tasks) -> list[dict]:
    rows = []
    for sessions in wandb_runs(run_dir).values():
        for s in sessions:
            for scalars in s["history"]:
                rows += rows_of(s["config"]["member"], scalars, tasks)
    return sorted(rows, key=_order)


# -- TensorBoard: what its loader shows -----------------------------------------------------------
def tensorboard_rows(run_dir, config, tasks) -> list[dict]:
    """Rows from each member's TensorBoard run, as TensorBoard's event loader shows them
    (restarts purged), values float32."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    members = {m.label: m for m in tracking.members_of(population_of(config))}
    rows = []
    for d in sorted((Path(run_dir) / "tensorboard").iterdir()):
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        steps = {}
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                assert tag not in steps.setdefault(e.step, {}), f"{d.name} {tag}: step {e.step} twice"
                steps[e.step][tag] = e.value
        m = members[d.name]
        stored = json.loads("\n".join(line[4:] for line in acc.Tensors("config")[-1].tensor_proto
                                      .string_val[0].decode().splitlines()))
        assert stored["member"] == dict(index=m.index, seed=m.seed, variant=m.variant, hparams=m.hparams)
        assert stored["agent"]["lr"] == m.hparams["lr"]  # the member's own value
        for step, scalars in steps.items():
            rows += rows_of(stored["member"], dict(scalars, env_steps=step), tasks)
    return sorted(rows, key=_order)


def population_of(config):
    run = RunConfig(seed=config["run"]["seed"], num_seeds=config["run"]["num_seeds"])
    return program.make_population(run, config["variants"])


def as_float32(rows):
    """What TensorBoard keeps of a row: its numbers as float32."""
    keep = ("iteration", "env_steps", "seed", "variant", "hparams", "task")
    return [{k: v if k in keep else float(np.float32(v)) for k, v in r.items()} for r in rows]


def check_tracked(run_dir, tasks=("CartPole-v1",), wandb_drop=()):
    """W&B's rows (without the fields `wandb_drop`) and TensorBoard's equal metrics.jsonl's."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    logged = [{k: v for k, v in r.items() if k not in wandb_drop} for r in wandb_rows(run_dir, tasks)]
    assert logged == metrics(run_dir, drop=wandb_drop)
    assert tensorboard_rows(run_dir, config, tasks) == as_float32(metrics(run_dir))


# -- the tests ----------------------------------------------------------------------------------
def build(cfg):
    return program.build(program.plan("minatar", cfg))


def stop_at(iteration: int, signum):
    def log(msg):
        if msg.startswith(f"iter {iteration:>8d}"):
            os.kill(os.getpid(), signum)
    return log


@pytest.fixture(scope="module")
def untracked(tmp_path_factory):
    """An uninterrupted run without tracking: the numbers every tracked run must reproduce."""
    run_dir = tmp_path_factory.mktemp("untracked") / "run"
    brc_minatar.main(TINY.replace(run_dir=str(run_dir)))
    return run_dir


def test_tracked_run_logs_the_metrics_rows_and_resumes_the_same_runs(untracked, tmp_path):
    cfg = TINY.replace(run_dir=str(tmp_path / "run"), track=BOTH)
    with pytest.raises(RunStopped):  # SIGTERM during the chunk ending at 40
        run(build(cfg), log=stop_at(40, signal.SIGTERM))
    run_dir = Path(cfg.run.run_dir)
    check_tracked(run_dir)  # a fresh run: everything it logged, iterations 20 and 40
    ids = set(wandb_runs(run_dir))
    assert len(ids) == 4 and json.loads((run_dir / "tracking.json").read_text())["wandb"]["logged_through"] == 40
    # As if killed after logging 40: its checkpoint never got written.
    shutil.rmtree(run_dir / "checkpoints" / "40")

    brc_minatar.main(cfg.replace(resume=True))  # from checkpoint 30: 40 is computed again
    assert metrics(run_dir, drop=("wall_s",)) == metrics(untracked, drop=("wall_s",))  # tracking changes no number
    runs = wandb_runs(run_dir)
    assert set(runs) == ids and all(len(sessions) == 2 for sessions in runs.values())  # the same runs, continued
    assert {s["group"] for sessions in runs.values() for s in sessions} == {"run"}
    # W&B keeps its first values of iteration 40 (equal but for the wall clock), TensorBoard
    # dropped them for the new ones.
    check_tracked(run_dir, wandb_drop=("wall_s",))
    assert [len(s["history"]) for s in next(iter(runs.values()))] == [2, 1]


def test_tracker_added_at_a_resume_gets_the_earlier_rows(untracked, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(untracked, run_dir)
    for step in Checkpoints(run_dir).steps():
        if step > 40:
            shutil.rmtree(run_dir / "checkpoints" / str(step))
    brc_minatar.main(TINY.replace(run_dir=str(run_dir), track=BOTH, resume=True))
    check_tracked(run_dir)
    assert metrics(run_dir, drop=("wall_s",)) == metrics(untracked, drop=("wall_s",))


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("name", BOTH)
def test_missing_extra_is_one_error_line_before_compiling(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, tracking.MODULES[name], None)  # `import` raises ImportError
    with pytest.raises(SystemExit) as e:
        brc_minatar.main(TINY.replace(run_dir=str(tmp_path / "r"), track=(name,)))
    lines = error_lines(capsys)
    assert e.value.code == 2 and len(lines) == 1, lines
    assert lines[0] == f'error: --track {name} needs the {name} package: pip install -e ".[{name}]"'
    assert not (tmp_path / "r").exists()


def test_wandb_online_without_a_key_is_one_error_line(tmp_path):
    """In a fresh process (W&B reads its settings once): no key, no offline mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    args = ["--tasks", "CartPole-v1", "--num-envs", "2", "--total-iterations", "20", "--warmup-iterations", "10",
            "--eval-every", "10", "--batch-size", "8", "--critic-width", "8", "--track", "wandb",
            "--run-dir", str(tmp_path / "r")]
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "brc_minatar.py"), "cpu", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: --track wandb: no W&B API key") and "WANDB_MODE=offline" in lines[0]
    assert not (tmp_path / "r").exists()


def test_only_process_0_logs(tmp_path):
    population = program.make_population(TINY.run, ({"lr": 3e-4}, {"lr": 1e-3}))
    trackers = tracking.open_trackers(BOTH, tmp_path / "run", rundir.config_dict(TINY), {}, population, primary=False)
    trackers.log_eval([dict(iteration=20, env_steps=80, seed=0, variant=0, hparams={"lr": 3e-4},
                            task="CartPole-v1", eval_return=1.0, wall_s=0.1)])
    trackers.close()
    assert not (tmp_path / "run").exists()
