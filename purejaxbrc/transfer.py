"""Transfer: learn new tasks starting from a pretrained multi-task model (BRC's third result).

A transfer run is an ordinary run of the pretrained run's kind planned with a `TransferConfig`
(purejaxbrc.config): its networks keep the pretrained architecture (the critic's task
embedding, the padded observation and action sizes, every width). Its tasks may be new ones,
pretraining ones, or both. Modes:

- `finetune`: actor, critic and target critic start from the checkpoint; every parameter
  trains; optimiser states start fresh.
- `embedding`: the same start, but the critic's trunk and heads (and the target critic's) stay
  frozen bit for bit: only the new tasks' embedding rows train, besides the actor and the
  temperature (SAC). A pretraining task's row stays as it was learnt.
- `scratch`: the same program and budget from a fresh initialisation: the baseline.

SAC's temperature restarts at `--init-alpha` (`--temperature reset`, the default) or is carried
over (`carry`). A pretrained temperature has annealed to the pretraining tasks' entropy target
(alpha about 0.002 after 30k iterations on two control tasks): kept, it leaves a new task's
policy almost without exploration (README, "Study").

Embedding rows: a pretraining task keeps its learnt row; a new task's row starts as the mean of
the pretrained rows (`--new-rows mean`, the default: a direction inside the span the trunk was
trained on, so a frozen trunk first sees an in-distribution input, namely an average task) or
fresh as at pretraining (`--new-rows fresh`: nearly orthogonal to every learnt row). The
reward normaliser and the replay buffers start empty. Member `m` of the transfer run starts
from member `m mod M` of the pretrained run's `M` members (the run says how many distinct ones
it used: with one pretrained seed, the transfer seeds vary only the transfer itself).

What maps a pretrained agent state onto a new one is the kind's (`Kind.transferred`); the
pretrained arrays are read from the checkpoint by name, without rebuilding the pretrained run.
"""

import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from purejaxbrc import distributed, kinds, program, rundir
from purejaxbrc.checkpoint import list_steps, unnamed
from purejaxbrc.config import ConfigError, Experiment, TransferConfig, flag
from purejaxbrc.distributed import MEMBERS


def pretrained(run_dir: str) -> rundir.Stored:
    """A pretrained run, its experiment's agent holding the values it trained with (a
    one-variant sweep's included)."""
    stored = rundir.read_config(run_dir)
    if len(stored.variants) == 1:
        agent = dataclasses.replace(stored.experiment.agent, **stored.variants[0])
        stored = stored._replace(experiment=dataclasses.replace(stored.experiment, agent=agent))
    return stored


def plan(kind: str, experiment: Experiment, transfer: TransferConfig) -> program.Plan:
    """`program.plan` with `transfer` completed from the pretrained run and every input checked
    against it (ConfigError, one line): the run exists and is of this kind with a readable
    checkpoint and a task embedding, the architecture is the pretrained one, and every task fits
    the pretrained padded sizes."""
    p = program.plan(kind, experiment)
    experiment, t = p.experiment, transfer
    if not t.source:
        raise ConfigError("--from RUN_DIR is required: the pretrained run to start from")
    source = pretrained(t.source)
    if source.kind is not p.kind:
        raise ConfigError(f"--from {t.source} holds a {source.kind.name} run; this is a {kind} transfer")
    if source.transfer is not None:
        raise ConfigError(f"--from {t.source} is itself a transfer run; transfer from a pretrained run")
    if len(source.variants) > 1:
        raise ConfigError(f"--from {t.source} is a sweep of {len(source.variants)} variants; transfer "
                          f"from a run of one variant (rerun the chosen one)")
    steps = list_steps(t.source)
    if not steps:
        raise ConfigError(f"--from {t.source} has no checkpoint")
    if t.checkpoint is not None and t.checkpoint not in steps:
        raise ConfigError(f"--checkpoint {t.checkpoint}: no such checkpoint in {t.source}; there are: "
                          f"{', '.join(map(str, steps))}")
    theirs_config = source.experiment.agent
    for field in dataclasses.fields(experiment.agent):
        mine, theirs = getattr(experiment.agent, field.name), getattr(theirs_config, field.name)
        if field.name not in experiment.agent.SWEEPABLE and mine != theirs:
            raise ConfigError(f"{flag(field.name)} {mine} differs from the pretrained model's {theirs}: a "
                              f"transferred model keeps its architecture")
    if t.mode == "scratch" and t.temperature == "carry":
        raise ConfigError("--temperature carry: a scratch run carries nothing over from the pretrained model")
    carried = p.kind.carried_values(t)
    if t.mode != "scratch":  # what the transferred agent starts from cannot differ or be swept
        swept = {k for v in p.variants for k in v}
        for field, what in carried.items():
            if field in swept:
                raise ConfigError(f"--sweep {field}: a {t.mode} transfer starts from the pretrained "
                                  f"model's {what}; sweep it with --mode scratch only")
            if getattr(experiment.agent, field) != getattr(theirs_config, field):
                raise ConfigError(f"{flag(field)} {getattr(experiment.agent, field)} differs from the pretrained "
                                  f"model's {getattr(theirs_config, field)}: a {t.mode} transfer starts from its "
                                  f"{what}")
    source_names = kinds.resolve_tasks(p.kind, source.experiment.run.tasks)
    if len(source_names) < 2:
        raise ConfigError(f"--from {t.source} trained one task, without a task embedding; transfer "
                          f"needs a multi-task model")
    obs_shape, num_actions = p.kind.padded_sizes(source_names)
    p.kind.check_fits(p.names, obs_shape, num_actions)
    step = t.checkpoint if t.checkpoint is not None else max(steps)
    if experiment.run.resume and t.checkpoint is None:  # the step this run started from, not a newer one
        previous = Path(experiment.run.run_dir) / "config.json"
        if previous.exists():
            step = json.loads(previous.read_text()).get("transfer", {}).get("source_step", step)
    return p.with_transfer(dataclasses.replace(t, source_tasks=tuple(source_names), source_step=step,
                                               obs_shape=obs_shape, num_actions=num_actions))


