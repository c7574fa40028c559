"""Videos of a run's deterministic policy: one GIF per task.

    python -m purejaxbrc.render RUN_DIR [--checkpoint STEP] [--tasks A,B] [--member M] [--out DIR]

Rebuilds the run from RUN_DIR (as purejaxbrc.evaluate does), restores the checkpoint at
iteration STEP (default: the latest readable one) and plays one episode per task with the
training loop's own evaluation rollout (purejaxbrc.train `rollout`), on the first evaluation
key of that iteration: the printed returns equal member M's column of
`python -m purejaxbrc.evaluate RUN_DIR --episodes 1 --checkpoint STEP`. The rollout runs on the
device over every member, as the evaluation does, and brings back what the frames need:

- MJX tasks: the positions (qpos, mocap poses) of every step, drawn by MuJoCo's renderer on
  the task's MjModel (camera 0 of the model, or `--camera`), one frame per `1 / fps` seconds
  of simulated time (real time).
- gymnax games with image observations (MinAtar): each step's observation, one colour per
  channel (the lowest channel on top: the player in every MinAtar game), one frame per step.

MuJoCo needs an OpenGL context: on a machine without a display, EGL is used unless MUJOCO_GL
says otherwise (MUJOCO_GL=osmesa renders in software). Without a usable one, one `error:`
line names the fix (exit code 2), as does any other bad input.
"""

import argparse
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import purejaxbrc  # noqa: F401  (before JAX: sets the XLA CPU flag)
import jax
import jax.numpy as jnp
import numpy as np

from purejaxbrc.config import ConfigError

GL_FIX = ("on a machine without a display render with MUJOCO_GL=egl (Debian: apt-get install libegl1 libopengl0 "
          "libgl1-mesa-dri) or MUJOCO_GL=osmesa (apt-get install libosmesa6)")
BACKGROUND = (16, 16, 16)
CELL = 24  # pixels per cell of a game's grid


class Video(NamedTuple):
    task: str
    member: str  # `seed 0`, or `v1 seed 0` in a sweep
    iteration: int  # the checkpoint's
    episode_return: float
    steps: int  # environment steps of the episode
    path: Path


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
    """mujoco, or ConfigError when its GL backend cannot load (an unknown MUJOCO_GL, say)."""
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


def mjx_record(env_state, obs):
    """What MuJoCo needs to draw a state: per physics group, positions [G, E, ...]."""
    del obs
    return tuple((g.data.qpos, g.data.mocap_pos, g.data.mocap_quat) for g in env_state.groups)


def mjx_poses(eval_env, trace, task: int) -> list[tuple]:
    """`(qpos, mocap_pos, mocap_quat)` of every state of task `task`'s first episode, from one
    member's `rollout` trace."""
    first, steps, alive = trace
    g = next(i for i, group in enumerate(eval_env.groups) if task in group)
    k = eval_env.groups[g].index(task)
    poses = [tuple(x[k, 0] for x in first[g])]
    poses += [tuple(x[s, k, 0] for x in steps[g]) for s in np.flatnonzero(alive[:, task, 0])]
    return poses


def draw_mjx(renderer, model, poses, camera, stride: int) -> list[np.ndarray]:
    mujoco = import_mujoco()
    data = mujoco.MjData(model)
    frames = []
    for qpos, mocap_pos, mocap_quat in poses[::stride]:
        data.qpos[:], data.mocap_pos[:], data.mocap_quat[:] = qpos, mocap_pos, mocap_quat
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera=camera)
        frames.append(renderer.render().copy())
    return frames


# -- gymnax games ---------------------------------------------------------------------------------
def game_record(env_state, obs):
    del env_state
    return obs


def palette(channels: int) -> np.ndarray:
    """`[channels + 1, 3]` uint8: the background, then one colour per channel."""
    from matplotlib import colormaps
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


def game_frames(trace, task: int, channels: int) -> list[np.ndarray]:
    """Frames of task `task`'s first episode from one member's `rollout` trace: the reset
    observation, then every step's true next observation."""
    first, steps, alive = trace
    observations = [first[task, 0]] + [steps[s, task, 0] for s in np.flatnonzero(alive[:, task, 0])]
    return [draw_grid(o, channels) for o in observations]


