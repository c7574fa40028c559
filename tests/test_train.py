import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_mjx  # noqa: E402
from purejaxbrc.config import BRCConfig  # noqa: E402
from purejaxbrc.run import compile_chunk, seed_keys, vmapped_init  # noqa: E402
from purejaxbrc.train import make_train  # noqa: E402

TINY = BRCConfig(tasks="PendulumSwingup,CartpoleBalance", total_iterations=40, warmup_iterations=20,
                 eval_every=20, eval_episodes=2, episode_length=10, critic_width=16, critic_depth=1,
                 actor_width=16, num_atoms=11, batch_size=16, utd=2, chunk_iterations=10,
                 run_dir="unused")


@pytest.fixture(scope="module")
def trainer():
    _, names = brc_mjx.prepare(dataclasses.replace(TINY, run_dir="/nonexistent/unused"))
    env, eval_env, agent = brc_mjx.build(TINY, names)
    return make_train(TINY, env, eval_env, agent)


def run_chunks(trainer, keys, vmapped):
    init = jax.vmap(trainer.init) if vmapped else trainer.init
    chunk = jax.vmap(trainer.chunk, in_axes=(0, None)) if vmapped else trainer.chunk
    state = jax.jit(init)(keys)
    chunk = jax.jit(chunk)
    for it in range(0, 40, 10):  # two warm-up chunks, two learning chunks
        state, metrics = chunk(state, jnp.int32(it))
    return state, metrics


def test_same_seed_same_numbers(trainer):
    a, ma = run_chunks(trainer, jax.random.PRNGKey(3), False)
    b, mb = run_chunks(trainer, jax.random.PRNGKey(3), False)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert float(ma["critic_loss"]) > 0  # learning chunks ran


def test_vmap_over_seeds_equals_separate_runs(trainer):
    keys = seed_keys(5, 2)
    both, _ = run_chunks(trainer, keys, True)
    for i in range(2):
        single, _ = run_chunks(trainer, keys[i], False)
        for x, y in zip(jax.tree.leaves(jax.tree.map(lambda v: v[i], both)), jax.tree.leaves(single)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    returns = jax.jit(jax.vmap(trainer.evaluate))(both.agent, both.eval_key)
    assert returns.shape == (2, 2) and np.isfinite(np.asarray(returns)).all()


def test_one_seed_program_agrees_with_the_vmapped_one(trainer):
    """`compile_chunk` runs one seed without the seed vmap; seed 0 of a two-seed run agrees."""
    def run(keys):
        state = jax.jit(vmapped_init(trainer))(keys)
        chunk = compile_chunk(trainer, state, 0, 20)
        for it in range(0, 40, 10):
            state, _, flags = chunk(state, jnp.int32(it), jnp.int32(20))
        return state, flags
    one, flags = run(seed_keys(5, 1))
    two, _ = run(seed_keys(5, 2))
    assert all(np.asarray(v).shape == (1,) for v in flags.values())
    for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        assert x.shape[0] == 1
        np.testing.assert_allclose(x[0], y[0], rtol=1e-5, atol=1e-5)


def test_a_diverged_environment_ends_its_episode_and_the_run_goes_on(trainer):
    """A corrupted physics state terminates that episode; nothing non-finite reaches the replay
    buffer, the networks or the environment state that a checkpoint would save."""
    state = jax.jit(trainer.init)(jax.random.PRNGKey(3))
    group = state.env.groups[0]  # PendulumSwingup, environment 0
    state = state._replace(env=state.env._replace(groups=(
        group.replace(data=group.data.replace(qvel=group.data.qvel.at[0, 0].set(jnp.nan))),) + state.env.groups[1:]))
    chunk = jax.jit(trainer.chunk)
    for it in range(0, 40, 10):
        state, metrics = chunk(state, jnp.int32(it))
    data = state.buffer.data
    assert bool(data.terminated[0, 0]) and not bool(data.terminated[1, 0])  # the first step of task 0
    assert not bool(data.terminated[:, 1:].any())
    for leaf in jax.tree.leaves((data, state.agent, state.norm)) + [g.data.qpos for g in state.env.groups] + [
            g.data.qvel for g in state.env.groups]:
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert np.isfinite(np.asarray(leaf)).all()
    assert all(np.isfinite(float(v)) for v in metrics.values()) and float(metrics["critic_loss"]) > 0


def test_script_smoke_run_writes_metrics_and_summary(tmp_path):
    cfg = dataclasses.replace(TINY, num_seeds=2, run_dir=str(tmp_path / "run"))
    summary, _ = brc_mjx.main(cfg)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2  # evaluations x seeds x tasks
    assert {"iteration", "env_steps", "seed", "task", "eval_return", "wall_s"} <= set(rows[0])
    assert {r["seed"] for r in rows} == {0, 1} and rows[-1]["iteration"] == 40
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(stored["final_eval_return"]) == {"PendulumSwingup", "CartpoleBalance"}
    assert stored["mean_eval_return"] == pytest.approx(np.mean(list(stored["final_eval_return"].values())))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_seeds"] == 2


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "brc_mjx.py"), "demo", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--tasks", "CartpoleBalanse"], "unknown task 'CartpoleBalanse'; valid:"),
    (["--batch-size", "0"], "--batch-size must be > 0"),
    (["--critic-width", "-4"], "--critic-width must be > 0"),
    (["--batch-size", "100000"], "larger than the"),
    (["--num-envs", "4", "--buffer-capacity", "3"], "--buffer-capacity (3) must be at least --num-envs (4)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    out = cli(*args, "--run-dir", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "r").exists()  # nothing written


def test_flags_without_a_preset_apply_to_the_default_one():
    from purejaxbrc import cli as parser
    config = parser.parse(brc_mjx.PRESETS, "paper", ["--tasks", "CheetahRun", "--critic-width", "128"])
    assert config == dataclasses.replace(brc_mjx.PRESETS["paper"][1], tasks="CheetahRun", critic_width=128)
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "brc_mjx.py"), "--tasks", "CartpoleBalanse"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("error: unknown task 'CartpoleBalanse'"), out.stderr


def test_batch_size_follows_the_references_rule_unless_given():
    paper = dataclasses.replace(brc_mjx.PRESETS["paper"][1], run_dir="/nonexistent/unused")
    assert paper.batch_size is None
    assert brc_mjx.prepare(dataclasses.replace(paper, tasks="CartpoleSwingup"))[0].batch_size == 256
    assert brc_mjx.prepare(dataclasses.replace(paper, tasks="humanoids"))[0].batch_size == 1024
    assert brc_mjx.prepare(dataclasses.replace(paper, tasks="humanoids", batch_size=512))[0].batch_size == 512


def test_run_dir_holding_a_different_run_is_refused(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    stored = dataclasses.asdict(dataclasses.replace(brc_mjx.PRESETS["demo"][1], run_dir=str(run_dir), seed=7))
    (run_dir / "config.json").write_text(json.dumps(stored))
    out = cli("--run-dir", str(run_dir))
    assert out.returncode == 2 and "already holds a different run (differs in: seed)" in out.stderr
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 7  # untouched
