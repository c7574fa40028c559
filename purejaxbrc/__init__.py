"""purejaxbrc: BRC (Bigger, Regularized, Categorical) as one compiled JAX program."""

import os as _os

# XLA's CPU runtime runs independent operations concurrently on an intra-op pool with one
# thread per core. Batched LAPACK kernels (MJX's Cholesky, the QR of orthogonal init) block
# their pool thread while waiting for sub-work queued on the same pool, so on a 2-core machine
# two of them running at once leave no thread to do that work: a deadlock, every thread idle.
# XLA sizes the pool from NPROC when it is set; a pool larger than the number of such kernels
# that can be ready at once (about two per physics group) avoids it. Must precede JAX's CPU
# client creation, hence here; it does not change results, and GPU runs do not use this pool.
if "NPROC" not in _os.environ:
    _os.environ["NPROC"] = str(max(32, _os.cpu_count() or 1))

__version__ = "0.1.0"
