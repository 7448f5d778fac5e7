"""Starts single-mode scalr-agent containers for a pool's pending tasks.

One decision (`launch_once`) shared by every platform: read the pool's queue depth from the
control plane (docs/protocol.md, "Queue depth"), count the agents this launcher already started
that hold no task yet, start the difference (bounded). Each platform supplies a runner: ECS
`RunTask` (`ecs.py`), Cloud Run jobs (`cloudrun.py`), local processes (`local.py`, the tests).
"""

from .core import LaunchResult, QueueDepth, QueueError, Runner, agents_to_start, launch_once, read_queue

__all__ = ["LaunchResult", "QueueDepth", "QueueError", "Runner", "agents_to_start", "launch_once", "read_queue"]
