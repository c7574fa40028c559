"""Whole programs side by side: each variant is a process, and they are timed in lockstep.

    python bench/lockstep.py --widths 512:256 --variants "pool32:NPROC=32" --rounds 8
    python bench/lockstep.py --variants "before:REPO=/path/to/an/older/checkout"
    python bench/lockstep.py --widths 128:128,512:256 --reference "/work/ref/run_ref.sh cartpole-swingup {width} {batch} 100000 10"

What a process fixes at start (XLA's thread pool, environment variables, another checkout of
purejaxbrc, the authors' code) cannot be A/B-tested inside one process as bench/choices.py
does. Here every variant runs in its own process on the width sweep's configuration
(`throughput.width_experiment`): the shipped program (this checkout, this environment), each
`--variants` entry, an A/A control (a second process of the shipped program: what noise alone
makes of a ratio) and optionally the authors' code. They compile one after the other and run an
untimed round; then in each round every variant runs alone while the others wait (ours block on a pipe, the authors'
code is stopped with SIGSTOP), in an order that reverses from round to round. A variant's
rate in a round is learning iterations per second; a ratio is taken within a round, against
the shipped program, so a slow drift of this virtual machine's speed cancels. It reports the
median, min and max over rounds and writes `--out` (JSON).

The authors' code (`--reference`, a shell command with `{width}` and `{batch}`) must print a
JSON line `{"i": iteration, "wall": time.time()}`, optionally with `"cpu"` (its process CPU
seconds), every few learning iterations (a local change to its train.py) and run long enough;
it is timed over windows as long as the shipped program's chunk, from the lines inside each
window (a line whose `wall` is before the window began is dropped).
"""

import datetime
import json
import os
import queue
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from bench.device import cpu_model, device_slug
from bench.width import parse_widths
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# A variant's process: compile the width experiment in its checkout, run the warm-up and one
# learning chunk, then one timed chunk per line read from stdin.
CHILD = """
import json, sys
sys.path.insert(0, '.')
try:
    from bench.fused import start_fused
    from bench.width import width_experiment
except ImportError:  # a checkout from before bench/throughput.py was split (another commit to time)
    from bench.throughput import start_fused, width_experiment
started = start_fused('mjx', width_experiment({width}, {batch}))
print('ready', flush=True)
for _ in sys.stdin:
    wall, cores = started.advance(1)
    print(json.dumps(dict(iterations_per_s=started.experiment.run.chunk / wall, seconds=wall, cores=cores)), flush=True)
"""


@dataclass(frozen=True)
class Args:
    widths: str = "512:256"
    """critic_width:batch_size pairs."""
    variants: tuple[str, ...] = ()
    """`name:KEY=VALUE;KEY=VALUE...`: environment variables for the variant's process; the key
    REPO picks another checkout of purejaxbrc (default: this one)."""
    reference: str = ""
    """Shell command running the authors' code at `{width}` and `{batch}` (see above)."""
    control: bool = True
    """Add an A/A control: a second process of the shipped program."""
    rounds: int = 6
    out: str = ""
    """JSON output; default bench/results/lockstep-<device>-<date>.json."""


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    env = {}
    for item in filter(None, rest.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--variants {text!r}: expected name:KEY=VALUE;KEY=VALUE")
        env[key] = value
    if not name or not env:
        raise ConfigError(f"--variants {text!r}: expected name:KEY=VALUE;KEY=VALUE (a name and at least one setting)")
    if "REPO" in env and not (Path(env["REPO"]) / "bench" / "throughput.py").exists():
        raise ConfigError(f"--variants {text!r}: {env['REPO']} is not a purejaxbrc checkout with bench/throughput.py")
    return name, env


class Lines:
    """A process's stdout read by a thread: the next line, or a clear error after `timeout`."""

    def __init__(self, proc: subprocess.Popen, what: str, stderr_path: str | None = None):
        self.proc, self.what, self.stderr_path = proc, what, stderr_path
        self.queue: queue.Queue = queue.Queue()
        self.ended = False  # the end of the output was read (by `next` or `drain`)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, timeout: float) -> str:
        try:
            line = None if self.ended else self.queue.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.what} printed nothing for {timeout:.0f} s{self._stderr()}") from None
        if line is None:
            self.ended = True
            raise RuntimeError(f"{self.what} exited (code {self.proc.wait()}){self._stderr()}")
        return line

    def drain(self):
        """Drop the lines read so far (keeping note of the end of the output)."""
        while not self.queue.empty():
            if self.queue.get() is None:
                self.ended = True

    def _stderr(self) -> str:
        if not self.stderr_path:
            return ""
        tail = Path(self.stderr_path).read_text(errors="replace").strip().splitlines()[-5:]
        return ": " + " | ".join(tail) if tail else ""


