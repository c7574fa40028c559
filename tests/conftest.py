import importlib.util
import os
from pathlib import Path

# The tests compile far more than they run (a tiny MJX training chunk: about 30 s to compile,
# 0.05 s to run), and on the CPU LLVM at -O0 compiles about a third faster. It may round
# differently (no FMA contraction, say), so comparisons inside one test process are of two
# programs both built at -O0; the sharding tests' subprocesses, bit-exact across device counts as
# the README promises, set their own XLA_FLAGS and compile at the default level users run.
# On a GPU or TPU the flag would slow their kernels instead: it applies to the CPU only, decided
# before JAX starts (from JAX_PLATFORMS, else from the accelerator plugins installed).
FAST_COMPILE = "--xla_backend_optimization_level=0"
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def cpu_backend() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


if cpu_backend() and "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):  # a user's choice wins
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import purejaxbrc  # noqa: E402, F401  (installs purejaxbrc.lapack, as users get it)
from purejaxbrc.program import enable_compilation_cache  # noqa: E402

# The persistent cache makes repeated test runs (and tests sharing programs) compile once.
enable_compilation_cache(os.environ.get("PUREJAXBRC_CACHE", str(Path(__file__).parent.parent / ".jax_cache")))
