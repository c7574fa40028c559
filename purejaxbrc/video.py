"""Frames of a policy's episode and the GIF that shows them (purejaxbrc.render).

A `Frames` drawer says what the evaluation rollout must bring back of every step (`record`, a
jittable function of the environment state and observation) and turns one member's trace into
images (`frames`). Each kind of run hands out its own (`Kind.video`):

- `MuJoCoFrames`: MJX tasks, their positions drawn by MuJoCo's renderer on each task's MjModel,
  one frame per `1 / fps` seconds of simulated time (real time).
- `GridFrames`: games with image observations (MinAtar), one colour per channel, one frame per
  step.

MuJoCo needs an OpenGL context: without a display EGL is used unless MUJOCO_GL says otherwise
(MUJOCO_GL=osmesa renders in software); without a usable one, a ConfigError names the fix.
"""

import os
import warnings
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from purejaxbrc.config import ConfigError

GL_FIX = ("on a machine without a display render with MUJOCO_GL=egl (Debian: apt-get install libegl1 libopengl0 "
          "libgl1-mesa-dri) or MUJOCO_GL=osmesa (apt-get install libosmesa6)")
BACKGROUND = (16, 16, 16)
CELL = 24  # pixels per cell of a game's grid


# -- MuJoCo ---------------------------------------------------------------------------------------
def default_gl() -> None:
    """Without a display, MuJoCo renders through EGL unless MUJOCO_GL names another backend
    (read when mujoco is first imported)."""
    if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"


def _gl_error(e: Exception) -> ConfigError:
    what = f"{type(e).__name__}: {e}".replace("\n", " ")
    return ConfigError(f"no OpenGL context for MuJoCo's renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}; "
                       f"{what}); {GL_FIX}")


def import_mujoco():
    """mujoco, or ConfigError when its GL backend cannot load (an unknown MUJOCO_GL, say).
    MuJoCo is imported here, not with this module: it reads MUJOCO_GL when first imported
    (`default_gl` sets it), and a game's video never needs it."""
    try:
        import mujoco
    except Exception as e:  # mujoco raises RuntimeError or ImportError for its GL setting
        raise _gl_error(e)
    return mujoco


def open_renderer(model, width: int, height: int):
    """A mujoco.Renderer for `model`; ConfigError without a usable GL context or for a frame
    larger than the model's offscreen buffer."""
    mujoco = import_mujoco()
    limit = (model.vis.global_.offwidth, model.vis.global_.offheight)
    if width > limit[0] or height > limit[1]:
        raise ConfigError(f"--width {width} --height {height}: larger than the model's offscreen buffer "
                          f"{limit[0]}x{limit[1]}")
    try:
        with warnings.catch_warnings():  # GLFW warns before failing: the error line says it all
            warnings.simplefilter("ignore")
            return mujoco.Renderer(model, height=height, width=width)
    except Exception as e:
        raise _gl_error(e)


def camera_of(model, camera: str | None):
    """`--camera`: a name or index of the model's cameras; default its first camera (-1: MuJoCo's
    free camera when it has none)."""
    if camera is None:
        return 0 if model.ncam else -1
    names = [model.camera(i).name for i in range(model.ncam)]
    if camera.lstrip("-").isdigit() and -1 <= int(camera) < model.ncam:
        return int(camera)
    if camera in names:
        return camera
    raise ConfigError(f"--camera {camera}: the model's cameras are {', '.join(names) or 'none'} (or -1: free)")


