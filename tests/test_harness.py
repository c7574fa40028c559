"""The run harness: checkpoints and resume, evaluation from a checkpoint, the non-finite guard,
the memory estimate and bad input around --resume. Tiny DQN runs on gymnax CartPole-v1."""

import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_minatar  # noqa: E402
from purejaxbrc import evaluate, program, rundir  # noqa: E402
from purejaxbrc.checkpoint import Checkpoints  # noqa: E402
from purejaxbrc.cli import RunStopped  # noqa: E402
from purejaxbrc.config import ConfigError, Experiment, RunConfig  # noqa: E402
from purejaxbrc.dqn import DQNConfig  # noqa: E402
from purejaxbrc.program import check_memory  # noqa: E402
from purejaxbrc.run import non_finite, run  # noqa: E402

TINY = Experiment(
    RunConfig(tasks="CartPole-v1", num_seeds=2, num_envs=4, total_iterations=60, warmup_iterations=20,
              eval_every=20, eval_episodes=2, batch_size=16, utd=2, chunk_iterations=10,
              checkpoint_every=10, keep_checkpoints=10, run_dir="unused"),
    DQNConfig(critic_width=16, critic_depth=1, num_atoms=11, embed_dim=4, eps_decay=30))
WALL_CLOCK = ("wall_s", "compile_s")  # the only fields a resumed run may change


def build(cfg):
    """The built run of a checked experiment."""
    return program.build(program.plan("minatar", cfg))


def rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def summary(run_dir):
    d = json.loads((Path(run_dir) / "summary.json").read_text())
    return {k: v for k, v in d.items() if k not in WALL_CLOCK}


def assert_same_state(a, b):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def tree_digest(path: Path) -> str:
    """A hash of every file under `path`: "no stored data changed"."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with a checkpoint every chunk: `(run_dir, final state)`."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    _, state = brc_minatar.main(TINY.replace(run_dir=str(run_dir)))
    return run_dir, state


def copy_run(reference, tmp_path, keep_until: int) -> Path:
    """The reference run dir as a run killed after checkpoint `keep_until` (later rows stay)."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    for step in Checkpoints(run_dir).steps():
        if step > keep_until:
            shutil.rmtree(run_dir / "checkpoints" / str(step))
    (run_dir / "summary.json").unlink()
    return run_dir


# -- resume ---------------------------------------------------------------------------------------
def test_corrupt_latest_checkpoint_falls_back(reference, tmp_path, capsys):
    run_dir = copy_run(reference, tmp_path, keep_until=60)
    data = run_dir / "checkpoints" / "60" / "state" / "d"
    for f in data.iterdir():
        f.write_bytes(f.read_bytes()[:20])  # half-written files
    (run_dir / "checkpoints" / "70.orbax-checkpoint-tmp-1").mkdir()  # a save killed midway

    _, state = brc_minatar.main(TINY.replace(run_dir=str(run_dir), resume=True))
    err = capsys.readouterr().err
    assert "warning: checkpoint 60 is corrupt or incomplete" in err
    assert "warning: fell back to checkpoint 50" in err
    assert (run_dir / "checkpoints.corrupt" / "60").is_dir()
    assert_same_state(state, reference[1])
    assert rows(run_dir) == rows(reference[0]) and summary(run_dir) == summary(reference[0])


def stop_at(iteration: int, signum):
    """A `log` that sends `signum` to this process at the evaluation of `iteration`."""
    def log(msg):
        if msg.startswith(f"iter {iteration:>8d}"):
            os.kill(os.getpid(), signum)
    return log


def test_sigterm_checkpoints_and_resume_is_bit_exact(reference, tmp_path, capsys):
    cfg = TINY.replace(run_dir=str(tmp_path / "run"))
    with pytest.raises(RunStopped) as stopped:  # SIGTERM during the chunk ending at 40
        run(build(cfg), log=stop_at(40, signal.SIGTERM))
    assert stopped.value.code == 143 and "stopped at iteration 40" in str(stopped.value)
    assert Checkpoints(cfg.run.run_dir).steps()[-1] == 40 and not (tmp_path / "run" / "summary.json").exists()
    # As if killed: the checkpoint of iteration 40 never got written, its rows did.
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "40")

    _, state = brc_minatar.main(cfg.replace(resume=True))
    assert_same_state(state, reference[1])
    assert rows(cfg.run.run_dir) == rows(reference[0])  # rows of iteration 40 were dropped, then redone
    assert summary(cfg.run.run_dir) == summary(reference[0])
    assert "resuming from checkpoint 30" in capsys.readouterr().out


def test_resume_without_buffers_refills_them_first(tmp_path, capsys):
    cfg = TINY.replace(buffer_checkpoint=False, run_dir=str(tmp_path / "run"))
    with pytest.raises(RunStopped) as stopped:
        run(build(cfg), log=stop_at(20, signal.SIGINT))
    assert stopped.value.code == 130
    assert not (Path(cfg.run.run_dir) / "checkpoints" / "20" / "buffer").exists()
    capsys.readouterr()
    _, state = brc_minatar.main(cfg.replace(resume=True))
    err = capsys.readouterr().err
    assert "learning pauses until iteration 40" in err and "this resume is not bit-exact" in err
    assert np.all(np.asarray(state.buffer.size) == 40 * TINY.run.num_envs)  # filled since 20
    assert [r["iteration"] for r in rows(cfg.run.run_dir)] == [20, 20, 40, 40, 60, 60]


