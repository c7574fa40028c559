"""Transfer from a pretrained multi-task model: the loaded arrays, the new embedding rows, the
frozen parameters of the embedding mode, the evaluation of pretraining tasks, and bad input.
A tiny categorical DQN pretrained on gymnax CartPole-v1 and Acrobot-v1 (vector observations
padded to 6, 3 actions) is transferred to MountainCar-v0 (2 observations, 3 actions)."""

import json
import os
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_minatar  # noqa: E402
import brc_transfer  # noqa: E402
from purejaxbrc import cli, evaluate, program, run, transfer  # noqa: E402
from purejaxbrc.config import ConfigError, RunConfig  # noqa: E402
from purejaxbrc.dqn import DQNConfig  # noqa: E402
from purejaxbrc.program import load  # noqa: E402

PRETRAIN = brc_minatar.MinAtarExperiment(
    RunConfig(tasks="CartPole-v1,Acrobot-v1", num_seeds=2, num_envs=4, total_iterations=40,
              warmup_iterations=20, eval_every=20, eval_episodes=2, batch_size=16, utd=2,
              chunk_iterations=10, run_dir="unused"),
    DQNConfig(critic_width=16, critic_depth=1, num_atoms=11, embed_dim=4, eps_decay=30))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    brc_minatar.main(PRETRAIN.replace(run_dir=str(run_dir)))
    return run_dir


def parse(pretrained, *args):
    return brc_transfer.parse(["--from", str(pretrained), *args])


def start(pretrained, *args):
    """`(plan, program, transfer run's first state, pretrained agent state)`."""
    built = program.build(transfer.plan(*parse(pretrained, *args)))
    source = transfer.source_agent(built, built.program.abstract_state())
    state = transfer.initial_state(built, built.program.fresh_state(), source)
    return built.plan, built.program, state, load(pretrained).restored.rest.agent


def test_finetune_loads_every_pretrained_array_and_adds_mean_rows(pretrained):
    plan, _, state, source = start(pretrained, "--tasks", "Acrobot-v1,MountainCar-v0")
    assert plan.experiment.run.num_seeds == 2 and plan.experiment.agent == PRETRAIN.agent  # defaults: the pretrained run's
    assert plan.transfer.source_tasks == ("CartPole-v1", "Acrobot-v1") and plan.transfer.obs_shape == (6,)
    for name in ("net", "target_net"):
        mine, theirs = getattr(state.agent, name), getattr(source, name)
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(mine)[0], jax.tree.leaves(theirs)):
            if "table" not in jax.tree_util.keystr(path):
                np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
        table, pretrained_table = np.asarray(mine.embedding.table), np.asarray(theirs.embedding.table)
        np.testing.assert_array_equal(table[:, 0], pretrained_table[:, 1])  # Acrobot keeps its row
        np.testing.assert_allclose(table[:, 1], pretrained_table.mean(axis=1), rtol=1e-6)  # the mean
    assert int(np.asarray(state.agent.opt[0].count).max()) == 0  # fresh optimiser states
    assert all(float(jnp.abs(m).max()) == 0 for m in jax.tree.leaves(state.agent.opt[0].mu))


def test_fresh_rows_and_scratch(pretrained):
    _, prog, state, source = start(pretrained, "--tasks", "MountainCar-v0", "--new-rows", "fresh")
    fresh = prog.fresh_state()
    np.testing.assert_array_equal(state.agent.net.embedding.table, fresh.agent.net.embedding.table)
    np.testing.assert_array_equal(state.agent.net.head.kernel, source.net.head.kernel)
    _, prog, state, _ = start(pretrained, "--tasks", "MountainCar-v0", "--mode", "scratch")
    for x, y in zip(jax.tree.leaves(state.agent), jax.tree.leaves(prog.fresh_state().agent)):
        np.testing.assert_array_equal(x, y)


def test_embedding_mode_trains_only_the_new_rows(pretrained):
    _, prog, state, source = start(
        pretrained, "--tasks", "Acrobot-v1,MountainCar-v0", "--mode", "embedding", "--warmup-iterations", "10")
    first = jax.device_get(state)  # the chunk donates (deletes) its input
    chunk = prog.compile_chunk(state)
    for it in range(0, 40, 10):  # one warm-up chunk, three learning chunks: 60 gradient steps
        state, metrics, _ = chunk(state, jnp.int32(it), jnp.int32(10))
    assert float(np.asarray(metrics["critic_loss"]).min()) > 0
    for name in ("net", "target_net"):
        before, after = getattr(first.agent, name), getattr(state.agent, name)
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(after)[0], jax.tree.leaves(before)):
            if "table" not in jax.tree_util.keystr(path):
                np.testing.assert_array_equal(x, y, err_msg=f"{name}{jax.tree_util.keystr(path)}")
        table, start_table = np.asarray(after.embedding.table), np.asarray(before.embedding.table)
        np.testing.assert_array_equal(table[:, 0], start_table[:, 0])  # a pretraining task's row
        assert np.abs(table[:, 1] - start_table[:, 1]).max() > 0  # the new task's row learnt


