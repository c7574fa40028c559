"""A kind of run: a family of tasks and the agent that learns them, as one object.

A kind names its agent config, resolves and checks task names, builds the environments and the
agent (for a transfer run, with the pretrained architecture), knows the padded sizes its tasks
need, and maps a pretrained agent state onto a new one. Adding a kind means one module that
subclasses `Kind` and one line in `purejaxbrc.kinds.KINDS`.
"""

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from purejaxbrc import embedding
from purejaxbrc.agent import Agent, AgentConfig
from purejaxbrc.config import ConfigError, Experiment, TransferConfig


class Kind(ABC):
    name: ClassVar[str]  # run_info.json's `kind`
    what: ClassVar[str]  # its tasks, in words (error messages)
    agent_config: ClassVar[type[AgentConfig]]

    @abstractmethod
    def all_task_names(self) -> tuple[str, ...]: ...

    @abstractmethod
    def resolve(self, spec: str) -> tuple[str, ...]:
        """Comma-separated task and set names -> task names; ValueError naming the valid ones."""

    def check(self, experiment: Experiment, names) -> None:
        """ConfigError for an experiment that these tasks cannot run (after the generic checks)."""

    @abstractmethod
    def build(self, experiment: Experiment, names, transfer: TransferConfig | None) -> tuple[Any, Any, Agent]:
        """`(env, eval_env, agent)`; with `transfer`, the agent keeps the pretrained architecture
        (`transfer_options`) and the environments its padded sizes."""

    @abstractmethod
    def padded_sizes(self, names) -> tuple[tuple[int, ...], int]:
        """`(observation shape, action size or count)` that every task of `names` fits."""

    @abstractmethod
    def check_fits(self, names, obs_shape: tuple[int, ...], num_actions: int) -> None:
        """ConfigError naming the first task and size that a model of these sizes cannot take."""

    @abstractmethod
    def transferred(self, fresh, source, rows, transfer: TransferConfig):
        """One member's agent state: `fresh` (a new run's) with the networks (and whatever
        else carries over) of `source`, the pretrained one; embedding tables rebuilt for the new
        tasks (`rows`: each task's pretrained row, -1 for a new one)."""

    def carried_values(self, transfer: TransferConfig) -> dict[str, str]:
        """`{agent field: what it sets}` for the values that a finetune or embedding transfer takes
        over from the pretrained model, so that they must equal the pretrained run's: the
        critic's logits are on its own value support and discount. ConfigError for a transfer
        option this kind does not have."""
        return {"v_max": "value support", "gamma": "discount"}

    def prepare_video(self) -> None:
        """Set up what drawing this kind's states needs before anything imports it (ConfigError
        when it cannot work here, naming the fix)."""

    def video(self, names, tasks: list[int], width: int, height: int, camera: str | None, fps: float | None):
        """A `purejaxbrc.video` drawer of tasks `tasks` (indices into `names`); ConfigError for
        what cannot be drawn."""
        raise ConfigError(f"render draws no {self.what}")

    @staticmethod
    def transfer_options(transfer: TransferConfig | None, names) -> dict:
        """An agent's keyword arguments for a transfer run: its task embedding kept (even for one
        task) and, in the embedding mode, everything but the new tasks' rows frozen."""
        if transfer is None:
            return {}
        trainable = embedding.new_rows_only(transfer.rows(names) < 0) if transfer.mode == "embedding" else None
        return dict(embedding=True, trainable=trainable)
