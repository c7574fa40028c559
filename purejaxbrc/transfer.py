"""Transfer: learn new tasks starting from a pretrained multi-task model (BRC's third result).

A transfer run is an ordinary run of the pretrained run's kind whose config carries a
`TransferConfig`, and whose networks keep the pretrained architecture: the critic's task
embedding, the padded observation and action sizes, every width. Its tasks may be new ones,
pretraining ones, or both. Modes:

- `finetune`: actor, critic, target critic and temperature start from the checkpoint; every
  parameter trains; optimiser states start fresh.
- `embedding`: the same start, but the critic's trunk and heads (and the target critic's) stay
  frozen bit for bit: only the new tasks' embedding rows train, besides the actor and the
  temperature (SAC). A pretraining task's row stays as it was learnt.
- `scratch`: the same program and budget from a fresh initialisation: the baseline.

Embedding rows: a pretraining task keeps its learnt row; a new task's row starts as the mean of
the pretrained rows (`--new-rows mean`, the default: a direction inside the span the trunk was
trained on, so a frozen trunk first sees an in-distribution input, namely an average task) or
fresh as at pretraining (`--new-rows fresh`: nearly orthogonal to every learnt row). The
reward normaliser and the replay buffers start empty. Member `m` of the transfer run starts
from member `m mod M` of the pretrained run's `M` members (the run says how many distinct ones
it used: with one pretrained seed, the transfer seeds vary only the transfer itself).
"""

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from purejaxbrc import distributed
from purejaxbrc.config import ConfigError, Experiment, flag

MODES = ("finetune", "embedding", "scratch")


@dataclass(frozen=True)
class TransferConfig:
    """Where a transfer run starts from."""

    source: Annotated[str, tyro.conf.arg(name="from")] = ""
    """The pretrained run's directory."""
    checkpoint: int | None = None
    """Its checkpoint (iteration) to start from; default: the latest readable one."""
    mode: Literal["finetune", "embedding", "scratch"] = "finetune"
    new_rows: Literal["mean", "fresh"] = "mean"
    """How a new task's embedding row starts: the mean of the pretrained rows, or fresh."""
    # Read from the pretrained run when this run starts, and kept in config.json:
    source_tasks: tyro.conf.Suppress[tuple[str, ...]] = ()
    source_step: tyro.conf.Suppress[int] = -1
    obs_shape: tyro.conf.Suppress[tuple[int, ...]] = ()
    """The pretrained padded observation shape: `(size,)` for MJX, `(H, W, C)` for games."""
    num_actions: tyro.conf.Suppress[int] = 0
    """The pretrained padded action size (MJX) or action count (games)."""


@dataclass(frozen=True)
class TransferExperiment(Experiment):
    """A run of either kind that starts from a pretrained one (experiments/brc_transfer.py)."""

    transfer: tyro.conf.OmitArgPrefixes[TransferConfig] = TransferConfig()


def pretrained(run_dir: str):
    """`(kind, experiment, variants, stored config.json)` of a pretrained run, the experiment's
    agent holding the values it trained with (a one-variant sweep's included)."""
    from purejaxbrc.evaluate import load_config
    kind, source, variants, stored = load_config(Path(run_dir))
    if len(variants) == 1:
        source = replace(source, agent=replace(source.agent, **variants[0]))
    return kind, source, variants, stored