def test_zero_learning_steps_evaluate_pretraining_tasks_as_the_checkpoint(pretrained):
    _, prog, state, _ = start(pretrained, "--tasks", "MountainCar-v0,Acrobot-v1,CartPole-v1")
    got = load(pretrained)
    it = jnp.int32(got.restored.step)
    theirs = np.asarray(got.built.program.compile_evaluate(got.restored.rest)(got.restored.rest, it))
    mine = np.asarray(prog.compile_evaluate(state)(state, it))
    np.testing.assert_array_equal(mine[:, 1], theirs[:, 1])  # Acrobot
    np.testing.assert_array_equal(mine[:, 2], theirs[:, 0])  # CartPole
    logged = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    final = {(r["seed"], r["task"]): r["eval_return"] for r in logged if r["iteration"] == got.restored.step}
    assert [final[s, "CartPole-v1"] for s in (0, 1)] == list(mine[:, 2])


def test_transfer_run_records_its_source_resumes_and_evaluates(pretrained, tmp_path, capsys):
    run_dir = tmp_path / "t"
    args = parse(pretrained, "--tasks", "MountainCar-v0", "--mode", "embedding", "--run-dir", str(run_dir),
                 "--checkpoint-every", "10")

    def stop_at_20(msg):  # SIGTERM while the chunk ending at iteration 20 is evaluated
        if msg.startswith(f"iter {20:>8d}"):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        run.main(*args, log=stop_at_20)
    assert e.value.code == 143
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["transfer"]["source"] == str(pretrained) and stored["transfer"]["mode"] == "embedding"
    assert stored["transfer"]["source_step"] == 40 and stored["run"]["tasks"] == "MountainCar-v0"
    summary, _ = run.main(*parse(pretrained, "--tasks", "MountainCar-v0", "--mode", "embedding",
                                 "--run-dir", str(run_dir), "--checkpoint-every", "10", "--resume"))
    assert summary["iteration"] == 40
    capsys.readouterr()
    evaluate.main([str(run_dir)])
    assert "identical" in capsys.readouterr().out


@pytest.mark.parametrize("with_source, args, message", [
    (False, ["--from", "/nonexistent/run", "--tasks", "MountainCar-v0"], "run dir /nonexistent/run does not exist"),
    (False, ["--tasks", "MountainCar-v0"], "--from RUN_DIR is required"),
    (True, ["--tasks", "CartpoleSwingup"], "task 'CartpoleSwingup' is one of the MuJoCo Playground control tasks"),
    (True, ["--tasks", "MetaMaze-misc"], "task MetaMaze-misc has 15 observation entries, more than the pretrained model's 6"),
    (True, ["--tasks", "FourRooms-misc"], "task FourRooms-misc has 4 actions, more than the pretrained model's 3"),
    (True, ["--tasks", "MountainCar-v0", "--critic-width", "32"], "--critic-width 32 differs from the pretrained model's 16"),
    (True, ["--tasks", "MountainCar-v0", "--checkpoint", "15"], "--checkpoint 15: no such checkpoint"),
    (True, ["--tasks", "MountainCar-v0", "--v-max", "20"], "--v-max 20.0 differs from the pretrained model's 10.0"),
    (True, ["--tasks", "MountainCar-v0", "--sweep", "gamma=0.9,0.99"], "--sweep gamma: a finetune transfer starts"),
    (True, ["--tasks", "MountainCar-v0", "--temperature", "carry"], "--temperature carry: DQN has no temperature"),
    (True, ["--tasks", "MountainCar-v0", "--mode", "scratch", "--temperature", "carry"],
     "--temperature carry: a scratch run carries nothing over"),
])
def test_bad_input_is_one_line_and_exit_2(pretrained, tmp_path, capsys, with_source, args, message):
    args = (["--from", str(pretrained)] if with_source else []) + args + ["--run-dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as e:
        brc_transfer.main(*cli.exit_on_error(lambda: brc_transfer.parse(args)))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_scratch_may_change_the_support_and_a_transfer_run_is_no_source(pretrained, tmp_path):
    exp = transfer.plan(*parse(pretrained, "--tasks", "MountainCar-v0", "--mode", "scratch", "--v-max", "20")).experiment
    assert exp.agent.v_max == 20 and exp.run.batch_size == PRETRAIN.run.batch_size  # an explicit batch is kept
    (tmp_path / "t").mkdir()
    for name in ("config.json", "run_info.json"):
        stored = json.loads((pretrained / name).read_text())
        if name == "config.json":
            stored["transfer"] = {"source": str(pretrained)}
        (tmp_path / "t" / name).write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="is itself a transfer run"):
        transfer.plan(*parse(tmp_path / "t", "--tasks", "MountainCar-v0"))


