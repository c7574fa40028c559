"""Both agents' training chunk and evaluation lower for CUDA and TPU on this CPU (jax.export),
and call no custom call those platforms lack."""

import jax
import jax.numpy as jnp
import pytest

from bench import lowering
from purejaxbrc import program
from purejaxbrc.config import Experiment, RunConfig
from purejaxbrc.dqn import DQNConfig
from purejaxbrc.sac import SACConfig

LOOP = dict(total_iterations=40, warmup_iterations=20, eval_every=20, eval_episodes=2, batch_size=16,
            chunk_iterations=10, buffer_capacity=200, run_dir="/nonexistent/unused")
RUNS = {
    "sac": ("mjx", Experiment(RunConfig(tasks="CartpoleBalance,PendulumSwingup", episode_length=20, **LOOP),
                              SACConfig(critic_width=16, critic_depth=1, actor_width=16, num_atoms=11))),
    "dqn": ("minatar", Experiment(RunConfig(tasks="Breakout-MinAtar", num_envs=2, **LOOP),
                                  DQNConfig(critic_width=16, critic_depth=1, num_atoms=11, conv_channels=(4,)))),
}


@pytest.mark.parametrize("agent", sorted(RUNS))
def test_chunk_and_evaluation_lower_for_cuda_and_tpu(agent):
    kind, experiment = RUNS[agent]
    calls = lowering.exported_calls(program.build(program.plan(kind, experiment)), ("cuda", "tpu"))
    assert set(calls) == {"chunk", "evaluate"} and all(set(per) == {"cuda", "tpu"} for per in calls.values())
    assert lowering.unprovided(calls) == [], calls


def test_a_call_the_platform_lacks_is_named():
    """A Cholesky lowered for the CPU calls LAPACK, which neither accelerator has; for CUDA it
    calls cuSOLVER, which TPUs lack."""
    x = jax.ShapeDtypeStruct((4, 4), jnp.float32)
    on = {p: lowering.custom_calls(jax.export.export(jax.jit(jnp.linalg.cholesky), platforms=(p,))(x))
          for p in ("cpu", "cuda")}
    assert any(t.startswith("lapack_") for t in on["cpu"]) and any(t.startswith("cusolver_") for t in on["cuda"])
    calls = {"f": {"cuda": on["cpu"] + on["cuda"], "tpu": on["cuda"]}}
    missing = lowering.unprovided(calls)
    assert any(m.startswith("f on cuda: lapack_") for m in missing)
    assert any(m.startswith("f on tpu: cusolver_") for m in missing)
    assert not any(m.startswith("f on cuda: cusolver_") for m in missing)


def test_a_program_exported_for_another_platform_is_traced_for_it():
    """Choices made while tracing follow the export's platform: the CPU-only matmul gradient
    (an explicitly transposed input behind an optimization barrier) is in the CPU program only."""
    from purejaxbrc import backend
    from purejaxbrc.bronet import BroNet
    net, x = BroNet(jax.random.PRNGKey(0), 4, 8, 1), jnp.ones((3, 4))
    loss = jax.grad(lambda n: jnp.sum(n(x)))

    def module(platform):
        with backend.tracing_for(platform):
            return jax.export.export(jax.jit(lambda n: loss(n)), platforms=(platform,))(net).mlir_module()
    assert "optimization_barrier" in module("cpu")
    assert "optimization_barrier" not in module("cuda") and "optimization_barrier" not in module("tpu")
