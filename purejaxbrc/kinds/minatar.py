"""The "minatar" kind (experiments/brc_minatar.py): categorical double Q on gymnax games."""

from purejaxbrc import video
from purejaxbrc.config import ConfigError, Experiment, RunConfig, TransferConfig
from purejaxbrc.dqn import DQNAgent, DQNConfig, DQNState
from purejaxbrc.embedding import with_transferred_rows
from purejaxbrc.envs import gymnax
from purejaxbrc.kinds.base import Kind


class MinAtarKind(Kind):
    name = "minatar"
    what = "gymnax discrete-action games (categorical DQN)"
    agent_config = DQNConfig

    def all_task_names(self):
        return gymnax.all_task_names()

    def resolve(self, spec):
        return gymnax.resolve_tasks(spec)

    def check(self, experiment: Experiment, names):
        if experiment.run.episode_length != RunConfig.episode_length:
            raise ConfigError("--episode-length applies to MJX tasks; gymnax games end at their own limits")
        channels = experiment.agent.conv_channels
        shape = gymnax.GymnaxTaskSet(names).obs_shape
        if len(shape) == 3 and min(shape[:2]) <= 2 * len(channels):
            raise ConfigError(f"--conv-channels: {len(channels)} 3x3 convs do not fit {shape[0]}x{shape[1]} images")

    def build(self, experiment: Experiment, names, transfer: TransferConfig | None):
        run = experiment.run
        shape = dict(obs_shape=transfer.obs_shape) if transfer else {}
        env = gymnax.GymnaxTaskSet(names, run.num_envs, **shape)
        eval_env = gymnax.GymnaxTaskSet(names, run.eval_episodes, **shape)
        agent = DQNAgent(experiment.agent, obs_shape=env.obs_shape, action_counts=env.action_counts,
                         num_tasks=env.num_tasks, num_actions=transfer.num_actions if transfer else None,
                         **self.transfer_options(transfer, names))
        return env, eval_env, agent

    def video(self, names, tasks, width, height, camera, fps):
        del width, height, camera  # one cell per pixel block; no cameras
        env = gymnax.GymnaxTaskSet(names)
        if len(env.obs_shape) != 3:
            raise ConfigError(f"{', '.join(names)}: observations of shape {env.obs_shape} are not images; render "
                              f"draws MJX tasks and image games (MinAtar)")
        return video.GridFrames({t: env.obs_shapes[t][-1] for t in tasks}, fps)

    def padded_sizes(self, names):
        env = gymnax.GymnaxTaskSet(names)
        return tuple(env.obs_shape), env.action_size

    def check_fits(self, names, obs_shape, num_actions):
        for name in names:
            env = gymnax.GymnaxTaskSet([name])
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

    def carried_values(self, transfer):
        if transfer.temperature != "reset":
            raise ConfigError(f"--temperature {transfer.temperature}: DQN has no temperature (a SAC option)")
        return super().carried_values(transfer)

    def transferred(self, fresh: DQNState, source: DQNState, rows, transfer: TransferConfig) -> DQNState:
        """Online and target networks from `source`; the optimiser state fresh."""
        return fresh._replace(net=with_transferred_rows(fresh.net, source.net, rows, transfer.new_rows),
                              target_net=with_transferred_rows(fresh.target_net, source.target_net, rows,
                                                               transfer.new_rows))


MINATAR = MinAtarKind()
