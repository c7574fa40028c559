"""The population sharded over devices and processes. Each run is a subprocess: a process's
device count is fixed when JAX starts (4 simulated CPU devices, or 2 per process in a
two-process run on localhost with jax.distributed and gloo). Tiny categorical DQN runs on
gymnax CartPole-v1 keep compiling short."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from purejaxbrc.checkpoint import list_steps
from purejaxbrc.program import load
from purejaxbrc.rundir import config_diff

ROOT = Path(__file__).resolve().parent.parent
CACHE = os.environ.get("PUREJAXBRC_CACHE", str(ROOT / ".jax_cache"))
FLAGS = ["cpu", "--tasks", "CartPole-v1", "--num-seeds", "4", "--num-envs", "4",
         "--total-iterations", "60", "--warmup-iterations", "20", "--eval-every", "20",
         "--eval-episodes", "2", "--critic-width", "16", "--critic-depth", "1", "--num-atoms", "11",
         "--embed-dim", "4", "--batch-size", "16", "--chunk-iterations", "10", "--eps-decay", "30",
         "--checkpoint-every", "10", "--keep-checkpoints", "10"]
WALL_CLOCK = ("wall_s", "compile_s")


def command(run_dir, *extra):
    return [sys.executable, str(ROOT / "experiments" / "brc_minatar.py"), *FLAGS, "--run-dir", str(run_dir), *extra]


def environment(devices: int) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, PUREJAXBRC_CACHE=CACHE, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run(run_dir, devices: int, *extra) -> subprocess.CompletedProcess:
    out = subprocess.run(command(run_dir, *extra), capture_output=True, text=True, cwd=ROOT,
                         env=environment(devices), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(run_dir, *extra, port=None):
    """Two processes of one run, two CPU devices each."""
    port = port or free_port()
    return [subprocess.Popen(command(run_dir, "--coordinator-address", f"localhost:{port}",
                                     "--num-processes", "2", "--process-id", str(i), *extra),
                             cwd=ROOT, env=environment(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for i in range(2)]


def finish(procs) -> None:
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]


def rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def final_state(run_dir):
    got = load(run_dir, max(list_steps(run_dir)), with_buffer=True).restored
    return got.rest._replace(buffer=got.rest.buffer._replace(data=got.data))


def assert_same_run(a, b, ignore=()):
    assert rows(a) == rows(b)
    differ = [d for d in config_diff(json.loads((a / "config.json").read_text()),
                                     json.loads((b / "config.json").read_text())) if d.split(" (")[0] not in ignore]
    assert not differ, differ
    sa, sb = final_state(a), final_state(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(sa)[0], jax.tree.leaves(sb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """The reference: 4 seeds over 4 simulated devices of one process."""
    run_dir = tmp_path_factory.mktemp("four") / "run"
    out = run(run_dir, 4)
    assert "on 4 devices" in out.stdout
    return run_dir


def test_four_devices_equal_one_device_seed_by_seed(four_devices, tmp_path):
    """Bit for bit with the members run one after another on one device (--no-vmap-members:
    each exactly as a device holding one member runs it)."""
    one = tmp_path / "one"
    assert "on 1 devices" in run(one, 1, "--no-vmap-members").stdout
    assert_same_run(four_devices, one, ignore=("vmap_members",))


def test_two_processes_equal_one_and_resume_bit_exact_after_sigkill(four_devices, tmp_path):
    together = tmp_path / "together"
    finish(start_processes(together))
    assert_same_run(four_devices, together)
    assert not (together / "metrics.jsonl.tmp").exists()

    # SIGKILL process 1 once checkpoint 30 exists; process 0 then has no peer (a job scheduler
    # would end it too): kill it as well. Both resume from the last checkpoint they wrote.
    killed = tmp_path / "killed"
    procs = start_processes(killed)
    deadline = time.time() + 600
    while 30 not in list_steps(killed):
        assert all(p.poll() is None for p in procs) and time.time() < deadline, procs[0].stderr.read()[-2000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    assert max(list_steps(killed)) < 60
    finish(start_processes(killed, "--resume"))
    assert_same_run(four_devices, killed)


def test_population_that_does_not_divide_the_devices_is_refused(tmp_path):
    out = subprocess.run(command(tmp_path / "r", "--num-seeds", "3"), capture_output=True, text=True,
                         cwd=ROOT, env=environment(4), timeout=300)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the population of 3 members"), out.stderr
    assert "use a population of 4" in lines[0]
    assert not (tmp_path / "r").exists()
