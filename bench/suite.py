"""A prioritised list of measurements that turns a short window on an accelerator into figures.

    python bench/suite.py [--budget-s S] [--only NAME,...] [--tiny] [--out FILE.jsonl]

Each item (bench/items.py, in this order: ceilings, paper, paper_bf16, population, minatar,
small, wide, script, lowering) runs in its own process with its own time limit; its log streams
to `<out>.logs/<item>.log`, and the figures it has so far to `<out>.logs/<item>.json` as each
one exists. When the item ends, one JSON line is appended to `--out` (default
`bench/results/<device>-<date>-<commit>[-tiny].jsonl`): `item`, `status` (`ok`, `error` with its
`message`, `timeout`), `seconds`, `device`, `commit`, `command`, `tiny`, and the item's figures,
those of a failed or timed-out item included. Running again with the same `--out` (and
`--tiny` or not) skips the items already `ok` at that size, so a second command continues where
the first ran out of time. No item starts
that its estimate says would not end within `--budget-s`; each is stopped at the budget's end.
`--tiny` shrinks every item to a cheap task and tiny networks: the whole list runs on a 2-core
CPU in minutes (run it so before every GPU window).

This process never starts JAX itself (one probe process reads the device), so an item's
process has the accelerator to itself.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from bench.items import ITEMS, Report, run_item
from purejaxbrc.cli import exit_on_error
from purejaxbrc.config import ConfigError
from purejaxbrc.rundir import read_rows

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import json, jax, os; d = jax.devices()[0]; "
         "print(json.dumps(dict(platform=d.platform, kind=d.device_kind, count=jax.device_count(), "
         "jax=jax.__version__, cpus=os.cpu_count())))")


@dataclass(frozen=True)
class Args:
    budget_s: float = 540.0
    """Seconds this command may spend; no item starts that its estimate says would not end
    within it (the rest waits for the next command with the same --out)."""
    only: str = ""
    """Comma-separated items to run (default: all, in order)."""
    tiny: bool = False
    """Every item shrunk to a cheap task and tiny networks (a 2-core CPU runs the list in minutes)."""
    out: str = ""
    """The JSONL file; default bench/results/<device>-<date>-<commit>.jsonl."""
    item: str = ""
    """Internal: run this one item in this process, its figures into --figures."""
    figures: str = ""
    """Internal: where the item process writes its figures."""


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def environment() -> dict:
    """An item's process: unbuffered, importing this checkout, and (on a GPU) allocating as it
    goes, so that the probe or a previous item's teardown never holds the memory it needs."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def probe() -> dict:
    """The device, read in a process of its own."""
    env = dict(environment(), XLA_PYTHON_CLIENT_PREALLOCATE="false")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    if out.returncode:
        raise ConfigError(f"cannot start JAX: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_slug(device: dict) -> str:
    if device["platform"] == "cpu":
        return f"cpu-{device['cpus']}core"
    return device["kind"].lower().replace(" ", "-")


def append_line(path: Path, line: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def last_error(log: Path) -> str:
    """The item's failure in one line: its last `error:` or exception line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    for line in reversed(lines):
        if line.startswith("error:") or (":" in line and line.split(":")[0].endswith(("Error", "Exception"))):
            return line[:500]
    return (lines[-1][:500] if lines else "no output")


def run_one(name: str, args: Args, out: Path, timeout_s: float, device: dict, revision: str, log) -> dict:
    """Run item `name` in its own process; its line (already appended to `out`)."""
    logs = out.with_name(out.name + ".logs")
    logs.mkdir(parents=True, exist_ok=True)
    figures, log_path = logs / f"{name}.json", logs / f"{name}.log"
    figures.unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / "bench" / "suite.py"), "--item", name, "--figures", str(figures)]
    command += ["--tiny"] if args.tiny else []
    log(f"{name}: started (limit {timeout_s:.0f}s; log {log_path})")
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        # Its own process group: a timeout kills the item and anything it started (the script
        # item's run), and so does this process stopping for any reason.
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=environment(), cwd=ROOT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            status = "ok" if rc == 0 else "error"
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group ended on its own
                pass
            proc.wait()
    seconds = time.perf_counter() - t0
    line = dict(item=name, status=status, seconds=round(seconds, 2), device=device["kind"],
                platform=device["platform"], jax=device["jax"], commit=revision, tiny=args.tiny,
                command=" ".join(command[1:]), date=datetime.datetime.now().isoformat(timespec="seconds"))
    if status == "error":
        line["message"] = last_error(log_path)
    line.update(Report.read(figures))
    append_line(out, line)
    log(f"{name}: {status} in {seconds:.0f}s" + (f" ({line['message']})" if status == "error" else ""))
    return line


def summary(line: dict) -> str:
    """The headline figures of one line."""
    spec = ITEMS.get(line["item"])
    return spec.headline(line) if spec and line["status"] == "ok" else line.get("message", "")


def table(lines: list[dict]) -> str:
    rows = [("item", "status", "seconds", "figures")]
    for line in lines:
        rows.append((line["item"], line["status"], f"{line['seconds']:.0f}", summary(line)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


def main(args: Args):
    if args.item:  # an item's own process
        if args.item not in ITEMS:
            raise ConfigError(f"unknown item {args.item!r}")
        run_item(args.item, args.tiny, Path(args.figures))
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ITEMS)
    unknown = [n for n in names if n not in ITEMS]
    if unknown:
        raise ConfigError(f"unknown item {', '.join(unknown)}; items: {', '.join(ITEMS)}")
    if args.budget_s <= 0:
        raise ConfigError(f"--budget-s must be > 0, got {args.budget_s}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    device, revision = probe(), commit()
    out = Path(args.out or ROOT / "bench" / "results" / f"{device_slug(device)}-{datetime.date.today().isoformat()}-"
                                                         f"{revision}{'-tiny' if args.tiny else ''}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Done: what is already ok at this size (a --tiny line never stands for the full item).
    done = {line["item"] for line in read_rows(out) if line.get("status") == "ok" and line.get("tiny") == args.tiny}
    log(f"{device['kind']} ({device['platform']}, jax {device['jax']}), commit {revision}; "
        f"{len(done & set(names))} items already ok in {out}")
    for name in names:
        if name in done:
            continue
        spec = ITEMS[name]
        left = args.budget_s - (time.perf_counter() - t0)
        estimate = spec.tiny_estimate_s if args.tiny else spec.estimate_s
        if estimate > left:
            log(f"{name}: not started (estimate {estimate:.0f}s, {left:.0f}s of the budget left); "
                f"run the same command again to continue")
            continue
        run_one(name, args, out, min(spec.tiny_limit_s if args.tiny else spec.limit_s, left), device, revision, log)
    latest = {}
    for line in read_rows(out):
        if line.get("tiny") == args.tiny:
            latest[line["item"]] = line
    print(table([latest[n] for n in names if n in latest]))
    log(f"wrote {out}")


if __name__ == "__main__":
    exit_on_error(lambda: main(tyro.cli(Args)))
