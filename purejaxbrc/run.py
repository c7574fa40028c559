"""The thin host loop: compile once, call the same compiled chunk again and again, evaluate,
log. Everything between evaluations runs on the device without a host sync."""

import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxbrc.config import ConfigError
from purejaxbrc.runlog import RunLog, check_run_dir
from purejaxbrc.train import make_train


def enable_compilation_cache(path: str | None = None) -> None:
    """JAX's persistent compilation cache: a humanoid step compiles once per machine."""
    path = path or os.environ.get("PUREJAXBRC_CACHE", str(Path.home() / ".cache" / "purejaxbrc" / "jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def exit_on_config_error(fn):
    """Run `fn()`; a ConfigError becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def seed_keys(seed: int, num_seeds: int):
    """Seed `seed + i` has key PRNGKey(seed + i): a vmapped run equals separate runs."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])


def run(config, env, eval_env, agent, log=print):
    """Train `config.num_seeds` seeds in one program; write the run directory; return summary."""
    trainer = make_train(config, env, eval_env, agent)
    seeds = list(range(config.seed, config.seed + config.num_seeds))
    runlog = RunLog(config.run_dir, config.to_dict(), env.task_names, seeds, extra=dict(
        jax=jax.__version__, device=str(jax.devices()[0].device_kind), backend=jax.default_backend()))

    keys = seed_keys(config.seed, config.num_seeds)
    t0 = time.perf_counter()
    state = jax.jit(jax.vmap(trainer.init))(keys)
    it0 = jnp.int32(0)
    # Compile ahead of time so compile time is reported apart from run time.
    chunk = jax.jit(jax.vmap(trainer.chunk, in_axes=(0, None)), donate_argnums=0).lower(state, it0).compile()
    eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.eval_key, it0)
    evaluate = jax.jit(jax.vmap(trainer.evaluate)).lower(state.agent, eval_keys).compile()
    compile_s = time.perf_counter() - t0
    log(f"compiled in {compile_s:.1f}s: {env.num_tasks} tasks x {config.num_seeds} seeds, "
        f"chunk {config.chunk} iterations")

    start = time.perf_counter()
    it = 0
    while it < config.total_iterations:
        state, metrics = chunk(state, jnp.int32(it))
        it += config.chunk
        if it % config.eval_every == 0:
            eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.eval_key, jnp.int32(it))
            returns = np.asarray(evaluate(state.agent, eval_keys))  # [seeds, T]: the host sync
            wall = time.perf_counter() - start
            runlog.log_eval(it, it * config.num_envs, returns, wall,
                            {k: np.asarray(v) for k, v in metrics.items()})
            per_task = ", ".join(f"{t} {r:.1f}" for t, r in zip(env.task_names, returns.mean(0)))
            log(f"iter {it:>8d}  env-steps/task {it * config.num_envs:>9d}  {wall:7.1f}s  "
                f"mean eval {returns.mean():8.2f}  ({per_task})")
    wall = time.perf_counter() - start
    summary = runlog.write_summary(it, it * config.num_envs, wall, compile_s)
    log(f"done: mean eval return {summary['mean_eval_return']:.2f} in {wall:.1f}s "
        f"(+{compile_s:.1f}s compile); {config.run_dir}/summary.json")
    return summary, state