class MuJoCoFrames:
    """Draws an MJX task set's states (purejaxbrc.envs.mjx: per physics group, States [G, E, ...])
    with one renderer per task drawn; ConfigError without a usable GL context, for an unknown
    camera, or a frame larger than a model's offscreen buffer."""

    def __init__(self, models: dict, width: int, height: int, camera: str | None, fps: float | None):
        """`models`: {task index: MjModel} of the tasks to draw."""
        self.models, self.fps = models, fps or 50.0
        self.cameras = {t: camera_of(m, camera) for t, m in models.items()}
        self.renderers = {t: open_renderer(m, width, height) for t, m in models.items()}

    @staticmethod
    def record(env_state, obs):
        """Positions per physics group [G, E, ...]: all MuJoCo needs to draw a state."""
        del obs
        return tuple((g.data.qpos, g.data.mocap_pos, g.data.mocap_quat) for g in env_state.groups)

    def frames(self, eval_env, trace, task: int) -> tuple[list[np.ndarray], int, float]:
        """`(frames, environment steps, frames per second)` of task `task`'s first episode in one
        member's `rollout` trace."""
        first, steps, alive = trace
        g = next(i for i, group in enumerate(eval_env.groups) if task in group)
        k = eval_env.groups[g].index(task)
        poses = [tuple(x[k, 0] for x in first[g])]
        poses += [tuple(x[s, k, 0] for x in steps[g]) for s in np.flatnonzero(alive[:, task, 0])]
        dt = eval_env.envs[task].dt
        stride = max(1, round(1 / (dt * self.fps)))  # real time
        mujoco, model = import_mujoco(), self.models[task]
        data = mujoco.MjData(model)
        images = []
        for qpos, mocap_pos, mocap_quat in poses[::stride]:
            data.qpos[:], data.mocap_pos[:], data.mocap_quat[:] = qpos, mocap_pos, mocap_quat
            mujoco.mj_forward(model, data)
            self.renderers[task].update_scene(data, camera=self.cameras[task])
            images.append(self.renderers[task].render().copy())
        return images, len(poses) - 1, 1 / (dt * stride)

    def close(self) -> None:
        for r in self.renderers.values():
            r.close()


# -- games ----------------------------------------------------------------------------------------
def palette(channels: int) -> np.ndarray:
    """`[channels + 1, 3]` uint8: the background, then one colour per channel."""
    cmap = colormaps["tab10" if channels <= 10 else "tab20"]
    colours = [BACKGROUND] + [tuple(int(255 * c) for c in cmap(i % cmap.N)[:3]) for i in range(channels)]
    return np.asarray(colours, np.uint8)


def draw_grid(obs, channels: int) -> np.ndarray:
    """One observation `[H, W, C]` (C may be padded past the game's `channels`) -> an RGB frame:
    each cell the colour of its lowest set channel, with a dark grid line around it."""
    on = np.asarray(obs)[..., :channels] > 0
    index = np.where(on.any(-1), on.argmax(-1) + 1, 0)
    cells = palette(channels)[index]  # [H, W, 3]
    frame = np.repeat(np.repeat(cells, CELL, 0), CELL, 1)
    frame[::CELL, :] = frame[:, ::CELL] = 0
    return frame


class GridFrames:
    """Draws a game's image observations `[H, W, C]`, each cell the colour of its lowest set
    channel (the player, in every MinAtar game), `channels[t]` of them for task `t`."""

    def __init__(self, channels: dict, fps: float | None):
        self.channels, self.fps = channels, fps or 15.0

    @staticmethod
    def record(env_state, obs):
        del env_state
        return obs

    def frames(self, eval_env, trace, task: int) -> tuple[list[np.ndarray], int, float]:
        """The reset observation, then every step's true next observation."""
        del eval_env
        first, steps, alive = trace
        observations = [first[task, 0]] + [steps[s, task, 0] for s in np.flatnonzero(alive[:, task, 0])]
        return [draw_grid(o, self.channels[task]) for o in observations], len(observations) - 1, self.fps

    def close(self) -> None:
        pass


# -- files ----------------------------------------------------------------------------------------
def write_gif(frames, path: Path, fps: float) -> Path:
    """An animated GIF that loops (browsers and markdown show it). One palette for all frames,
    drawn from a sample of them: what stays still keeps its colour, so each frame stores only
    the region that changed (8x smaller for a cartpole)."""
    sample = np.concatenate(frames[::max(1, len(frames) // 16)], axis=0)
    palette = Image.fromarray(sample).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    # GIF delays count hundredths of a second; browsers slow anything under 2 to 10.
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
    return path
