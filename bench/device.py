"""The machine a benchmark runs on: its name, its CPU, its measured ceilings, and timers."""

import functools
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_slug() -> str:
    """`cpu-2core`, `nvidia-h200`: a file-name-safe name of the device."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu-{os.cpu_count()}core"
    return device.device_kind.lower().replace(" ", "-")


def timed(fn) -> float:
    """Wall seconds of `fn()`."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time of this process, all threads: over a wall interval, the cores it kept busy."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def matmul_rate(dtype: str, n: int, calls: int = 10) -> float:
    """FLOP/s of an `n`x`n` matmul in `dtype` on the default device: the median of `calls` jitted
    calls on random data (zeros would let hardware skip work)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(k2, (n, n), jnp.float32).astype(dtype)
    mm = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    mm(a, b).block_until_ready()
    seconds = sorted(timed(lambda: mm(a, b).block_until_ready()) for _ in range(calls))
    return 2 * n**3 / seconds[len(seconds) // 2]


def copy_bandwidth(megabytes: int, calls: int = 10) -> float:
    """Bytes/s read plus written by a jitted copy (`x + 1`) of `megabytes` of float32."""
    x = jax.random.normal(jax.random.PRNGKey(0), (megabytes * 2**20 // 4,), jnp.float32)
    copy = jax.jit(lambda x: x + 1).lower(x).compile()
    copy(x).block_until_ready()
    seconds = sorted(timed(lambda: copy(x).block_until_ready()) for _ in range(calls))
    return 2 * x.nbytes / seconds[len(seconds) // 2]


@functools.lru_cache
def peak_flops(dtype: str) -> tuple[float, str]:
    """The MFU denominator: the measured matmul rate of this device in `dtype` (on a GPU at
    8192^3, as `bench/suite.py ceilings` measures it; on a CPU at 1024^3)."""
    n = 1024 if jax.default_backend() == "cpu" else 8192
    return matmul_rate(dtype, n), f"median {dtype} {n}x{n} matmul measured in this process"


def peak_memory(compiled) -> tuple[int | None, str]:
    """The device's peak bytes in use where it reports them (GPU, TPU); else XLA's memory
    analysis of `compiled`; `(None, why)` when neither is available."""
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device memory_stats peak_bytes_in_use"
    m = compiled.memory_analysis()
    if m is None:
        return None, "no memory_stats and no memory_analysis on this backend"
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return int(total), "XLA memory_analysis of the chunk (arguments + outputs + temporaries - donated)"
