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
from pathlib import Path
from typing import NamedTuple

import purejaxbrc  # noqa: F401  (before JAX: installs purejaxbrc.lapack)
import jax
import jax.numpy as jnp

from purejaxbrc import evaluate, program, rundir, sweep
from purejaxbrc.checkpoint import list_steps
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError
from purejaxbrc.distributed import MEMBERS, SHARED
from purejaxbrc.video import write_gif


class Video(NamedTuple):
    task: str
    member: str  # `seed 0`, or `v1 seed 0` in a sweep
    iteration: int  # the checkpoint's
    episode_return: float
    steps: int  # environment steps of the episode
    path: Path


def rollout(loaded: program.Loaded, record):
    """Every member's episodes (one per task) at the restored checkpoint, on the evaluation's
    keys, as numpy: `(returns [members, T, 1], trace)` (purejaxbrc.train `rollout`)."""
    prog, state, it = loaded.built.program, loaded.restored.rest, loaded.restored.step
    fn = jax.jit(prog.over_members(lambda s, i: prog.trainer.rollout(s, i, record), (MEMBERS, SHARED)))
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
    if fps is not None and fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {fps}")
    if width <= 0 or height <= 0:
        raise ConfigError(f"--width and --height must be > 0, got {width} and {height}")
    run_dir = Path(run_dir)
    stored = rundir.read_config(run_dir)
    stored.kind.prepare_video()  # before anything imports what draws it
    plan = program.stored_plan(stored)
    names = list(plan.names)
    size = len(sweep.member_seeds(plan.experiment.run, plan.variants))
    if not 0 <= member < size:
        raise ConfigError(f"--member {member}: the run has members 0 to {size - 1}")
    chosen = select_tasks(names, tasks)
    if not list_steps(run_dir):
        raise ConfigError(f"run dir {run_dir} has no checkpoint")
    rundir.check_step(run_dir, step)
    frames = plan.kind.video(names, chosen, width, height, camera, fps)
    try:
        loaded = program.load(run_dir, step, episodes=1)
        it, eval_env = loaded.restored.step, loaded.built.eval_env
        label = evaluate.columns(loaded.built.population)[member]
        returns, trace = rollout(loaded, frames.record)
        mine = jax.tree.map(lambda x: x[member], trace)
        out = Path(out) if out else run_dir / "videos"
        videos = []
        for t in chosen:
            images, steps, frame_fps = frames.frames(eval_env, mine, t)
            path = write_gif(images, out / f"{names[t]}-{label.replace(' ', '')}-{it}.gif", frame_fps)
            videos.append(Video(names[t], label, it, float(returns[member, t, 0]), steps, path))
    finally:
        frames.close()
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
    program.enable_compilation_cache()
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