def _kill(proc: subprocess.Popen, group: bool = False):
    try:  # the whole group even when its leader (the shell) has exited: its children may not have
        os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


class Ours:
    """A purejaxbrc process at its first learning chunk, timed one chunk at a time."""

    def __init__(self, name: str, env: dict[str, str], width: int, batch: int, stderr_dir: str):
        repo = env.get("REPO", str(ROOT))
        stderr_path = str(Path(stderr_dir) / f"{len(os.listdir(stderr_dir))}.stderr")
        with open(stderr_path, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-c", CHILD.format(width=width, batch=batch)],
                                         cwd=repo, env=dict(os.environ, **env), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.lines = Lines(self.proc, f"variant {name!r}", stderr_path)
        try:
            while not self.lines.next(timeout=1800).startswith("ready"):
                pass
        except BaseException:
            self.close()
            raise

    def time(self, seconds_hint: float) -> dict:
        del seconds_hint  # one chunk, however long
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self.lines.next(timeout=1800))

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _kill(self.proc)


class Reference:
    """The authors' code, run until it prints learning timings, then stopped between windows."""

    def __init__(self, command: str, width: int, batch: int):
        self.proc = subprocess.Popen(command.format(width=width, batch=batch), shell=True, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.lines = Lines(self.proc, "the reference")
        try:
            self._next(timeout=900)  # compiled and past its warm-up
            self._next(timeout=900)  # past the first learning period (its compilation)
            self._signal(signal.SIGSTOP)
        except BaseException:
            self.close()
            raise

    def _next(self, timeout) -> dict:
        while True:
            line = self.lines.next(timeout)
            if line.startswith("{"):
                return json.loads(line)

    def _signal(self, sig):
        os.killpg(self.proc.pid, sig)

    def time(self, seconds_hint: float) -> dict:
        """Learning iterations/s over a window of about `seconds_hint` (at least two intervals)."""
        self.lines.drain()  # lines printed before the last stop
        resumed = time.time()
        self._signal(signal.SIGCONT)
        first = self._next(timeout=600)
        while first["wall"] < resumed:  # printed before the stop, read late
            first = self._next(timeout=600)
        # `first` ends an interval that spans the stop: it is only the window's start mark.
        t0, lines = time.perf_counter(), [first]
        while len(lines) < 3 or time.perf_counter() - t0 < seconds_hint:
            lines.append(self._next(timeout=600))
        self._signal(signal.SIGSTOP)
        iterations, wall = lines[-1]["i"] - first["i"], lines[-1]["wall"] - first["wall"]
        result = dict(iterations_per_s=iterations / wall, seconds=wall)
        if "cpu" in first:  # the process's CPU seconds, if it prints them
            result["cores"] = (lines[-1]["cpu"] - first["cpu"]) / wall
        return result

    def close(self):
        _kill(self.proc, group=True)


def lockstep(width: int, batch: int, args: Args, variants: dict[str, dict], log) -> dict:
    """One width: every variant started, then `args.rounds` rounds; rates and ratios."""
    procs = {}
    stderr_dir = tempfile.mkdtemp(prefix="lockstep-")
    try:
        for name, env in variants.items():
            log(f"  starting {name} ...")
            procs[name] = Ours(name, env, width, batch, stderr_dir)
        if args.reference:
            log("  starting the authors' code ...")
            procs["authors"] = Reference(args.reference, width, batch)
        rates = {name: [] for name in procs}
        cores = {name: [] for name in procs}
        names = list(procs)
        chunk_seconds = procs[names[0]].time(0.0)["seconds"]  # sizes the windows
        for name in names[1:]:  # an untimed round: every process past its first timed chunk
            procs[name].time(chunk_seconds)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                result = procs[name].time(chunk_seconds)
                rates[name].append(result["iterations_per_s"])
                if "cores" in result:
                    cores[name].append(result["cores"])
                if name == names[0]:
                    chunk_seconds = result["seconds"]
            log(f"  round {r}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in rates.items()) + " it/s")
    finally:  # the stopped reference first: it must never outlive us
        on_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nor be left by a second SIGTERM
        for p in sorted(procs.values(), key=lambda p: not isinstance(p, Reference)):
            try:
                p.close()
            except Exception:  # noqa: BLE001  (close the others whatever happens)
                pass
        signal.signal(signal.SIGTERM, on_term)
    base = names[0]
    summary = {}
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates[base])]
        summary[name] = dict(iterations_per_s=values, median_iterations_per_s=statistics.median(values),
                             median_cores=statistics.median(cores[name]) if cores[name] else None,
                             ratio_to_shipped=dict(median=statistics.median(ratios), min=min(ratios), max=max(ratios)))
    return dict(critic_width=width, batch_size=batch, variants=summary)