# -- files ----------------------------------------------------------------------------------------
def write_gif(frames, path: Path, fps: float) -> Path:
    """An animated GIF that loops (browsers and markdown show it). One palette for all frames,
    drawn from a sample of them: what stays still keeps its colour, so each frame stores only
    the region that changed (8x smaller for a cartpole)."""
    from PIL import Image
    sample = np.concatenate(frames[::max(1, len(frames) // 16)], axis=0)
    palette = Image.fromarray(sample).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    # GIF delays count hundredths of a second; browsers slow anything under 2 to 10.
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
    return path


# -- the rollout ----------------------------------------------------------------------------------
def rollout(loaded, record):
    """Every member's episodes (one per task) at the restored checkpoint, on the evaluation's
    keys, as numpy: `(returns [members, T, 1], trace)` (purejaxbrc.train `rollout`)."""
    from purejaxbrc.distributed import MEMBERS, SHARED
    program, state, it = loaded.program, loaded.restored.rest, loaded.restored.step
    fn = jax.jit(program.over_members(lambda s, i: program.trainer.rollout(s, i, record), (MEMBERS, SHARED)))
    return jax.device_get(fn(state, jnp.int32(it)))


def select_tasks(names, spec: str | None) -> list[int]:
    if not spec:
        return list(range(len(names)))
    wanted = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in names]
    if unknown or not wanted:
        raise ConfigError(f"--tasks {spec}: the run's tasks are {', '.join(names)}")
    return [names.index(t) for t in wanted]


def render(run_dir, step: int | None = None, tasks: str | None = None, member: int = 0, out=None,
           fps: float | None = None, width: int = 320, height: int = 240, camera: str | None = None) -> list[Video]:
    """One GIF per task of member `member`'s deterministic policy at checkpoint `step` (default:
    the latest). ConfigError (one line) for bad input or a missing GL context, found before the
    run is rebuilt and its rollout compiled."""
    from purejaxbrc import evaluate, kinds, sweep
    from purejaxbrc.checkpoint import Checkpoints
    if fps is not None and fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {fps}")
    if width <= 0 or height <= 0:
        raise ConfigError(f"--width and --height must be > 0, got {width} and {height}")
    run_dir = Path(run_dir)
    kind, experiment, variants, _ = evaluate.load_config(run_dir)
    if kind == "mjx":  # before anything imports mujoco
        default_gl()
        import_mujoco()
    names = list(kinds.get(kind).resolve_tasks(experiment.run.tasks))
    size = len(sweep.member_seeds(experiment.run, variants))
    if not 0 <= member < size:
        raise ConfigError(f"--member {member}: the run has members 0 to {size - 1}")
    chosen = select_tasks(names, tasks)
    steps = Checkpoints(run_dir).steps()
    if step is not None and step not in steps:
        raise ConfigError(f"--checkpoint {step}: no such checkpoint in {run_dir}; there are: "
                          f"{', '.join(map(str, steps)) or 'none'}")
    if kind == "mjx":
        from purejaxbrc.envs.mjx import load_task
        models = {t: load_task(names[t]).mj_model for t in chosen}
        cameras = {t: camera_of(models[t], camera) for t in chosen}
        renderers = {t: open_renderer(models[t], width, height) for t in chosen}
        record, fps = mjx_record, fps or 50.0
    else:
        from purejaxbrc.envs.gymnax import GymnaxTaskSet
        shape = GymnaxTaskSet(names).obs_shape
        if len(shape) != 3:
            raise ConfigError(f"{', '.join(names)}: observations of shape {shape} are not images; render "
                              f"draws MJX tasks and image games (MinAtar)")
        renderers, record, fps = {}, game_record, fps or 15.0

    loaded = evaluate.load(run_dir, step, episodes=1)
    eval_env, it = loaded.eval_env, loaded.restored.step
    label = evaluate.columns(loaded.program.population)[member]
    returns, trace = rollout(loaded, record)
    mine = jax.tree.map(lambda x: x[member], trace)
    out = Path(out) if out else run_dir / "videos"
    videos = []
    for t in chosen:
        if kind == "mjx":
            poses = mjx_poses(eval_env, mine, t)
            stride = max(1, round(1 / (eval_env.envs[t].dt * fps)))  # real time
            frames = draw_mjx(renderers[t], models[t], poses, cameras[t], stride)
            steps, frame_fps = len(poses) - 1, 1 / (eval_env.envs[t].dt * stride)
        else:
            frames = game_frames(mine, t, eval_env.obs_shapes[t][-1])
            steps, frame_fps = len(frames) - 1, fps
        path = write_gif(frames, out / f"{names[t]}-{label.replace(' ', '')}-{it}.gif", frame_fps)
        videos.append(Video(names[t], label, it, float(returns[member, t, 0]), steps, path))
    for r in renderers.values():
        r.close()
    return videos


def main(argv=None) -> list[Video]:
    parser = argparse.ArgumentParser(prog="python -m purejaxbrc.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                        help="the checkpoint's iteration (default: the latest)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks of the run (default: all)")
    parser.add_argument("--member", type=int, default=0, help="the member (seed x variant) to play (default: 0)")
    parser.add_argument("--out", default=None, help="directory of the videos (default: RUN_DIR/videos)")
    parser.add_argument("--fps", type=float, default=None, help="frames per second (default: 50 for MJX, "
                        "simulated time in real time; 15 for games, one frame per step)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--camera", default=None, help="MJX: a camera name or index of the model (default: 0)")
    args = parser.parse_args(argv)
    from purejaxbrc.run import enable_compilation_cache, exit_on_error
    enable_compilation_cache()
    videos = exit_on_error(lambda: render(args.run_dir, args.checkpoint, args.tasks, args.member, args.out,
                                          args.fps, args.width, args.height, args.camera))
    step = videos[0].iteration
    print(f"{args.run_dir}: checkpoint at iteration {step}, {videos[0].member}, deterministic policy, the "
          f"evaluation's first episode (python -m purejaxbrc.evaluate {args.run_dir} --episodes 1 --checkpoint {step})")
    for v in videos:
        print(f"{v.task}: return {v.episode_return:.2f} in {v.steps} steps -> {v.path}")
    return videos


if __name__ == "__main__":
    main()
