"""The platform a program is traced for. A few choices are made while tracing, for the kernels
each platform runs best (purejaxbrc.bronet's CPU matmul gradient and row means, the form of the
update loop in purejaxbrc.train): by JAX's default backend, or by the platform a program is
exported for (`tracing_for`, as bench/lowering.py exports the GPU and TPU programs on a CPU).
"""

import contextlib

import jax

_target: list[str] = []


def is_cpu() -> bool:
    """Whether the program being traced is for the CPU."""
    return (_target[-1] if _target else jax.default_backend()) == "cpu"


@contextlib.contextmanager
def tracing_for(platform: str):
    """Trace for `platform` ("cpu", "cuda", "rocm", "tpu") inside the block, whatever runs here."""
    _target.append(platform)
    try:
        yield
    finally:
        _target.pop()
