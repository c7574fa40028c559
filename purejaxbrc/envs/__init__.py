"""Environment adapters: every task set steps all its tasks in one traced function."""

from purejaxbrc.envs.base import EnvStep

__all__ = ["EnvStep"]
