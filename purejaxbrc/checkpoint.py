"""Checkpoints of the complete training state with orbax's CheckpointManager, never via pickle.

RUN_DIR/checkpoints/<iteration>/ holds three orbax items:

- `state`: every array of the vmapped TrainState except the replay buffers' contents (networks,
  targets, optimiser states, temperature, normaliser, buffer pointers, RNG keys, env states),
  as a flat dict named by pytree path (".agent.critic.stem.kernel"), saved with StandardSave.
- `buffer`: the replay buffers' contents; left out with --no-buffer-checkpoint.
- `meta`: JSON: iteration, learn_from, wall counters, kind, the config and a fingerprint of
  every array.

Restoring goes into an abstract target built by jax.eval_shape of the vmapped init, so shapes,
dtypes and the tree structure come from the code and only array contents come from disk. A
checkpoint that fails to restore, or whose arrays do not match their fingerprints, is corrupt:
`restore_latest` falls back to the previous one (saying so) and moves the bad ones aside to
RUN_DIR/checkpoints.corrupt/ so that the resumed run can save those iterations again. `read`
takes named arrays as saved, without a target (a transfer run reads a pretrained agent so).

Whether a checkpoint belongs to the run restoring it is the caller's question (`check`):
purejaxbrc.rundir compares the configs.
"""

import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from purejaxbrc.config import ConfigError

STATE, BUFFER, META = "state", "buffer", "meta"


class CorruptCheckpoint(Exception):
    """A checkpoint whose files do not restore to what was saved."""


class Restored(NamedTuple):
    step: int
    rest: Any  # the TrainState with `buffer.data` None
    data: Any  # the replay buffers' contents, or None when the checkpoint has none
    meta: dict


def list_steps(run_dir) -> list[int]:
    """Iterations with a finalised checkpoint directory (orbax writes into a temporary name and
    renames when done, so a half-written save never shows up here)."""
    path = Path(run_dir) / "checkpoints"
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())


# -- the state as named arrays -------------------------------------------------------------------
def split(state):
    """`(state without buffer contents, buffer contents)`: saved as two items."""
    return state._replace(buffer=state.buffer._replace(data=None)), state.buffer.data


def join(rest, data):
    return rest._replace(buffer=rest.buffer._replace(data=data))


def named(tree) -> dict:
    """`{pytree path: leaf}`: readable names in the checkpoint, stable for one code version."""
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def stored(arrays: dict) -> dict:
    """The arrays that are saved: orbax refuses empty ones (MJX's contact arrays when a model
    has no contacts), which carry nothing but their shape, and the shape is in the code."""
    return {k: v for k, v in arrays.items() if v.size}


def with_empty(arrays: dict, abstract: dict, sharding) -> dict:
    """`arrays` plus the empty ones of `abstract`, placed like restored ones."""
    empty = {k: jax.make_array_from_callback(a.shape, sharding, lambda i, a=a: np.zeros(a.shape, a.dtype)[i])
             for k, a in abstract.items() if not a.size}
    return {**arrays, **empty}


def unnamed(abstract, arrays: dict):
    """The tree of `abstract` with the leaves taken from `arrays` by name."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    return jax.tree_util.tree_unflatten(treedef, [arrays[jax.tree_util.keystr(p)] for p, _ in paths])


def _fingerprint(x):
    """A position-weighted sum of the bits of `x` (mod 2^32): one flipped bit, a truncated file
    read as zeros or swapped entries all change it. Fused by XLA: no copy of the array."""
    x = x.reshape(-1)
    size = x.dtype.itemsize
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size])
        bits = bits.astype(jnp.uint32).reshape(-1)
    weights = jax.lax.iota(jnp.uint32, bits.size) * jnp.uint32(0x9E3779B1) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


_fingerprints = jax.jit(lambda arrays: {k: _fingerprint(v) for k, v in arrays.items()})


def fingerprints(arrays: dict, compiled=None) -> dict:
    """`{name: fingerprint}`; `compiled`: `_fingerprints` compiled for these arrays' shapes."""
    return {k: int(v) for k, v in jax.device_get((compiled or _fingerprints)(arrays)).items()}


