"""Runner of local processes: `scalr-agent run` in single mode as child processes, for the
scale-out test (tests/it/scale_out.rs) and for trying a pool on one machine.

    python3 -m scalr_launcher.local --scalr-url URL --queue-token-file F --max-agents 8 \\
        --per-agent 'SCALR_AGENT_DATA_DIR=/var/lib/agents/{n}' \\
        --per-agent 'SCALR_AGENT_TASK_UID_RANGE=3{n:02d}00-3{n:02d}09' \\
        --until-empty -- /usr/local/bin/scalr-agent run

Each agent gets SCALR_AGENT_SINGLE=true, its own SCALR_AGENT_NAME and the `--per-agent`
variables (`{n}`: the agent's number from 1, Python format syntax); the rest of the environment
is this process's. Agents on different data directories need disjoint task uid ranges.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time

from .core import launch_once, read_queue


class LocalRunner:
    def __init__(self, command, env=None, name_prefix="local-agent", per_agent=None):
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.per_agent = dict(per_agent or {})
        self.name_prefix = name_prefix
        self.children = []
        self.exit_codes = []

    def reap(self):
        for child in list(self.children):
            code = child.poll()
            if code is not None:
                self.children.remove(child)
                self.exit_codes.append(code)

    def alive(self) -> int:
        self.reap()
        return len(self.children)

    def start(self, count: int) -> int:
        for _ in range(count):
            n = len(self.children) + len(self.exit_codes) + 1
            env = dict(self.env, SCALR_AGENT_SINGLE="true", SCALR_AGENT_NAME=f"{self.name_prefix}-{n}")
            env.update({k: template.format(n=n) for k, template in self.per_agent.items()})
            self.children.append(subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL))
        return count

    def stop(self):
        for child in self.children:
            child.terminate()
        for child in self.children:
            self.exit_codes.append(child.wait())
        self.children = []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scalr-url", required=True)
    parser.add_argument("--queue-token-file", required=True)
    parser.add_argument("--max-agents", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--until-empty", action="store_true", help="exit once the queue is empty and every agent exited")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--per-agent", action="append", default=[], metavar="NAME=TEMPLATE")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="launcher: %(message)s", stream=sys.stderr)
    with open(args.queue_token_file) as f:
        token = f.read().strip()
    per_agent = {}
    for item in args.per_agent:
        name, sep, template = item.partition("=")
        if not sep or not name:
            parser.error(f"--per-agent {item!r}: expected NAME=TEMPLATE")
        per_agent[name] = template
    runner = LocalRunner(args.command, per_agent=per_agent)
    deadline = time.monotonic() + args.timeout
    launches = 0
    try:
        while time.monotonic() < deadline:
            result = launch_once(lambda: read_queue(args.scalr_url, token), runner, args.max_agents)
            launches += result.started
            if args.until_empty and result.depth.pending == 0 and result.depth.running == 0 and runner.alive() == 0:
                failed = [c for c in runner.exit_codes if c != 0]
                print(json.dumps({"started": launches, "exit_codes": sorted(runner.exit_codes)}))
                return 1 if failed else 0
            time.sleep(args.interval)
        print("launcher: timed out", file=sys.stderr)
        return 2
    finally:
        runner.stop()


if __name__ == "__main__":
    sys.exit(main())
