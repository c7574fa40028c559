"""Devices and processes: the population axis sharded over every device of every host.

- `initialize(run)`: joins the other processes of a multi-process run (`jax.distributed`):
  explicitly with --coordinator-address/--num-processes/--process-id, or as JAX detects it
  under SLURM (several tasks) and on multi-host TPU slices. A single process needs nothing.
- `member_mesh(population)`: a 1-D mesh over all devices; members are laid out in order, each
  device holding `population / devices` consecutive ones.
- `over_members(fn, ...)`: a per-member function run over the population, vmapped over each
  device's members inside a `shard_map`, so nothing crosses devices inside the compiled loop.
- Host reads (`to_host`, `gather`, `any_process`) gather across processes outside the loop.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxbrc.config import ConfigError

AXIS = "members"
MEMBERS = PartitionSpec(AXIS)  # leading axis split over the devices
SHARED = PartitionSpec()  # the same value on every device (iteration counters)


def _cluster_detected() -> bool:
    """Launched as several processes by SLURM, or on a multi-host TPU slice."""
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or "," in tpu_hosts


def initialize(run) -> None:
    """Join the run's other processes, if it has any. Call before anything touches a device."""
    if run.num_processes < 1 or not 0 <= run.process_id < run.num_processes:
        raise ConfigError(f"--process-id ({run.process_id}) must be in [0, --num-processes "
                          f"({run.num_processes}))")
    if run.num_processes > 1 and not run.coordinator_address:
        raise ConfigError("--num-processes > 1 needs --coordinator-address (host:port of process 0)")
    if jax.distributed.is_initialized():  # already joined (a second run in one process)
        return
    explicit = run.coordinator_address or run.num_processes > 1
    if not explicit and not _cluster_detected():
        return
    # CPU processes exchange data with gloo (GPUs and TPUs use their own collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address=run.coordinator_address,
                                   num_processes=run.num_processes, process_id=run.process_id)
    else:
        jax.distributed.initialize()  # JAX reads SLURM's or the TPU slice's environment


def barrier(name: str) -> None:
    """Wait until every process gets here."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_primary() -> bool:
    """Process 0 writes the run directory's logs; every process writes its checkpoint shards."""
    return jax.process_index() == 0


def check_divisible(population: int, devices: int, what: str) -> None:
    """ConfigError naming the nearest valid population sizes."""
    if population % devices == 0:
        return
    lower, upper = population // devices * devices, -(-population // devices) * devices
    sizes = " or ".join(str(s) for s in (lower, upper) if s > 0)
    raise ConfigError(f"the population of {population} members ({what}) does not divide over "
                      f"{devices} devices; use a population of {sizes} (or a multiple of {devices})")


def member_mesh(population: int, what: str = "seeds x variants") -> Mesh:
    devices = jax.devices()
    check_divisible(population, len(devices), what)
    return Mesh(np.array(devices), (AXIS,))


def member_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, MEMBERS)


def global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The host value `value` (the same on every process) as one array over the mesh; each
    process places only its own devices' part."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def over_members(fn, mesh: Mesh, in_specs: tuple, local_members: int, batched: bool = True):
    """`fn` (one member's arguments -> one member's outputs) over the population.

    `in_specs`: per argument, MEMBERS (a leading member axis) or SHARED. Every output has a
    leading member axis. A device's members are vmapped (`batched`), or else run one after
    another (`lax.map`), each exactly as a device holding one member runs it: XLA's kernels
    round differently at different batch sizes, so only the latter gives bit-identical numbers
    for any number of devices. A device holding one member runs `fn` itself on the squeezed
    arguments: a vmap of size one turns every dot into a batched dot, which XLA:CPU runs more
    slowly."""
    def local(*args):
        members = [jax.tree.map(lambda x: x[0], a) if s == MEMBERS else a for a, s in zip(args, in_specs)]
        if local_members == 1:
            return jax.tree.map(lambda x: x[None], fn(*members))
        if batched:
            return jax.vmap(fn, in_axes=tuple(0 if s == MEMBERS else None for s in in_specs))(*args)
        per_member = [i for i, s in enumerate(in_specs) if s == MEMBERS]

        def one(sliced):
            full = list(args)
            for i, x in zip(per_member, sliced):
                full[i] = x
            return fn(*full)
        return jax.lax.map(one, [args[i] for i in per_member])
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=MEMBERS, check_vma=False)


def to_host(tree):
    """Every process gets the whole of `tree` (arrays with a member axis) as numpy."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def gather(value) -> np.ndarray:
    """`[processes, ...]`: `value` (a host scalar or array) from every process, on every process."""
    if jax.process_count() == 1:
        return np.asarray(value)[None]
    return np.asarray(multihost_utils.process_allgather(value))


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (e.g. a signal only one received)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(gather(np.array([flag]))))