def lower_fingerprints(abstract, with_buffer: bool = True) -> dict:
    """The fingerprint programs a save of `abstract` (the state's shapes) runs, lowered, per
    item: compiling them while the training program compiles keeps a first save from waiting
    on a compile (seconds for the paper's networks)."""
    rest, data = split(abstract)
    items = {STATE: rest, BUFFER: data} if with_buffer else {STATE: rest}
    return {name: _fingerprints.lower(stored(named(part))) for name, part in items.items()}


def _placed(abstract: dict, sharding) -> dict:
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in abstract.items()}


def _reason(e: Exception) -> str:
    """One short line: tensorstore's status and the array it failed on, when it says so."""
    first = (str(e).strip().splitlines() or [""])[0]
    status = re.match(r"([A-Z_]+): ", first)
    array = re.search(r'Error reading "([^"]+?)/\.z\w+"', first)
    if status and array:
        return f"{status.group(1)} reading {array.group(1)}"
    return f"{type(e).__name__}: {first[:120]}" + ("..." if len(first) > 120 else "")


def _quiet_failed_reads() -> None:
    """A failed tensorstore read closes orbax's event loop with callbacks still pending, and
    Python prints a "RuntimeError: Event loop is closed" traceback for each, from other threads
    and after the restore has already raised. The failure itself is reported as one line, so
    from the first restore on those tracebacks are dropped; every other one still shows."""
    previous = sys.unraisablehook
    if getattr(previous, "quiet_failed_reads", False):
        return

    def hook(u):
        if not (u.exc_type is RuntimeError and "Event loop is closed" in str(u.exc_value)):
            previous(u)
    hook.quiet_failed_reads = True
    sys.unraisablehook = hook


