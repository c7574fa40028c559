"""purejaxbrc: BRC (Bigger, Regularized, Categorical) as one compiled JAX program."""

from purejaxbrc import lapack as _lapack

# Batched LAPACK calls (MJX's constraint solver, orthogonal initialisation) that jaxlib would
# spread over XLA:CPU's thread pool while blocking a pool thread can deadlock a pool of one
# thread per core; purejaxbrc.lapack keeps them inline so that the default pool is safe.
_lapack.install()

__version__ = "0.1.0"
