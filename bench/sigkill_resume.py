"""SIGKILL a training run mid-way, resume it, and compare with an uninterrupted run.

    python bench/sigkill_resume.py [--out DIR] [--kill-after N]

Runs experiments/brc_minatar.py (CartPole-v1, tiny networks, 2 seeds, an evaluation every 500
and a checkpoint every 1000 iterations) three times as subprocesses:

1. uninterrupted, to the end;
2. the same flags in another run dir, SIGKILLed at a random moment up to 2 s after its
   checkpoint N exists (default 1000): often after the next evaluation's rows were written
   (which the resume must drop and redo), sometimes while a checkpoint is being written;
3. run 2 again with --resume.

Then compares run 3 with run 1: every array of the final checkpoint (parameters, targets,
optimiser states, replay buffers, RNG keys, env states: bit for bit), metrics.jsonl rows and
summary.json without their wall-clock fields (wall_s, compile_s). Prints the outcome and exits
0 when everything is identical, 1 otherwise. Not part of the test suite (about a minute on a
2-core CPU).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import purejaxbrc  # noqa: E402,F401  (before JAX: sets the XLA CPU flag)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from purejaxbrc.checkpoint import join, list_steps  # noqa: E402
from purejaxbrc.program import load  # noqa: E402

FLAGS = ["cpu", "--tasks", "CartPole-v1", "--num-seeds", "2", "--num-envs", "4",
         "--total-iterations", "3000", "--warmup-iterations", "200", "--eval-every", "500",
         "--eval-episodes", "2", "--critic-width", "32", "--critic-depth", "1",
         "--batch-size", "32", "--chunk-iterations", "100", "--checkpoint-every", "1000",
         "--keep-checkpoints", "10"]
WALL_CLOCK = ("wall_s", "compile_s")


def command(run_dir: Path, *extra):
    return ["nice", "-n", "10", sys.executable, str(ROOT / "experiments" / "brc_minatar.py"), *FLAGS,
            "--run-dir", str(run_dir), *extra]


def environment():
    """The scripts import purejaxbrc from this checkout, installed or not."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path)


def run_to_end(run_dir: Path, *extra) -> None:
    out = subprocess.run(command(run_dir, *extra), capture_output=True, text=True, cwd=ROOT, env=environment())
    if out.returncode != 0:
        sys.exit(f"{' '.join(command(run_dir, *extra))} exited {out.returncode}:\n{out.stderr}")
    sys.stderr.write(out.stderr)


def run_and_kill(run_dir: Path, kill_after: int) -> int:
    """Start the run, SIGKILL it at a random moment after checkpoint `kill_after` exists."""
    proc = subprocess.Popen(command(run_dir), cwd=ROOT, env=environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while kill_after not in list_steps(run_dir):
        if proc.poll() is not None:
            sys.exit(f"the run ended (exit {proc.returncode}) before checkpoint {kill_after}")
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return max(list_steps(run_dir))


def strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in WALL_CLOCK}


def rows(run_dir: Path):
    return [strip(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_state(run_dir: Path):
    got = load(run_dir, max(list_steps(run_dir)), with_buffer=True).restored
    return join(got.rest, got.data)


def differing_arrays(a, b) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(a)[0]
    return [jax.tree_util.keystr(p) for (p, x), y in zip(paths, jax.tree.leaves(b))
            if not np.array_equal(np.asarray(x), np.asarray(y))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/purejaxbrc_sigkill", help="scratch directory (emptied)")
    parser.add_argument("--kill-after", type=int, default=1000, help="kill once this checkpoint exists")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random kill moment")
    args = parser.parse_args()
    random.seed(args.seed)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    whole, killed = out / "uninterrupted", out / "killed"

    t = time.perf_counter()
    run_to_end(whole)
    print(f"uninterrupted run: {time.perf_counter() - t:.1f}s")
    last = run_and_kill(killed, args.kill_after)
    leftovers = sorted(p.name for p in (killed / "checkpoints").iterdir() if not p.name.isdigit())
    print(f"SIGKILLed; last complete checkpoint {last}; rows written up to iteration "
          f"{max(r['iteration'] for r in rows(killed))}; partial checkpoint dirs: {leftovers or 'none'}")
    run_to_end(killed, "--resume")
    print("resumed run finished")

    diff = differing_arrays(final_state(whole), final_state(killed))
    same_rows = rows(whole) == rows(killed)
    same_summary = strip(json.loads((whole / "summary.json").read_text())) == \
        strip(json.loads((killed / "summary.json").read_text()))
    print(f"final state arrays: {'identical' if not diff else 'DIFFER: ' + ', '.join(diff[:5])}")
    print(f"metrics.jsonl rows ({len(rows(whole))}, without wall_s): {'identical' if same_rows else 'DIFFER'}")
    print(f"summary.json (without wall_s, compile_s): {'identical' if same_summary else 'DIFFER'}")
    ok = not diff and same_rows and same_summary
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PUREJAXBRC_CACHE", str(ROOT / ".jax_cache"))
    sys.exit(main())