# -- the manager ---------------------------------------------------------------------------------
class Checkpoints:
    def __init__(self, run_dir, keep: int = 3, read_only: bool = False, sharding=None, fingerprinters=None):
        """`sharding`: where restored arrays go, every leaf split over the population's devices
        along its leading member axis (default: all on the first device); `fingerprinters`:
        `{item: compiled}` of `lower_fingerprints`, used by `save`."""
        self.fingerprinters = fingerprinters or {}
        self.sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        self.run_dir = Path(run_dir).absolute()
        self.dir = self.run_dir / "checkpoints"
        self._keep, self._read_only = keep, read_only
        self._manager = None

    @property
    def manager(self):
        if self._manager is None:
            # absl logs every save and restore at INFO/WARNING; the host loop reports its own.
            logging.getLogger("absl").setLevel(logging.ERROR)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self._keep, read_only=self._read_only, create=not self._read_only,
                # Synchronous: the next chunk donates (overwrites) the state's buffers.
                enable_async_checkpointing=False)
            self._manager = ocp.CheckpointManager(self.dir, options=options, item_names=(STATE, BUFFER, META))
        return self._manager

    def steps(self) -> list[int]:
        return list_steps(self.run_dir)

    def save(self, iteration: int, state, meta: dict, with_buffer: bool = True) -> None:
        rest, data = split(state)
        items = {STATE: stored(named(rest))}
        if with_buffer:
            items[BUFFER] = stored(named(data))
        meta = dict(meta, iteration=iteration, buffer=with_buffer,
                    fingerprint={name: fingerprints(arrays, self.fingerprinters.get(name))
                                 for name, arrays in items.items()})
        args = {name: ocp.args.StandardSave(arrays) for name, arrays in items.items()}
        self.manager.save(iteration, args=ocp.args.Composite(**args, meta=ocp.args.JsonSave(meta)))

    def read_meta(self, step: int) -> dict:
        """The JSON item alone; raises CorruptCheckpoint if it is missing or unreadable."""
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[META]
            meta["iteration"], meta["config"], meta["fingerprint"], meta["buffer"]  # noqa: B018
        except Exception as e:  # a missing item, half a JSON file, a missing key
            raise CorruptCheckpoint(f"meta: {_reason(e)}")
        return meta

    def restore(self, step: int, abstract, with_buffer: bool = True) -> Restored:
        """Checkpoint `step` into the structure of `abstract` (the vmapped init's eval_shape)."""
        meta = self.read_meta(step)
        rest_abs, data_abs = split(abstract)
        targets = {STATE: stored(named(rest_abs))}
        if with_buffer and meta["buffer"]:
            targets[BUFFER] = stored(named(data_abs))
        _quiet_failed_reads()
        try:
            got = self.manager.restore(step, args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(_placed(t, self.sharding)) for name, t in targets.items()}))
        except Exception as e:  # orbax and tensorstore raise many kinds for damaged files
            raise CorruptCheckpoint(_reason(e))
        for name in targets:
            if set(got[name]) != set(targets[name]):
                raise CorruptCheckpoint(f"{name}: arrays differ from the code's state")
            bad = [k for k, v in fingerprints(got[name]).items() if v != meta["fingerprint"][name].get(k)]
            if bad:
                raise CorruptCheckpoint(f"{name}: {len(bad)} arrays do not match their fingerprints "
                                        f"(first: {bad[0]})")
        data = (unnamed(data_abs, with_empty(got[BUFFER], named(data_abs), self.sharding))
                if BUFFER in targets else None)
        return Restored(step, unnamed(rest_abs, with_empty(got[STATE], named(rest_abs), self.sharding)), data, meta)

    def restore_checked(self, step: int, abstract, check: Callable[[dict], None], with_buffer: bool = True) -> Restored:
        """`restore` after `check(meta)` (which raises ConfigError for a checkpoint of another
        run); CorruptCheckpoint when it is damaged."""
        check(self.read_meta(step))
        return self.restore(step, abstract, with_buffer)

    def restore_latest(self, abstract, check: Callable[[dict], None], with_buffer: bool = True, warn=None) -> Restored:
        """The newest readable checkpoint that passes `check`. A corrupt one is reported on
        stderr and the one before it tried."""
        warn = warn or (lambda msg: print(msg, file=sys.stderr))
        steps = self.steps()
        if not steps:
            raise ConfigError(f"{self.dir} holds no checkpoint")
        bad = []
        for s in reversed(steps):
            try:
                restored = self.restore_checked(s, abstract, check, with_buffer)
            except CorruptCheckpoint as e:
                warn(f"warning: checkpoint {s} is corrupt or incomplete ({e}); trying the one before")
                bad.append(s)
                continue
            if bad and not self._read_only:
                warn(f"warning: fell back to checkpoint {s}; moved the bad ones to {self.set_aside(bad)}")
            elif bad:
                warn(f"warning: fell back to checkpoint {s}")
            return restored
        raise ConfigError(f"no readable checkpoint in {self.dir} (tried {', '.join(map(str, bad))})")

    def read(self, step: int, prefix: str) -> dict:
        """`{name: numpy array}` of the saved state arrays whose names start with `prefix`
        (e.g. ".agent."), as saved: no target, so no program needs to be built for it. Every
        process reads the whole of each; fingerprints are checked (CorruptCheckpoint)."""
        meta = self.read_meta(step)
        _quiet_failed_reads()
        try:
            shapes = ocp.StandardCheckpointHandler().metadata(self.dir / str(step) / STATE)
            target = {k: np.zeros(m.shape, m.dtype) for k, m in shapes.items()}  # numpy leaves: numpy out
            got = self.manager.restore(step, args=ocp.args.Composite(
                **{STATE: ocp.args.StandardRestore(target)}))[STATE]
        except Exception as e:
            raise CorruptCheckpoint(_reason(e))
        wanted = {k: v for k, v in got.items() if k.startswith(prefix)}
        bad = [k for k, v in fingerprints(wanted).items() if v != meta["fingerprint"][STATE].get(k)]
        if bad:
            raise CorruptCheckpoint(f"{STATE}: {len(bad)} arrays do not match their fingerprints (first: {bad[0]})")
        return wanted

    def set_aside(self, steps) -> Path:
        """Move corrupt checkpoints out of the manager's directory (kept for inspection)."""
        where = self.run_dir / "checkpoints.corrupt"
        where.mkdir(exist_ok=True)
        for s in steps:
            target = where / str(s)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(self.dir / str(s)), str(target))
        if self._manager is not None:
            self._manager.reload()
        return where
