"""purejaxbrc: BRC (Bigger, Regularized, Categorical) as one compiled JAX program."""

import os as _os

# jaxlib 0.10's CPU runtime deadlocks (every thread idle, the result never ready) on programs
# that mix MJX physics with network code when its concurrency-optimised scheduler is on;
# turning that scheduler off fixed every hang we reproduced. It must be set before JAX
# creates its CPU client, hence here. The flag only affects the CPU backend.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" {_FLAG}=false").strip()

__version__ = "0.1.0"