def with_source(experiment: Experiment, kind: str, names, variants) -> Experiment:
    """`experiment` (whose resolved sweep is `variants`) with its TransferConfig completed from
    the pretrained run, every input checked against it (ConfigError, one line): the run exists
    and is of this kind with a readable checkpoint and a task embedding, the architecture is
    the pretrained one, and every task fits the pretrained padded sizes."""
    from purejaxbrc.checkpoint import Checkpoints
    t = experiment.transfer
    if not t.source:
        raise ConfigError("--from RUN_DIR is required: the pretrained run to start from")
    source_kind, source, source_variants, stored = pretrained(t.source)
    if source_kind != kind:
        raise ConfigError(f"--from {t.source} holds a {source_kind} run; this is a {kind} transfer")
    if "transfer" in stored:
        raise ConfigError(f"--from {t.source} is itself a transfer run; transfer from a pretrained run")
    if len(source_variants) > 1:
        raise ConfigError(f"--from {t.source} is a sweep of {len(source_variants)} variants; transfer "
                          f"from a run of one variant (rerun the chosen one)")
    steps = Checkpoints(t.source).steps()
    if not steps:
        raise ConfigError(f"--from {t.source} has no checkpoint")
    if t.checkpoint is not None and t.checkpoint not in steps:
        raise ConfigError(f"--checkpoint {t.checkpoint}: no such checkpoint in {t.source}; there are: "
                          f"{', '.join(map(str, steps))}")
    for field in type(experiment.agent).__dataclass_fields__:
        mine, theirs = getattr(experiment.agent, field), getattr(source.agent, field)
        if field not in experiment.agent.SWEEPABLE and mine != theirs:
            raise ConfigError(f"{flag(field)} {mine} differs from the pretrained model's {theirs}: a "
                              f"transferred model keeps its architecture")
    if t.mode != "scratch":
        # The pretrained critic's logits are on its own support and discount, and its
        # temperature is carried over: these values cannot differ or be swept.
        swept = {k for v in variants for k in v}
        for field in ("v_max", "gamma", "init_alpha"):
            if field in swept:
                raise ConfigError(f"--sweep {field}: a {t.mode} transfer starts from the pretrained "
                                  f"model's {field}; sweep it with --mode scratch only")
            if getattr(experiment.agent, field, None) != getattr(source.agent, field, None):
                raise ConfigError(f"{flag(field)} {getattr(experiment.agent, field)} differs from the pretrained "
                                  f"model's {getattr(source.agent, field)}: a {t.mode} transfer starts from its "
                                  f"value support, discount and temperature")
    from purejaxbrc import kinds
    source_names = kinds.get(kind).resolve_tasks(source.run.tasks)
    if len(source_names) < 2:
        raise ConfigError(f"--from {t.source} trained one task, without a task embedding; transfer "
                          f"needs a multi-task model")
    obs_shape, num_actions = _padded_sizes(kind, source_names)
    _check_fits(kind, names, obs_shape, num_actions)
    step = t.checkpoint if t.checkpoint is not None else max(steps)
    if experiment.run.resume and t.checkpoint is None:  # the step this run started from, not a newer one
        previous = Path(experiment.run.run_dir) / "config.json"
        if previous.exists():
            step = json.loads(previous.read_text()).get("transfer", {}).get("source_step", step)
    return replace(experiment, transfer=replace(t, source_tasks=tuple(source_names), source_step=step,
                                                obs_shape=obs_shape, num_actions=num_actions))


def _padded_sizes(kind: str, names) -> tuple[tuple[int, ...], int]:
    if kind == "mjx":
        from purejaxbrc.envs.mjx import load_task
        envs = [load_task(n) for n in names]
        return (max(int(e.observation_size) for e in envs),), max(int(e.action_size) for e in envs)
    from purejaxbrc.envs.gymnax import GymnaxTaskSet
    env = GymnaxTaskSet(names)
    return tuple(env.obs_shape), env.action_size