def test_a_single_task_source_is_refused(tmp_path, capsys):
    single = tmp_path / "single"
    brc_minatar.main(PRETRAIN.replace(tasks="CartPole-v1", num_seeds=1, run_dir=str(single)))
    with pytest.raises(ConfigError, match="trained one task, without a task embedding"):
        transfer.plan(*parse(single, "--tasks", "MountainCar-v0"))


# -- SAC: the temperature on transfer (--temperature reset | carry) ------------------------------
from purejaxbrc.config import TransferConfig  # noqa: E402
from purejaxbrc.kinds import MJX  # noqa: E402
from purejaxbrc.sac import SACAgent, SACConfig  # noqa: E402


def test_sac_temperature_restarts_at_init_alpha_and_carry_keeps_the_pretrained_one():
    config = SACConfig(critic_width=16, critic_depth=1, actor_width=16, num_atoms=11)
    agent = SACAgent(config, obs_size=5, action_size=2, num_tasks=2)
    hp = config.hyperparameters({})
    fresh = agent.init(jax.random.key(0), hp)
    source = agent.init(jax.random.key(1), hp)  # "pretrained": other networks, a trained alpha
    # Trained optimiser states too (a step count and moments that are not zero).
    source = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.integer) else x, source)
    source = source._replace(log_alpha=jnp.log(jnp.float32(0.002)), **{
        name: jax.tree.map(lambda x: x + 1, getattr(source, name)) for name in ("actor_opt", "critic_opt", "alpha_opt")})
    rows = np.array([1, -1])  # task 0 is pretraining task 1; task 1 is new
    reset = MJX.transferred(fresh, source, rows, TransferConfig(temperature="reset"))  # the default
    carry = MJX.transferred(fresh, source, rows, TransferConfig(temperature="carry"))
    assert TransferConfig().temperature == "reset"
    np.testing.assert_array_equal(reset.log_alpha, fresh.log_alpha)  # log(init_alpha), as a fresh run
    np.testing.assert_array_equal(carry.log_alpha, source.log_alpha)
    for name in ("actor", "critic", "target_critic", "actor_opt", "critic_opt", "alpha_opt"):
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(getattr(carry, name))[0],
                                jax.tree.leaves(getattr(reset, name))):  # the two differ in log_alpha only
            np.testing.assert_array_equal(x, y, err_msg=f"{name}{jax.tree_util.keystr(path)}")
    for x, y in zip(jax.tree.leaves(reset.actor), jax.tree.leaves(source.actor)):
        np.testing.assert_array_equal(x, y)
    for name in ("critic", "target_critic"):  # the source's, but for the new task's embedding row
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(getattr(reset, name))[0],
                                jax.tree.leaves(getattr(source, name))):
            if "table" not in jax.tree_util.keystr(path):
                np.testing.assert_array_equal(x, y, err_msg=f"{name}{jax.tree_util.keystr(path)}")
        table, pretrained = np.asarray(getattr(reset, name).embedding.table), np.asarray(getattr(source, name).embedding.table)
        np.testing.assert_array_equal(table[..., 0, :], pretrained[..., 1, :])
        np.testing.assert_allclose(table[..., 1, :], pretrained.mean(axis=-2), rtol=1e-6)
    for name in ("actor_opt", "critic_opt", "alpha_opt"):  # fresh: no step taken, zero moments
        adam = getattr(reset, name)[0]
        assert int(adam.count) == 0, name
        assert all(float(jnp.abs(m).max()) == 0 for m in jax.tree.leaves((adam.mu, adam.nu))), name


def test_the_carried_values_follow_the_temperature():
    assert set(MJX.carried_values(TransferConfig(temperature="reset"))) == {"v_max", "gamma"}
    assert set(MJX.carried_values(TransferConfig(temperature="carry"))) == {"v_max", "gamma", "init_alpha"}
