"""The I/O side of the operator, split by responsibility (see `core` for the map)."""

from modeldeploy.controller.core import Controller, Result
from modeldeploy.controller.queue import Key, WorkQueue

__all__ = ["Controller", "Key", "Result", "WorkQueue"]