def _check_fits(kind: str, names, obs_shape, num_actions: int) -> None:
    """ConfigError naming the first task and size that the pretrained model cannot take."""
    if kind == "mjx":
        from purejaxbrc.envs.mjx import load_task
        for name in names:
            env = load_task(name)
            for what, size, padded in (("observation", int(env.observation_size), obs_shape[0]),
                                       ("action", int(env.action_size), num_actions)):
                if size > padded:
                    raise ConfigError(f"task {name} has {size} {what} entries, more than the pretrained "
                                      f"model's padded {what} size {padded}")
        return
    from purejaxbrc.envs.gymnax import GymnaxTaskSet
    for name in names:
        env = GymnaxTaskSet([name])
        shape = tuple(env.obs_shape)
        if len(shape) != len(obs_shape) or shape[:-1] != tuple(obs_shape[:-1]):
            raise ConfigError(f"task {name} has observations of shape {shape}; the pretrained model "
                              f"takes {tuple(obs_shape)}")
        if shape[-1] > obs_shape[-1]:
            what = "observation entries" if len(shape) == 1 else "observation channels"
            raise ConfigError(f"task {name} has {shape[-1]} {what}, more than the pretrained model's {obs_shape[-1]}")
        if env.action_size > num_actions:
            raise ConfigError(f"task {name} has {env.action_size} actions, more than the pretrained "
                              f"model's {num_actions}")


def source_rows(transfer: TransferConfig, names) -> np.ndarray:
    """`[T]` int: each task's row in the pretrained embedding table, -1 for a new task."""
    return np.array([transfer.source_tasks.index(n) if n in transfer.source_tasks else -1 for n in names])


def trainable_rows(transfer: TransferConfig, names):
    """The embedding mode's mask builder: `network -> mask` (1 for the new tasks' embedding
    rows, 0 for every other parameter)."""
    new = jnp.asarray(source_rows(transfer, names) < 0, jnp.float32)[:, None]

    def mask(network):
        zeros = jax.tree.map(lambda x: jnp.zeros((), x.dtype), network)
        return eqx.tree_at(lambda n: n.embedding.table, zeros, new)
    return mask


def _table(fresh, source, rows, new_rows: str):
    """The transfer run's embedding table: pretrained rows where `rows >= 0`, else new rows."""
    init = jnp.broadcast_to(jnp.mean(source, axis=0), fresh.shape) if new_rows == "mean" else fresh
    return jnp.where((rows >= 0)[:, None], source[jnp.maximum(rows, 0)], init)


def transferred(fresh, source, rows, new_rows: str):
    """One member's agent state: `source`'s networks and temperature with each embedding
    table rebuilt for the new tasks, and `fresh`'s optimiser states (shaped like the
    parameters, so valid for them)."""
    def network(fresh_net, source_net):
        table = _table(fresh_net.embedding.table, source_net.embedding.table, rows, new_rows)
        return eqx.tree_at(lambda n: n.embedding.table, source_net, table)
    if hasattr(fresh, "critic"):  # SAC
        return fresh._replace(actor=source.actor, critic=network(fresh.critic, source.critic),
                              target_critic=network(fresh.target_critic, source.target_critic),
                              log_alpha=source.log_alpha)
    return fresh._replace(net=network(fresh.net, source.net), target_net=network(fresh.target_net, source.target_net))


def initial_state(experiment: Experiment, names, program, fresh_state):
    """The population's first state: `fresh_state` with each member's agent taken from the
    pretrained checkpoint (scratch: `fresh_state` itself)."""
    t = experiment.transfer
    if t.mode == "scratch":
        return fresh_state
    from purejaxbrc.evaluate import load
    got = load(t.source, t.source_step)
    source = distributed.to_host(got.restored.rest.agent)  # [source members, ...]
    members = jax.tree.leaves(source)[0].shape[0]
    pick = np.arange(program.population.size) % members
    if jax.process_index() == 0:  # seeds sharing a pretrained model are not independent pretraining samples
        print(f"transfer: {program.population.size} members start from {min(members, program.population.size)} "
              f"distinct pretrained members of {t.source} (iteration {t.source_step})", file=sys.stderr)
    source = jax.tree.map(lambda x: distributed.global_array(np.asarray(x)[pick], program.sharding), source)
    rows = jnp.asarray(source_rows(t, names))
    from purejaxbrc.distributed import MEMBERS

    def one(state, src):
        return state._replace(agent=transferred(state.agent, src, rows, t.new_rows))
    return jax.jit(program.over_members(one, (MEMBERS, MEMBERS)), donate_argnums=0)(fresh_state, source)
