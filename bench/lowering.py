"""Lowering for platforms that are not here: `jax.export` traces a program for `cuda` or `tpu` on
any machine, and the exported module names every custom call it makes. A custom call that the
target platform does not provide (a LAPACK call lowered for the CPU, say) would fail there only
when the program is compiled, so it is checked here instead, before any accelerator time.

    calls = exported_calls(built, ("cuda", "tpu"))   # {program: {platform: [custom call targets]}}
    missing = unprovided(calls)                       # ["chunk on tpu: lapack_spotrf_ffi", ...]
"""

import re

import jax

from purejaxbrc import backend, program

# XLA's own targets, which every platform compiles (shard_map's sharding annotations among them).
EVERYWHERE = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape", "annotate_device_placement",
                        "shape_assertion", "AllocateBuffer", "ApproxTopK", "stablehlo.dynamic_approx_top_k",
                        "stablehlo.dynamic_reduce_window", "stablehlo.dynamic_rng_bit_generator",
                        "stablehlo.dynamic_top_k"})
TPU = frozenset({"tpu_custom_call", "Qr", "ProductOfElementaryHouseholderReflectors", "LuDecomposition", "Eigh"})
CUDA_PREFIXES = ("cu_", "cusolver_", "cusparse_", "cublas", "mosaic_gpu")


def provided(platform: str, target: str) -> bool:
    """Whether `platform`'s jaxlib plugin (or XLA itself) implements custom call `target`."""
    if target in EVERYWHERE:
        return True
    if platform == "cuda":
        return target.startswith(CUDA_PREFIXES)
    if platform == "tpu":
        return target in TPU
    raise ValueError(f"unknown platform {platform!r}")


def custom_calls(exported: jax.export.Exported) -> list[str]:
    """The distinct custom call targets of an exported module."""
    text = exported.mlir_module()
    return sorted(set(re.findall(r"stablehlo\.custom_call @([\w.$\-]+)", text))
                  | set(re.findall(r'call_target_name = "([^"]+)"', text)))


def exported_calls(built: program.Built, platforms=("cuda", "tpu")) -> dict:
    """`{"chunk" | "evaluate": {platform: custom call targets}}` of the built run's training chunk
    and evaluation, each traced and exported for one platform at a time (a module lowered for
    several holds every platform's branch; choices made while tracing follow the platform)."""
    prog = built.program
    state = prog.abstract_state()
    i32 = jax.ShapeDtypeStruct((), jax.numpy.int32)
    out = {}
    for name, fn, args in (("chunk", prog.chunk_fn, (state, i32, i32)), ("evaluate", prog.evaluate_fn, (state, i32))):
        out[name] = {}
        for p in platforms:
            # A new function object: JAX caches a function's trace, and this one must be traced
            # afresh, with the platform's own kernels.
            with backend.tracing_for(p):
                out[name][p] = custom_calls(jax.export.export(jax.jit(lambda *a: fn(*a)), platforms=(p,))(*args))
    return out


def unprovided(calls: dict) -> list[str]:
    """`"<program> on <platform>: <target>"` for every call its platform does not provide."""
    return [f"{name} on {platform}: {target}" for name, per in calls.items() for platform, targets in per.items()
            for target in targets if not provided(platform, target)]