def commit(repo) -> str:
    """The checkout's short commit, `-dirty` when tracked files differ from it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(args: Args):
    widths = parse_widths(args.widths)
    if args.rounds < 2:
        raise ConfigError(f"--rounds {args.rounds}: at least 2")
    variants = {"shipped": {}}
    if args.control:
        variants["shipped (A/A)"] = {}
    for text in args.variants:
        name, env = parse_variant(text)
        if name in variants or name == "authors":
            raise ConfigError(f"--variants: the name {name!r} is taken")
        variants[name] = env
    if args.reference:
        try:
            filled = args.reference.format(width="\0W", batch="\0B")
        except (KeyError, IndexError, ValueError, AttributeError):
            raise ConfigError(f"--reference {args.reference!r}: only {{width}} and {{batch}} may be in braces "
                              "(write a literal brace twice)") from None
        if "\0W" not in filled or "\0B" not in filled:
            raise ConfigError(f"--reference {args.reference!r}: needs {{width}} and {{batch}}")
    # A SIGTERM unwinds like Ctrl-C, so no child (nor the stopped reference) outlives us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    commits = {name: commit(env.get("REPO", ROOT)) for name, env in variants.items()}  # as started
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    records = []
    for width, batch in widths:
        log(f"critic width {width}, batch {batch}")
        records.append(lockstep(width, batch, args, variants, log))
        for name, s in records[-1]["variants"].items():
            q = s["ratio_to_shipped"]
            log(f"  {name}: {s['median_iterations_per_s']:.2f} it/s, "
                f"{q['median']:.3f}x of shipped [{q['min']:.3f}, {q['max']:.3f}]")
    out = Path(args.out or f"bench/results/lockstep-{device_slug()}-{datetime.date.today()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        what="learning iterations/s of whole processes timed in lockstep rounds (bench/lockstep.py); "
             "ratios within a round, against the shipped program",
        command=" ".join(shlex.quote(a) for a in sys.argv), commit=commits["shipped"], cpu_model=cpu_model(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        variants={name: dict(env=env, commit=commits[name]) for name, env in variants.items()},
        reference=args.reference or None,
        rounds=args.rounds, records=records), indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
