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
from purejaxbrc import program as programs  # noqa: E402
from purejaxbrc import rundir  # noqa: E402
from purejaxbrc import train as train_module  # noqa: E402
from purejaxbrc.config import Experiment, RunConfig  # noqa: E402
from purejaxbrc.program import Program, make_population  # noqa: E402
from purejaxbrc.sac import SACConfig  # noqa: E402
from purejaxbrc.train import make_train  # noqa: E402

TINY = Experiment(
    RunConfig(tasks="PendulumSwingup,CartpoleBalance", total_iterations=40, warmup_iterations=20,
              eval_every=20, eval_episodes=2, episode_length=10, batch_size=16, utd=2,
              chunk_iterations=10, run_dir="unused"),
    SACConfig(critic_width=16, critic_depth=1, actor_width=16, num_atoms=11))


@pytest.fixture(scope="module")
def trainer():
    return programs.build(programs.plan("mjx", TINY.replace(run_dir="/nonexistent/unused"))).trainer


def program(trainer, num_seeds=1, seed=0):
    return Program(trainer, make_population(dataclasses.replace(TINY.run, num_seeds=num_seeds, seed=seed)))


def run_chunks(program, state=None, iterations=40):
    """Two warm-up chunks, two learning chunks (or the first `iterations`): `(state, metrics)`
    with a leading member axis."""
    state = program.fresh_state() if state is None else state
    chunk = program.compile_chunk(state)
    for it in range(0, iterations, 10):
        state, metrics, _ = chunk(state, jnp.int32(it), jnp.int32(20))
    return state, metrics


def test_same_seed_same_numbers(trainer):
    a, ma = run_chunks(program(trainer, seed=3))
    b, mb = run_chunks(program(trainer, seed=3))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert float(ma["critic_loss"][0]) > 0  # learning chunks ran


def adam_steps(opt_state) -> int:
    counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state) if "count" in jax.tree_util.keystr(path)]
    return int(counts[0][0])


def learning_inside_a_chunk(monkeypatch, may_skip: bool):
    monkeypatch.setattr(train_module, "update_loop_may_skip", lambda: may_skip)
    plan = programs.plan("mjx", TINY.replace(run_dir="/nonexistent/unused"))
    exp = plan.experiment
    env, eval_env, agent = plan.kind.build(exp, plan.names, None)
    update = agent.update

    def marked(*args):  # every gradient step reports q_mean 1
        state, metrics = update(*args)
        return state, dict(metrics, q_mean=jnp.float32(1.0))
    agent.update = marked
    one = program(make_train(exp.run, env, eval_env, agent), seed=1)
    state = one.fresh_state()
    chunk = one.compile_chunk(state)
    for it in (0, 10):
        state, metrics, _ = chunk(state, jnp.int32(it), jnp.int32(20))
        assert int(metrics["gradient_steps"][0]) == 0 and float(metrics["q_mean"][0]) == 0.0
    state, metrics, _ = chunk(state, jnp.int32(20), jnp.int32(25))  # learns in iterations 25..29
    assert int(metrics["gradient_steps"][0]) == 5 * TINY.run.utd
    assert adam_steps(state.agent.critic_opt) == 5 * TINY.run.utd
    assert float(metrics["q_mean"][0]) == 1.0 and float(metrics["critic_loss"][0]) > 0
    before = [np.asarray(x).copy() for x in jax.tree.leaves(state.agent)]
    state, metrics, _ = chunk(state, jnp.int32(30), jnp.int32(100))
    assert int(metrics["gradient_steps"][0]) == 0
    for x, y in zip(before, jax.tree.leaves(state.agent)):
        np.testing.assert_array_equal(x, y)
    return before


