"""The queue read and the launch decision, independent of any cloud."""

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Protocol

log = logging.getLogger("scalr_launcher")

QUEUE_PATH = "/api/agent/v1/queue"


class QueueError(Exception):
    """The queue depth could not be read; the message names the URL and what was wrong."""


@dataclass(frozen=True)
class QueueDepth:
    """A pool's tasks waiting for an agent (`pending`) and held by one (`running`)."""

    pending: int
    running: int


def queue_url(scalr_url: str) -> str:
    return scalr_url.rstrip("/") + QUEUE_PATH


def read_queue(scalr_url: str, token: str, timeout: float = 10.0, opener: Callable = urllib.request.urlopen) -> QueueDepth:
    """GET <scalr_url>/api/agent/v1/queue with the pool's queue token (a credential that
    cannot take tasks)."""
    url = queue_url(scalr_url)
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "Scalr-Agent-Protocol": "1", "Accept": "application/json"}
    )
    try:
        with opener(request, timeout=timeout) as response:
            body = response.read(64 * 1024)
    except urllib.error.HTTPError as e:
        raise QueueError(f"GET {url}: HTTP {e.code} (expected 200){' (check the queue token)' if e.code in (401, 403) else ''}") from None
    except (urllib.error.URLError, OSError) as e:
        raise QueueError(f"GET {url}: {getattr(e, 'reason', e)}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise QueueError(f"GET {url}: the answer is not JSON: {body[:80]!r}") from None
    counts = {}
    for key in ("pending", "running"):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise QueueError(f"GET {url}: `{key}` must be a non-negative integer, found {value!r}")
        counts[key] = value
    return QueueDepth(**counts)


class Runner(Protocol):
    """Where single-mode agents are started."""

    def alive(self) -> int:
        """Agents this launcher started that have not exited (starting, waiting or busy)."""

    def start(self, count: int) -> int:
        """Starts `count` agents; returns how many the platform accepted."""


def agents_to_start(depth: QueueDepth, alive: int, max_agents: int) -> int:
    """Agents to start now. Alive agents beyond the tasks already running are still starting or
    waiting for a task: each will take one of the pending tasks, so only the rest needs new
    agents. Never more than `max_agents` alive. An agent started for a task another agent took
    finds nothing and exits after SCALR_AGENT_SINGLE_WAIT_TIMEOUT."""
    waiting = max(0, alive - depth.running)
    wanted = max(0, depth.pending - waiting)
    room = max(0, max_agents - alive)
    return min(wanted, room)


@dataclass(frozen=True)
class LaunchResult:
    depth: QueueDepth
    alive: int
    started: int


def launch_once(read: Callable[[], QueueDepth], runner: Runner, max_agents: int) -> LaunchResult:
    """One launcher tick: read the queue, count live agents, start what is missing."""
    depth = read()
    alive = runner.alive()
    count = agents_to_start(depth, alive, max_agents)
    started = runner.start(count) if count else 0
    log.info("queue pending=%d running=%d; agents alive=%d; started %d", depth.pending, depth.running, alive, started)
    return LaunchResult(depth, alive, started)