def source_agent(built: program.Built, abstract):
    """The pretrained agent arrays the population starts from, read and checked against the
    transfer run's state shapes (`abstract`) before anything compiles: numpy leaves
    `[population, ...]` (member `m` takes pretrained member `m mod M`). None for a run that is no
    transfer, or a scratch one."""
    t, pop = built.plan.transfer, built.population
    if t is None or t.mode == "scratch":
        return None
    arrays = rundir.read_agent(t.source, t.source_step)  # numpy [source members, ...] by name
    try:
        source = unnamed(abstract.agent, arrays)
    except KeyError as e:
        raise ConfigError(f"checkpoint {t.source_step} of {t.source} holds no agent array {e}: it is not "
                          f"of this code's {built.plan.kind.name} agent")
    members = jax.tree.leaves(source)[0].shape[0]
    if jax.process_index() == 0:  # seeds sharing a pretrained model are not independent pretraining samples
        print(f"transfer: {pop.size} members start from {min(members, pop.size)} distinct pretrained members "
              f"of {t.source} (iteration {t.source_step})", file=sys.stderr)
    source = jax.tree.map(lambda x: x[np.arange(pop.size) % members], source)
    mapped = jax.eval_shape(_mapping(built), abstract, source)
    if jax.tree.structure(mapped.agent) != jax.tree.structure(abstract.agent):
        raise ConfigError(f"checkpoint {t.source_step} of {t.source}: the {built.plan.kind.name} kind maps it onto "
                          f"an agent of another structure than this run's")
    for (path, new), old in zip(jax.tree_util.tree_flatten_with_path(mapped.agent)[0], jax.tree.leaves(abstract.agent)):
        if (new.shape, new.dtype) != (old.shape, old.dtype):
            raise ConfigError(f"checkpoint {t.source_step} of {t.source}: {jax.tree_util.keystr(path)} is "
                              f"{new.dtype}{list(new.shape)}, the transferred model needs {old.dtype}{list(old.shape)}")
    return source


def _mapping(built: program.Built):
    """`(state, source agent) -> state` over the population: the kind's mapping per member."""
    t, kind = built.plan.transfer, built.plan.kind
    rows = jnp.asarray(t.rows(built.plan.names))

    def one(state, src):
        return state._replace(agent=kind.transferred(state.agent, src, rows, t))
    return built.program.over_members(one, (MEMBERS, MEMBERS))


def initial_state(built: program.Built, fresh_state, source=None):
    """The population's first state: `fresh_state` with each member's agent mapped from
    `source` (`source_agent`), or `fresh_state` itself when there is none."""
    if source is None:
        return fresh_state
    source = jax.tree.map(lambda x: distributed.global_array(x, built.program.sharding), source)
    return jax.jit(_mapping(built), donate_argnums=0)(fresh_state, source)