def test_learning_starts_inside_a_chunk(monkeypatch):
    """Gradient steps from iteration `learn_from` on, also inside a chunk (utd per iteration);
    the chunk's metrics are the mean over its gradient steps (not over its iterations), with
    their count. A chunk wholly before `learn_from` (a resume refilling its buffers) takes none
    and leaves the agent as it was. The CPU's update loop (0 or utd trips) and the
    accelerators' cond around utd trips agree."""
    loop = learning_inside_a_chunk(monkeypatch, True)
    cond = learning_inside_a_chunk(monkeypatch, False)
    for x, y in zip(loop, cond):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_population_equals_separate_runs(trainer):
    """Seeds 5 and 6 in one vmapped program agree with each run alone (a one-member program runs
    unvmapped). MJX's batched solvers round differently under a vmap: through the warm-up the
    states agree to 1e-5. Learning amplifies those differences (Adam divides by a gradient's
    running scale, and the physics is chaotic), so after it each network leaf of a member must
    lie within a tenth of the gap between the two members' own updates (what each moved from
    its initial value): a member that learnt from the other's data would be about that far."""
    pop = program(trainer, num_seeds=2, seed=5)
    both, _ = run_chunks(pop, iterations=20)
    for i in range(2):
        single, _ = run_chunks(program(trainer, seed=5 + i), iterations=20)
        for x, y in zip(jax.tree.leaves(both), jax.tree.leaves(single)):
            np.testing.assert_allclose(x[i], y[0], rtol=1e-5, atol=1e-5)
    first = jax.tree.map(np.asarray, pop.fresh_state().agent)  # run_chunks donates the state
    both, _ = run_chunks(pop)
    singles = [jax.tree.map(np.asarray, run_chunks(program(trainer, seed=5 + i))[0].agent) for i in range(2)]
    for x, y0, y1, x0 in zip(*(jax.tree.leaves(t) for t in (both.agent, *singles, first))):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            np.testing.assert_array_equal(x, np.concatenate([y0, y1]))
            continue
        gap = np.linalg.norm((y0[0] - x0[0]).astype(np.float64) - (y1[0] - x0[1]))
        for i, y in enumerate((y0, y1)):
            assert np.linalg.norm(np.asarray(x[i], np.float64) - y[0]) <= 0.1 * gap + 1e-5
    returns = program(trainer, num_seeds=2, seed=5).compile_evaluate(both)(both, jnp.int32(40))
    assert returns.shape == (2, 2) and np.isfinite(np.asarray(returns)).all()


def test_a_diverged_environment_ends_its_episode_and_the_run_goes_on(trainer):
    """A corrupted physics state terminates that episode; nothing non-finite reaches the replay
    buffer, the networks or the environment state that a checkpoint would save."""
    one = program(trainer, seed=3)
    state = one.fresh_state()
    # Start the environments (the first chunk's refill would), so that the corruption is stepped.
    env = programs.build(programs.plan("mjx", TINY.replace(run_dir="/nonexistent/unused"))).env
    env_state, obs = jax.vmap(env.refill)(state.env, state.obs, jax.random.split(jax.random.PRNGKey(0), 1))
    state = state._replace(env=env_state, obs=obs)
    group = state.env.groups[0]  # PendulumSwingup, member 0, environment 0
    bad = group.replace(data=group.data.replace(qvel=group.data.qvel.at[0, 0, 0].set(jnp.nan)))
    state, metrics = run_chunks(one, state._replace(env=state.env._replace(groups=(bad,) + state.env.groups[1:])))
    data = jax.tree.map(lambda x: x[0], state.buffer.data)
    assert bool(data.terminated[0, 0]) and not bool(data.terminated[1, 0])  # the first step of task 0
    assert not bool(data.terminated[:, 1:].any())
    for leaf in jax.tree.leaves((data, state.agent, state.norm)) + [g.data.qpos for g in state.env.groups] + [
            g.data.qvel for g in state.env.groups]:
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert np.isfinite(np.asarray(leaf)).all()
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values()) and float(metrics["critic_loss"][0]) > 0


def test_script_smoke_run_writes_metrics_and_summary(tmp_path):
    summary, _ = brc_mjx.main(TINY.replace(num_seeds=2, run_dir=str(tmp_path / "run")))
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2  # evaluations x seeds x tasks
    assert {"iteration", "env_steps", "seed", "task", "eval_return", "wall_s"} <= set(rows[0])
    assert {r["seed"] for r in rows} == {0, 1} and rows[-1]["iteration"] == 40
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(stored["final_eval_return"]) == {"PendulumSwingup", "CartpoleBalance"}
    assert stored["mean_eval_return"] == pytest.approx(np.mean(list(stored["final_eval_return"].values())))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["num_seeds"] == 2


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
    assert config == brc_mjx.PRESETS["paper"][1].replace(tasks="CheetahRun", critic_width=128)
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "brc_mjx.py"), "--tasks", "CartpoleBalanse"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("error: unknown task 'CartpoleBalanse'"), out.stderr


def test_batch_size_follows_the_references_rule_unless_given():
    paper = brc_mjx.PRESETS["paper"][1].replace(run_dir="/nonexistent/unused")
    assert paper.run.batch_size is None

    def batch(**changes):
        return programs.plan("mjx", paper.replace(**changes)).experiment.run.batch_size
    assert batch(tasks="CartpoleSwingup") == 256
    assert batch(tasks="humanoids") == 1024
    assert batch(tasks="humanoids", batch_size=512) == 512


def test_run_dir_holding_a_different_run_is_refused(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    stored = rundir.config_dict(brc_mjx.PRESETS["demo"][1].replace(run_dir=str(run_dir), seed=7))
    (run_dir / "config.json").write_text(json.dumps(stored))
    out = cli("--run-dir", str(run_dir))
    assert out.returncode == 2 and "already holds a different run (differs in: seed)" in out.stderr
    assert json.loads((run_dir / "config.json").read_text())["run"]["seed"] == 7  # untouched
