"""The kinds of run, named by run_info.json's `kind`: how to check an experiment and build its
environments and agent, for the scripts and for rebuilding a run from its directory
(purejaxbrc.evaluate, experiments/brc_transfer.py).

- "mjx": experiments/brc_mjx.py, SAC (`sac.SACConfig`) on MuJoCo Playground control tasks
- "minatar": experiments/brc_minatar.py, categorical double Q (`dqn.DQNConfig`) on gymnax games
"""

import dataclasses
from typing import Callable, NamedTuple

from purejaxbrc import sweep
from purejaxbrc.config import ConfigError, Experiment, RunConfig, validate_run, with_defaults


def _transfer_options(experiment: Experiment, names) -> dict:
    """A transfer run's networks keep the pretrained architecture: its task embedding (even for
    one task) and, in the embedding mode, everything but the new tasks' rows frozen."""
    t = getattr(experiment, "transfer", None)
    if t is None:
        return {}
    from purejaxbrc import transfer
    return dict(embedding=True, trainable=transfer.trainable_rows(t, names) if t.mode == "embedding" else None)


def build_mjx(experiment: Experiment, names):
    """`(env, eval_env, agent)` of an MJX run."""
    from purejaxbrc.envs.mjx import MJXTaskSet, pool_size_for
    from purejaxbrc.sac import SACAgent
    run, t = experiment.run, getattr(experiment, "transfer", None)
    sizes = dict(obs_size=t.obs_shape[0], action_size=t.num_actions) if t else {}
    env = MJXTaskSet(names, run.num_envs, run.episode_length,
                     pool_size=pool_size_for(run.chunk, run.episode_length), **sizes)
    # Evaluation runs every episode to its end and stops: no auto-reset, no pool.
    eval_env = MJXTaskSet(names, run.eval_episodes, run.episode_length, pool_size=0, **sizes)
    agent = SACAgent(experiment.agent, obs_size=env.obs_size, action_size=env.action_size,
                     num_tasks=env.num_tasks, **_transfer_options(experiment, names))
    return env, eval_env, agent


def build_minatar(experiment: Experiment, names):
    """`(env, eval_env, agent)` of a gymnax run."""
    from purejaxbrc.dqn import DQNAgent
    from purejaxbrc.envs.gymnax import GymnaxTaskSet
    run, t = experiment.run, getattr(experiment, "transfer", None)
    shape = dict(obs_shape=t.obs_shape) if t else {}
    env = GymnaxTaskSet(names, run.num_envs, **shape)
    eval_env = GymnaxTaskSet(names, run.eval_episodes, **shape)
    agent = DQNAgent(experiment.agent, obs_shape=env.obs_shape, action_counts=env.action_counts,
                     num_tasks=env.num_tasks, num_actions=t.num_actions if t else None,
                     **_transfer_options(experiment, names))
    return env, eval_env, agent


def _check_mjx(experiment: Experiment, names) -> None:
    del experiment, names  # every MJX task fits every agent config


def _check_minatar(experiment: Experiment, names) -> None:
    from purejaxbrc.envs.gymnax import GymnaxTaskSet
    if experiment.run.episode_length != RunConfig.episode_length:
        raise ConfigError("--episode-length applies to MJX tasks; gymnax games end at their own limits")
    channels = experiment.agent.conv_channels
    shape = GymnaxTaskSet(names).obs_shape
    if len(shape) == 3 and min(shape[:2]) <= 2 * len(channels):
        raise ConfigError(f"--conv-channels: {len(channels)} 3x3 convs do not fit {shape[0]}x{shape[1]} images")


def _mjx():
    from purejaxbrc.envs import mjx
    from purejaxbrc.sac import SACConfig
    return SACConfig, mjx.resolve_tasks, mjx.all_task_names


def _minatar():
    from purejaxbrc.dqn import DQNConfig
    from purejaxbrc.envs import gymnax
    return DQNConfig, gymnax.resolve_tasks, gymnax.all_task_names


class Kind(NamedTuple):
    name: str
    what: str  # its tasks, in words
    load: Callable[[], tuple]  # -> (agent config class, resolve_tasks(spec), all_task_names())
    check: Callable[[Experiment, tuple], None]
    build: Callable[[Experiment, tuple], tuple]

    @property
    def agent_config(self):
        return self.load()[0]

    def resolve_tasks(self, spec: str) -> tuple[str, ...]:
        """Task names; ConfigError naming the valid ones for an unknown name, or the kind of
        run a name belongs to."""
        try:
            return self.load()[1](spec)
        except ValueError as e:
            for other in KINDS.values():
                if other.name == self.name:
                    continue
                theirs = set(other.load()[2]())
                for part in (p.strip() for p in spec.split(",")):
                    if part in theirs:
                        raise ConfigError(f"task {part!r} is one of the {other.what}; this {self.name} run "
                                          f"takes {self.what}")
            raise ConfigError(str(e))


KINDS = {
    "mjx": Kind("mjx", "MuJoCo Playground control tasks (SAC)", _mjx, _check_mjx, build_mjx),
    "minatar": Kind("minatar", "gymnax discrete-action games (categorical DQN)", _minatar, _check_minatar,
                    build_minatar),
}


def get(kind) -> Kind:
    if kind not in KINDS:
        raise ConfigError(f"unknown run kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


class Prepared(NamedTuple):
    experiment: Experiment  # task-dependent defaults filled in
    names: tuple[str, ...]
    variants: tuple[dict, ...]  # the sweep: one {name: value} per variant ({} without one)


def prepare(kind: str, experiment: Experiment) -> Prepared:
    """Resolve the tasks and the sweep and check every input; ConfigError (one line) before
    anything is compiled or written."""
    spec = get(kind)
    names = spec.resolve_tasks(experiment.run.tasks)
    experiment = dataclasses.replace(experiment, run=with_defaults(experiment.run, len(names)))
    validate_run(experiment.run, len(names))
    experiment.agent.validate()
    variants = sweep.resolve(experiment.run, experiment.agent, spec.agent_config)
    if getattr(experiment, "transfer", None) is not None:
        from purejaxbrc import transfer
        experiment = transfer.with_source(experiment, kind, names, variants)
    spec.check(experiment, names)
    return Prepared(experiment, names, variants)
