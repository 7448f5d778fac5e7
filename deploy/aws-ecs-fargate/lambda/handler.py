"""The ECS launcher Lambda, run every minute by EventBridge.

MODE=launch: starts single-mode Fargate tasks for the pool's pending tasks (RunTask), ticking
every POLL_SECONDS until the invocation is nearly over. MODE=metrics: publishes TasksPerAgent
for the always-on service's target-tracking policy. The queue token is read from Secrets
Manager at each invocation, never from the environment.
"""

import logging
import os
import time

import boto3

from scalr_launcher import launch_once, read_queue
from scalr_launcher.ecs import EcsRunner, publish_demand

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("scalr_launcher")

REQUIRED = ("MODE", "SCALR_URL", "QUEUE_TOKEN_SECRET_ARN", "CLUSTER")


def settings(env):
    missing = [k for k in REQUIRED if not env.get(k)]
    if missing:
        raise ValueError(f"launcher: missing environment variables: {', '.join(missing)}")
    if env["MODE"] not in ("launch", "metrics"):
        raise ValueError(f"launcher: MODE must be launch or metrics, found {env['MODE']!r}")
    return env


def handler(event, context, env=None, clients=None):
    env = settings(os.environ if env is None else env)
    clients = clients or {name: boto3.client(name) for name in ("ecs", "secretsmanager", "cloudwatch")}
    token = clients["secretsmanager"].get_secret_value(SecretId=env["QUEUE_TOKEN_SECRET_ARN"])["SecretString"].strip()
    read = lambda: read_queue(env["SCALR_URL"], token)  # noqa: E731
    if env["MODE"] == "metrics":
        services = clients["ecs"].describe_services(cluster=env["CLUSTER"], services=[env["SERVICE"]])["services"]
        agents = services[0]["desiredCount"] if services else 0
        depth = read()
        value = publish_demand(clients["cloudwatch"], env.get("METRIC_NAMESPACE", "ScalrAgent"), env["POOL"], depth, agents)
        return {"pending": depth.pending, "running": depth.running, "agents": agents, "tasks_per_agent": value}
    runner = EcsRunner(
        clients["ecs"], env["CLUSTER"], env["TASK_DEFINITION"],
        env["SUBNETS"].split(","), env["SECURITY_GROUPS"].split(","),
        assign_public_ip=env.get("ASSIGN_PUBLIC_IP") == "true",
    )
    max_agents, poll = int(env.get("MAX_AGENTS", "10")), float(env.get("POLL_SECONDS", "15"))
    started = 0
    while True:
        started += launch_once(read, runner, max_agents).started
        if context.get_remaining_time_in_millis() < (poll + 10) * 1000:
            return {"started": started}
        time.sleep(poll)