# -- evaluation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [None, 40])
def test_evaluate_equals_the_in_training_evaluation(reference, step, capsys):
    args = [str(reference[0])] + ([] if step is None else ["--checkpoint", str(step)])
    returns = evaluate.main(args)
    logged = [r for r in rows(reference[0]) if r["iteration"] == (step or 60)]
    np.testing.assert_array_equal(returns[:, 0], [r["eval_return"] for r in logged])
    out = capsys.readouterr().out
    assert "identical" in out and "seed 1" in out and "CartPole-v1" in out


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "45"], "--checkpoint 45: no such checkpoint"),
    (["--episodes", "0"], "--episodes must be > 0"),
])
def test_evaluate_bad_input(reference, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(reference[0]), *args])
    lines = error_lines(capsys)
    assert e.value.code == 2 and len(lines) == 1 and message in lines[0]


# -- guards ---------------------------------------------------------------------------------------
def test_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoint(tmp_path, capsys):
    cfg = TINY.replace(run_dir=str(tmp_path / "run"))
    built = build(cfg)
    agent = built.agent
    update = agent.update

    def poisoned(*args):  # NaN losses from the first gradient step on (iteration 20)
        state, metrics = update(*args)
        return state, dict(metrics, critic_loss=metrics["critic_loss"] * jnp.nan)
    agent.update = poisoned
    with pytest.raises(RunStopped) as stopped:
        run(built)
    assert stopped.value.code == 3
    assert "non-finite critic_loss (seed 0, seed 1) at iteration 30" in str(stopped.value)
    assert "last good checkpoint (iteration 20)" in str(stopped.value)
    assert Checkpoints(cfg.run.run_dir).steps() == [10, 20]


def test_non_finite_parameters_are_named():
    metrics = {"critic_loss": np.array([1.0, 2.0])}
    flags = {"net": np.array([True, True]), "target_net": np.array([True, False])}
    labels = ["seed 0", "seed 1, lr=0.001"]
    assert non_finite(metrics, flags, labels) == "parameters in target_net (seed 1, lr=0.001)"
    assert non_finite(metrics, {"net": np.array([True, True])}, labels) is None


def test_oversized_run_is_refused_before_allocating(tmp_path, capsys):
    cfg = TINY.replace(total_iterations=10**9, buffer_capacity=10**9, run_dir=str(tmp_path / "run"))
    with pytest.raises(SystemExit) as e:
        brc_minatar.main(cfg)
    lines = error_lines(capsys)
    assert e.value.code == 2 and len(lines) == 1, lines
    assert "the run needs at least" in lines[0] and "replay buffers" in lines[0] and "more than the" in lines[0]
    assert not (tmp_path / "run").exists()


def test_memory_estimate_counts_buffers():
    abstract = build(TINY.replace(run_dir="/nonexistent")).program.abstract_state()
    check_memory(abstract, limit=(10**9, "test"))
    with pytest.raises(ConfigError, match=r"more than the 0.00 GiB of test"):
        check_memory(abstract, limit=(1000, "test"))


# -- bad input around --resume --------------------------------------------------------------------
def resume_error(cfg, capsys):
    with pytest.raises(SystemExit) as e:
        brc_minatar.main(cfg.replace(resume=True))
    lines = error_lines(capsys)
    assert e.value.code == 2 and len(lines) == 1, lines
    return lines[0]


def test_resume_with_contradicting_flags_names_them(reference, capsys):
    before = tree_digest(reference[0])
    line = resume_error(TINY.replace(run_dir=str(reference[0]), seed=1, lr=1e-3), capsys)
    assert "flags contradict the run stored in" in line
    assert "lr (stored 0.0003, given 0.001)" in line and "seed (stored 0, given 1)" in line
    assert tree_digest(reference[0]) == before


def test_resume_from_a_checkpoint_of_another_config(reference, tmp_path, capsys):
    run_dir = copy_run(reference, tmp_path, keep_until=60)
    stored = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(dict(stored, agent=dict(stored["agent"], gamma=0.9))))
    before = tree_digest(run_dir)
    line = resume_error(TINY.replace(run_dir=str(run_dir), gamma=0.9), capsys)
    assert "checkpoint 60" in line and "different config (differs in: gamma (stored 0.99, given 0.9))" in line
    assert tree_digest(run_dir) == before


def test_resume_without_a_checkpoint(tmp_path, capsys):
    assert "holds no run to resume" in resume_error(TINY.replace(run_dir=str(tmp_path / "none")), capsys)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(rundir.config_dict(TINY.replace(run_dir=str(run_dir)))))
    assert "has no checkpoint to resume from" in resume_error(TINY.replace(run_dir=str(run_dir)), capsys)


def test_checkpoint_every_must_be_a_multiple_of_the_chunk(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        brc_minatar.main(TINY.replace(checkpoint_every=15, run_dir=str(tmp_path / "r")))
    lines = error_lines(capsys)
    assert e.value.code == 2 and "--checkpoint-every (15) must be a multiple of the chunk (10" in lines[0]
