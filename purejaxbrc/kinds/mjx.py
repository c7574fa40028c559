"""The "mjx" kind (experiments/brc_mjx.py): SAC on MuJoCo Playground control tasks."""

from purejaxbrc import video
from purejaxbrc.config import ConfigError, Experiment, TransferConfig
from purejaxbrc.embedding import with_transferred_rows
from purejaxbrc.envs import mjx
from purejaxbrc.kinds.base import Kind
from purejaxbrc.sac import SACAgent, SACConfig, SACState


class MJXKind(Kind):
    name = "mjx"
    what = "MuJoCo Playground control tasks (SAC)"
    agent_config = SACConfig

    def all_task_names(self):
        return mjx.all_task_names()

    def resolve(self, spec):
        return mjx.resolve_tasks(spec)

    def build(self, experiment: Experiment, names, transfer: TransferConfig | None):
        run = experiment.run
        sizes = dict(obs_size=transfer.obs_shape[0], action_size=transfer.num_actions) if transfer else {}
        env = mjx.MJXTaskSet(names, run.num_envs, run.episode_length,
                             pool_size=mjx.pool_size_for(run.chunk, run.episode_length), **sizes)
        # Evaluation runs every episode to its end and stops: no auto-reset, no pool.
        eval_env = mjx.MJXTaskSet(names, run.eval_episodes, run.episode_length, pool_size=0, **sizes)
        agent = SACAgent(experiment.agent, obs_size=env.obs_size, action_size=env.action_size,
                         num_tasks=env.num_tasks, **self.transfer_options(transfer, names))
        return env, eval_env, agent

    def prepare_video(self):
        video.default_gl()
        video.import_mujoco()  # before Playground imports it: its GL backend is chosen then

    def video(self, names, tasks, width, height, camera, fps):
        models = {t: mjx.load_task(names[t]).mj_model for t in tasks}
        return video.MuJoCoFrames(models, width, height, camera, fps)

    def padded_sizes(self, names):
        envs = [mjx.load_task(n) for n in names]
        return (max(mjx.observation_size(e) for e in envs),), max(int(e.action_size) for e in envs)

    def check_fits(self, names, obs_shape, num_actions):
        for name in names:
            env = mjx.load_task(name)
            for what, size, padded in (("observation", mjx.observation_size(env), obs_shape[0]),
                                       ("action", int(env.action_size), num_actions)):
                if size > padded:
                    raise ConfigError(f"task {name} has {size} {what} entries, more than the pretrained "
                                      f"model's padded {what} size {padded}")

    def carried_values(self, transfer):
        carried = super().carried_values(transfer)
        return carried | ({"init_alpha": "temperature (--temperature carry)"} if transfer.temperature == "carry" else {})

    def transferred(self, fresh: SACState, source: SACState, rows, transfer: TransferConfig) -> SACState:
        """Actor, critic and target critic from `source`, the temperature too with `--temperature
        carry`; optimiser states fresh (shaped like the parameters, so valid for them)."""
        return fresh._replace(
            actor=source.actor,
            critic=with_transferred_rows(fresh.critic, source.critic, rows, transfer.new_rows),
            target_critic=with_transferred_rows(fresh.target_critic, source.target_critic, rows, transfer.new_rows),
            log_alpha=source.log_alpha if transfer.temperature == "carry" else fresh.log_alpha)


MJX = MJXKind()
