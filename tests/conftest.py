import os
from pathlib import Path

# The tests compile far more than they run (a tiny MJX training chunk: about 30 s to compile,
# 0.05 s to run): LLVM at -O0 compiles about a third faster. It changes only rounding, and every
# test compares runs that share this setting (subprocesses inherit it) or allows for rounding.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import purejaxbrc  # noqa: E402, F401  (sets the XLA CPU flag before JAX starts)
from purejaxbrc.run import enable_compilation_cache  # noqa: E402

# The persistent cache makes repeated test runs (and tests sharing programs) compile once.
enable_compilation_cache(os.environ.get("PUREJAXBRC_CACHE", str(Path(__file__).parent.parent / ".jax_cache")))
