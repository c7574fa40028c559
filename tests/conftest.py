import os
from pathlib import Path

# The tests compile far more than they run (a tiny MJX training chunk: about 30 s to compile,
# 0.05 s to run), and LLVM at -O0 compiles about a third faster. It may round differently (no
# FMA contraction, say), so comparisons inside one test process are of two programs both built
# at -O0; the sharding tests' subprocesses, bit-exact across device counts as the README
# promises, set their own XLA_FLAGS and compile at the default level users run.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):  # a user's choice wins
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import purejaxbrc  # noqa: E402, F401  (installs purejaxbrc.lapack, as users get it)
from purejaxbrc.run import enable_compilation_cache  # noqa: E402

# The persistent cache makes repeated test runs (and tests sharing programs) compile once.
enable_compilation_cache(os.environ.get("PUREJAXBRC_CACHE", str(Path(__file__).parent.parent / ".jax_cache")))
