"""brax's SAC (`brax.training.agents.sac`) on the same Playground tasks, for the side-by-side.

brax trains one task and one seed per `train()` call, so several are run one after another.
Each call runs `num_evals=3`: the initial evaluation, a first training epoch (which includes
compiling) and a second one, whose `training/sps` is brax's own steady-state measure of
env-steps/s; that second epoch is what is compared.

Matched: tasks, seeds, env steps per task, one environment per task, 1000-step episodes,
batch per task, gradient steps per env step (`grad_updates_per_step` = UTD), learning rate,
discount, Polyak rate, warm-up transitions before learning (`min_replay_size`), two critics,
and network width and depth: brax's MLPs get as many `width`-wide hidden layers as our
BroNets have matmuls before their heads. Not matched (the methods differ): brax's critic is a
plain ReLU MLP with a scalar Q, ours a residual LayerNorm BroNet with 101-atom categorical
heads; brax uses Adam, we AdamW; brax prefills with its initial policy, we with uniform
actions.

Evaluation is not part of the measured work (the fused loop is timed without it too), so brax's
evaluator is replaced by one that only passes the training metrics on: otherwise its 1000-step
evaluation episodes dominate the wall time of these short runs.
"""

import contextlib
import functools
import time

import jax
import jax.numpy as jnp


def _jax_compat():
    """brax 0.14 still calls `jax.device_put_replicated`, which jax 0.10 removed: supply it (a
    stacked copy per device; pmap shards it)."""
    try:
        jax.device_put_replicated
    except AttributeError:
        jax.device_put_replicated = lambda tree, devices: jax.tree.map(
            lambda x: jnp.stack([jnp.asarray(x)] * len(devices)), tree)


def measure(task: str, seed: int, *, env_steps: int, warmup: int, width: int, hidden_layers: int,
            batch_size: int, utd: int, episode_length: int = 1000) -> dict:
    # brax is imported here: only this comparison needs it, and its import takes seconds.
    from brax.training.agents.sac import networks as sac_networks
    from brax.training.agents.sac import train as sac
    from mujoco_playground import wrapper

    from purejaxbrc.envs.mjx import load_task

    _jax_compat()
    epochs = []

    def progress(step, metrics):
        if "training/sps" in metrics:
            epochs.append(float(metrics["training/sps"]))

    t0 = time.perf_counter()
    with _without_evaluation():
        sac.train(
            environment=load_task(task), wrap_env_fn=wrapper.wrap_for_brax_training,
            num_timesteps=env_steps, episode_length=episode_length, num_envs=1, num_eval_envs=1,
            learning_rate=3e-4, discounting=0.99, tau=0.005, seed=seed, batch_size=batch_size,
            grad_updates_per_step=utd, min_replay_size=warmup, max_replay_size=env_steps,
            num_evals=3, normalize_observations=False, deterministic_eval=True,
            network_factory=functools.partial(sac_networks.make_sac_networks,
                                              hidden_layer_sizes=(width,) * hidden_layers),
            progress_fn=progress)
    total_s = time.perf_counter() - t0
    if len(epochs) < 2:
        raise RuntimeError(f"brax SAC reported {len(epochs)} training epochs, expected 2")
    steps_per_epoch = -(-(env_steps - warmup) // 2)
    return dict(task=task, seed=seed, env_steps_per_s=epochs[-1], timed_env_steps=steps_per_epoch,
                timed_s=steps_per_epoch / epochs[-1], first_epoch_env_steps_per_s=epochs[0],
                total_s=total_s)


@contextlib.contextmanager
def _without_evaluation():
    from brax.training import acting

    class PassThrough(acting.Evaluator):
        def run_evaluation(self, policy_params, training_metrics, aggregate_episodes=True):
            return dict(training_metrics)

    original = acting.Evaluator
    acting.Evaluator = PassThrough
    try:
        yield
    finally:
        acting.Evaluator = original
