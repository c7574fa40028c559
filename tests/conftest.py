import os
from pathlib import Path

import purejaxbrc  # noqa: F401  (sets the XLA CPU flag before JAX starts)
from purejaxbrc.run import enable_compilation_cache

# The persistent cache makes repeated test runs (and tests sharing programs) compile once.
enable_compilation_cache(os.environ.get("PUREJAXBRC_CACHE", str(Path(__file__).parent.parent / ".jax_cache")))
