"""Videos of the deterministic policy (purejaxbrc.render): a GIF per task whose episode return
equals purejaxbrc.evaluate's with one episode, for an MJX run (MuJoCo's renderer through EGL,
in a fresh process as users run it) and a MinAtar run (coloured channels); no GL context or bad
input is one error line. The runs evaluate one episode, so their metrics.jsonl rows are what
`purejaxbrc.evaluate --episodes 1` gives (tests/test_harness.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import numpy as np
import pytest
from PIL import Image, ImageSequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import brc_minatar  # noqa: E402
import brc_mjx  # noqa: E402
from purejaxbrc import render, video  # noqa: E402
from purejaxbrc.config import Experiment, RunConfig  # noqa: E402
from purejaxbrc.dqn import DQNConfig  # noqa: E402
from purejaxbrc.sac import SACConfig  # noqa: E402

MJX = Experiment(
    RunConfig(tasks="CartpoleSwingup", total_iterations=20, warmup_iterations=10, eval_every=20,
              eval_episodes=1, episode_length=50, batch_size=8, utd=1, run_dir="unused"),
    SACConfig(critic_width=16, critic_depth=1, actor_width=16, num_atoms=11))
GAME = Experiment(
    RunConfig(tasks="Breakout-MinAtar", num_seeds=2, num_envs=4, total_iterations=20, warmup_iterations=10,
              eval_every=20, eval_episodes=1, batch_size=16, utd=1, run_dir="unused"),
    DQNConfig(critic_width=16, critic_depth=1, conv_channels=(4,), num_atoms=11, embed_dim=4, eps_decay=30))


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def logged_returns(run_dir) -> dict:
    """`{(seed, task): eval_return}` of the last evaluation in metrics.jsonl (one episode each)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {(r["seed"], r["task"]): r["eval_return"] for r in rows if r["iteration"] == rows[-1]["iteration"]}


@pytest.fixture(scope="module")
def mjx_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mjx") / "run"
    brc_mjx.main(MJX.replace(run_dir=str(run_dir)))
    return run_dir


def test_mjx_video_in_a_headless_process(mjx_run, tmp_path):
    # As a user runs it: a fresh process without a display, MuJoCo's GL backend left to render.py.
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(PYTHONPATH=str(ROOT), PUREJAXBRC_CACHE=os.environ.get("PUREJAXBRC_CACHE", str(ROOT / ".jax_cache")))
    out = subprocess.run([sys.executable, "-m", "purejaxbrc.render", str(mjx_run), "--fps", "25",
                          "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    printed = re.findall(r"^CartpoleSwingup: return (-?[\d.]+) in 50 steps", out.stdout, re.M)
    assert printed == [f"{logged_returns(mjx_run)[0, 'CartpoleSwingup']:.2f}"], out.stdout
    frames = gif_frames(tmp_path / "CartpoleSwingup-seed0-20.gif")
    assert len(frames) == 13 and frames[0].shape == (240, 320, 3)  # 51 states, one per 4 steps (0.04 s)
    assert frames[0].std() > 10  # a scene, not a blank image
    assert any(np.abs(f.astype(int) - frames[0]).sum() > 0 for f in frames[1:])  # the cart and pole move


def test_no_gl_context_is_one_error_line(mjx_run, tmp_path, capsys, monkeypatch):
    import mujoco

    def no_context(*args, **kwargs):
        raise mujoco.FatalError("an OpenGL platform library has not been loaded into this process")
    monkeypatch.setattr(mujoco, "Renderer", no_context)
    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(SystemExit) as e:
        render.main([str(mjx_run), "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: no OpenGL context for MuJoCo's renderer")
    assert "MUJOCO_GL=egl" in lines[0] and "libegl1" in lines[0] and "MUJOCO_GL=osmesa" in lines[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--member", "1"], "--member 1: the run has members 0 to 0"),
    (["--tasks", "CheetahRun"], "--tasks CheetahRun: the run's tasks are CartpoleSwingup"),
    (["--checkpoint", "30"], "--checkpoint 30: no such checkpoint"),
    (["--fps", "0"], "--fps must be > 0"),
    (["--camera", "top"], "--camera top: the model's cameras are fixed, lookatcart"),
    (["--width", "2000"], "larger than the model's offscreen buffer"),
])
def test_bad_input_is_one_error_line(mjx_run, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("MUJOCO_GL", "egl")  # render.py would set it for good in this process
    with pytest.raises(SystemExit) as e:
        render.main([str(mjx_run), "--out", str(tmp_path), *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(lines) == 1 and message in lines[0], lines


def test_minatar_video_draws_the_observation_channels(tmp_path):
    run_dir = tmp_path / "run"
    brc_minatar.main(GAME.replace(run_dir=str(run_dir)))
    (gif,) = render.render(run_dir, member=1, out=tmp_path / "videos")
    assert gif.episode_return == logged_returns(run_dir)[1, "Breakout-MinAtar"]  # the same episode, bit for bit
    frames = gif_frames(gif.path)
    assert len(frames) == gif.steps + 1 and frames[0].shape == (10 * video.CELL, 10 * video.CELL, 3)
    colours = {tuple(c) for f in frames for c in f.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in video.palette(4)} | {(0, 0, 0)}  # Breakout's 4 channels, grid lines
    assert len(colours) >= 4  # background, grid, bricks, paddle at least
