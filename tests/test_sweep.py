"""Hyperparameter sweeps: the variants a sweep names, a swept run against separate runs, bad
sweeps refused before compiling, and the host-free `train` over a sharded population."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_minatar  # noqa: E402
import brc_mjx  # noqa: E402
from purejaxbrc import program as programs  # noqa: E402
from purejaxbrc import sweep  # noqa: E402
from purejaxbrc.config import ConfigError, RunConfig  # noqa: E402
from purejaxbrc.dqn import DQNConfig  # noqa: E402
from purejaxbrc.sac import SACConfig  # noqa: E402

TINY = brc_minatar.MinAtarExperiment(
    RunConfig(tasks="CartPole-v1", num_envs=4, total_iterations=40, warmup_iterations=20,
              eval_every=20, eval_episodes=2, batch_size=16, utd=2, chunk_iterations=10, run_dir="unused"),
    DQNConfig(critic_width=16, critic_depth=1, num_atoms=11, embed_dim=4, eps_decay=30))


def test_grid_is_every_combination_in_order():
    variants = sweep.resolve(RunConfig(sweep=("lr=1e-4,3e-4", "tau=0.005,0.01")), SACConfig(), SACConfig)
    assert variants == ({"lr": 1e-4, "tau": 0.005}, {"lr": 1e-4, "tau": 0.01},
                        {"lr": 3e-4, "tau": 0.005}, {"lr": 3e-4, "tau": 0.01})
    run = RunConfig(num_seeds=2, seed=7)
    assert sweep.member_seeds(run, variants) == [7, 8] * 4
    assert sweep.member_variants(run, variants) == [0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_array_equal(sweep.member_hparams(run, variants)["tau"],
                                  np.float32([0.005, 0.005, 0.01, 0.01] * 2))
    assert sweep.resolve(RunConfig(), SACConfig(), SACConfig) == ({},)


@pytest.mark.parametrize("suffix, text", [
    (".json", '[{"lr": 1e-4}, {"lr": 3e-4, "tau": 0.01}]'),
    (".yaml", "- lr: 1.0e-4\n- {lr: 3.0e-4, tau: 0.01}\n"),
])
def test_sweep_file_fills_names_a_variant_leaves_out(tmp_path, suffix, text):
    path = tmp_path / f"sweep{suffix}"
    path.write_text(text)
    variants = sweep.resolve(RunConfig(sweep_file=str(path)), SACConfig(tau=0.02), SACConfig)
    assert variants == ({"lr": 1e-4, "tau": 0.02}, {"lr": 3e-4, "tau": 0.01})


@pytest.mark.parametrize("run, message", [
    (RunConfig(sweep=("lr=1e-4", "width=3")), "unknown hyperparameter 'width' in the sweep; sweepable: lr,"),
    (RunConfig(sweep=("critic_width=256,512",)), "critic_width cannot be swept: it changes the compiled program"),
    (RunConfig(sweep=("batch_size=128,256",)), "batch_size cannot be swept"),
    (RunConfig(sweep=("tau=0.005,1.5",)), "sweep variant tau=1.5: --tau must be in (0, 1], got 1.5"),
    (RunConfig(sweep=("gamma=abc",)), "sweep value gamma='abc' is not a number"),
    (RunConfig(sweep=("lr",)), "expected name=value[,value...]"),
    (RunConfig(sweep=("lr=1e-4,1e-4",)), "sweep variant lr=0.0001 is listed twice"),
    (RunConfig(sweep_file="/nonexistent.json"), "--sweep-file /nonexistent.json does not exist"),
])
def test_bad_sweeps_are_one_line(run, message):
    with pytest.raises(ConfigError) as e:
        sweep.resolve(run, SACConfig(), SACConfig)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_sweep_exits_2_before_compiling(tmp_path, capsys):
    exp = brc_mjx.PRESETS["demo"][1].replace(sweep=("init_alpha=0.1,-1",), run_dir=str(tmp_path / "r"))
    with pytest.raises(SystemExit) as e:
        brc_mjx.main(exp)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(err) == 1
    assert err[0] == "error: sweep variant init_alpha=-1: --init-alpha must be > 0, got -1.0"
    assert not (tmp_path / "r").exists()


def test_whole_numbers_only_for_integer_hyperparameters():
    with pytest.raises(ConfigError, match="--eps-decay takes whole numbers"):
        sweep.resolve(RunConfig(sweep=("eps_decay=100,2.5",)), DQNConfig(), DQNConfig)


def rows_by_member(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {(r["variant"], r["iteration"]): r for r in rows}


def test_swept_run_equals_separate_runs_member_by_member(tmp_path):
    """Variants (lr, gamma) x 1 seed in one program against one run per variant with those values
    as flags: bit for bit with --no-vmap-members, to float rounding when vmapped."""
    variants = [{"lr": 1e-3, "gamma": 0.9}, {"lr": 3e-4, "gamma": 0.99}]
    grid = ("lr=1e-3,3e-4", "gamma=0.9,0.99")
    swept_dir = tmp_path / "swept"
    summary, _ = brc_minatar.main(TINY.replace(sweep=grid, run_dir=str(swept_dir), vmap_members=False))
    swept = rows_by_member(swept_dir)
    assert [v["hparams"] for v in summary["variants"]] == [
        {"lr": 1e-3, "gamma": 0.9}, {"lr": 1e-3, "gamma": 0.99}, {"lr": 3e-4, "gamma": 0.9},
        {"lr": 3e-4, "gamma": 0.99}]
    for v, values in zip((0, 3), variants):
        single_dir = tmp_path / f"single{v}"
        brc_minatar.main(TINY.replace(run_dir=str(single_dir), vmap_members=False, **values))
        for (_, it), row in rows_by_member(single_dir).items():
            mine = swept[v, it]
            assert mine["hparams"] == values and row["hparams"] == {}
            for key in ("eval_return", "critic_loss", "q_mean"):
                assert mine[key] == row[key], (v, it, key)

    vmapped_dir = tmp_path / "vmapped"
    brc_minatar.main(TINY.replace(sweep=grid, run_dir=str(vmapped_dir)))
    for key, row in rows_by_member(vmapped_dir).items():
        for name in ("critic_loss", "q_mean"):
            assert row[name] == pytest.approx(swept[key][name], rel=1e-4, abs=1e-5)


def test_host_free_train_over_a_sharded_population():
    """`Program.compile_train`: the whole run per member with no host in the loop, over the
    population's mesh; its evaluations equal the host loop's chunks + evaluations."""
    built = programs.build(programs.plan("minatar", TINY.replace(num_seeds=2, sweep=("lr=1e-3,3e-4",))))
    exp, program = built.plan.experiment, built.program
    state, returns = program.compile_train()(*program.inputs())
    assert returns.shape == (4, 2, 1)  # members x evaluations x tasks

    host = program.fresh_state()
    chunk = program.compile_chunk(host)
    evaluate = program.compile_evaluate(host)
    for it in range(0, 40, 10):
        host, _, _ = chunk(host, jax.numpy.int32(it), jax.numpy.int32(exp.run.warmup_iterations))
        if (it + 10) % 20 == 0:
            np.testing.assert_allclose(evaluate(host, jax.numpy.int32(it + 10)), returns[:, (it + 10) // 20 - 1])
    for x, y in zip(jax.tree.leaves(state.agent), jax.tree.leaves(host.agent)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
