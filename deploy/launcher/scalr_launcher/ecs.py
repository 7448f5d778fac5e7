"""Runner for AWS ECS: single-mode agents are Fargate tasks started with `RunTask`."""

import logging

log = logging.getLogger("scalr_launcher")

STARTED_BY = "scalr-agent-launcher"
RUN_TASK_MAX = 10  # RunTask's `count` limit


class EcsRunner:
    def __init__(self, client, cluster, task_definition, subnets, security_groups, assign_public_ip=False, started_by=STARTED_BY):
        self.client = client
        self.cluster = cluster
        self.task_definition = task_definition
        self.network = {
            "awsvpcConfiguration": {
                "subnets": list(subnets),
                "securityGroups": list(security_groups),
                "assignPublicIp": "ENABLED" if assign_public_ip else "DISABLED",
            }
        }
        self.started_by = started_by

    def alive(self) -> int:
        """Tasks this launcher started whose desired status is still RUNNING (provisioning,
        pending or running)."""
        count = 0
        for page in self.client.get_paginator("list_tasks").paginate(
            cluster=self.cluster, startedBy=self.started_by, desiredStatus="RUNNING"
        ):
            count += len(page["taskArns"])
        return count

    def start(self, count: int) -> int:
        started = 0
        while count > 0:
            batch = min(count, RUN_TASK_MAX)
            answer = self.client.run_task(
                cluster=self.cluster,
                taskDefinition=self.task_definition,
                count=batch,
                launchType="FARGATE",
                networkConfiguration=self.network,
                startedBy=self.started_by,
                propagateTags="TASK_DEFINITION",
            )
            for failure in answer.get("failures", []):
                log.warning("RunTask failure: %s %s", failure.get("reason"), failure.get("detail", ""))
            started += len(answer.get("tasks", []))
            if answer.get("failures"):
                break  # capacity or quota: the next tick tries again
            count -= batch
        return started


def publish_demand(cloudwatch, namespace, pool, depth, agents):
    """For the always-on service: publishes the tasks per agent (pending + running over the
    service's desired count), the metric its target-tracking policy holds at the concurrency."""
    per_agent = (depth.pending + depth.running) / max(agents, 1)
    cloudwatch.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {"MetricName": "TasksPerAgent", "Dimensions": [{"Name": "Pool", "Value": pool}], "Value": per_agent, "Unit": "Count"},
            {"MetricName": "PendingTasks", "Dimensions": [{"Name": "Pool", "Value": pool}], "Value": depth.pending, "Unit": "Count"},
        ],
    )
    return per_agent
