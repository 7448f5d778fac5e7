"""The launchers against stubbed cloud APIs: the queue read over real HTTP on 127.0.0.1, ECS
through botocore's Stubber (calls checked against the AWS API model), Cloud Run's Admin API as
a local HTTP server, and both entry points (the Lambda handler, the Cloud Function)."""

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

LAUNCHER = Path(__file__).resolve().parents[1]
DEPLOY = LAUNCHER.parent
sys.path.insert(0, str(LAUNCHER))

from scalr_launcher import QueueDepth, QueueError, agents_to_start, launch_once, read_queue  # noqa: E402
from scalr_launcher.cloudrun import CloudRunRunner  # noqa: E402
from scalr_launcher.ecs import EcsRunner, publish_demand  # noqa: E402


class Server:
    """An HTTP server on 127.0.0.1 answering from `routes[(method, path)] -> (status, body)`,
    recording every request."""

    def __init__(self, routes):
        self.routes, self.requests = routes, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append((self.command, self.path, dict(self.headers), body))
                route = server.routes.get((self.command, self.path.split("?")[0]))
                status, payload = route(self) if callable(route) else (route or (404, {"error": "not_found"}))
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def queue():
    state = {"answer": (200, {"pending": 3, "running": 1, "pool": {"id": "apool-1"}})}
    server = Server({("GET", "/api/agent/v1/queue"): lambda h: state["answer"]})
    server.state = state
    yield server
    server.close()


def test_read_queue_sends_the_queue_token(queue):
    assert read_queue(queue.url + "/", "q-token") == QueueDepth(pending=3, running=1)
    (_, path, headers, _), = queue.requests
    assert path == "/api/agent/v1/queue"
    assert headers["Authorization"] == "Bearer q-token"
    assert headers["Scalr-Agent-Protocol"] == "1"


@pytest.mark.parametrize(
    "answer, message",
    [
        ((401, {"error": "unauthorized"}), "HTTP 401 (expected 200) (check the queue token)"),
        ((200, b"<html>"), "the answer is not JSON"),
        ((200, {"pending": -1, "running": 0}), "`pending` must be a non-negative integer, found -1"),
        ((200, {"pending": 1}), "`running` must be a non-negative integer, found None"),
        ((200, {"pending": True, "running": 0}), "`pending` must be a non-negative integer, found True"),
    ],
)
def test_read_queue_refuses_bad_answers_naming_them(queue, answer, message):
    queue.state["answer"] = answer
    with pytest.raises(QueueError) as e:
        read_queue(queue.url, "q")
    assert message in str(e.value) and queue.url in str(e.value)


def test_read_queue_names_an_unreachable_url():
    with pytest.raises(QueueError) as e:
        read_queue("http://127.0.0.1:9", "q", timeout=2)
    assert "GET http://127.0.0.1:9/api/agent/v1/queue" in str(e.value)


@pytest.mark.parametrize(
    "pending, running, alive, max_agents, expected",
    [
        (0, 0, 0, 10, 0),
        (5, 0, 0, 10, 5),
        (5, 0, 2, 10, 3),     # two started agents will take two of the five
        (5, 2, 2, 10, 5),     # both alive agents hold running tasks
        (30, 0, 0, 8, 8),     # bounded by max_agents
        (30, 4, 8, 8, 0),
        (0, 3, 5, 10, 0),     # two idle agents, nothing pending
        (2, 0, 5, 10, 0),
    ],
)
def test_agents_to_start(pending, running, alive, max_agents, expected):
    assert agents_to_start(QueueDepth(pending, running), alive, max_agents) == expected


def ecs_client():
    return boto3.client("ecs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


CLUSTER = "arn:aws:ecs:eu-west-1:111122223333:cluster/scalr-agent"
TASKDEF = "arn:aws:ecs:eu-west-1:111122223333:task-definition/scalr-agent-single:3"


def run_task_params(count):
    return {
        "cluster": CLUSTER, "taskDefinition": TASKDEF, "count": count, "launchType": "FARGATE",
        "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}},
        "startedBy": "scalr-agent-launcher", "propagateTags": "TASK_DEFINITION",
    }


def tasks(n):
    return {"tasks": [{"taskArn": f"arn:aws:ecs:eu-west-1:111122223333:task/scalr-agent/{i}"} for i in range(n)], "failures": []}


def test_ecs_runner_counts_pages_and_starts_in_batches_of_ten():
    client = ecs_client()
    runner = EcsRunner(client, CLUSTER, TASKDEF, ["subnet-1"], ["sg-1"])
    with Stubber(client) as stub:
        list_params = {"cluster": CLUSTER, "startedBy": "scalr-agent-launcher", "desiredStatus": "RUNNING"}
        stub.add_response("list_tasks", {"taskArns": ["a", "b"], "nextToken": "t"}, list_params)
        stub.add_response("list_tasks", {"taskArns": ["c"]}, dict(list_params, nextToken="t"))
        for n in (10, 10, 5):
            stub.add_response("run_task", tasks(n), run_task_params(n))
        assert runner.alive() == 3
        assert runner.start(25) == 25
        stub.assert_no_pending_responses()


def test_ecs_runner_stops_at_the_first_capacity_failure():
    client = ecs_client()
    runner = EcsRunner(client, CLUSTER, TASKDEF, ["subnet-1"], ["sg-1"])
    with Stubber(client) as stub:
        answer = tasks(4)
        answer["failures"] = [{"reason": "Capacity is unavailable at this time", "arn": TASKDEF}]
        stub.add_response("run_task", answer, run_task_params(10))
        assert runner.start(12) == 4
        stub.assert_no_pending_responses()


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    def __init__(self, ticks):
        self.ticks = ticks

    def get_remaining_time_in_millis(self):
        self.ticks -= 1
        return 60000 if self.ticks > 0 else 1000


def lambda_env(queue_url, mode):
    return {
        "MODE": mode, "SCALR_URL": queue_url, "QUEUE_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:q",
        "CLUSTER": CLUSTER, "SERVICE": "scalr-agent", "POOL": "scalr-agent", "TASK_DEFINITION": TASKDEF,
        "SUBNETS": "subnet-1", "SECURITY_GROUPS": "sg-1", "ASSIGN_PUBLIC_IP": "false", "MAX_AGENTS": "10", "POLL_SECONDS": "0",
    }


def clients():
    kw = dict(region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    return {n: boto3.client(n, **kw) for n in ("ecs", "secretsmanager", "cloudwatch")}


def test_lambda_launch_mode_starts_agents_for_pending_tasks(queue):
    handler = load_module(DEPLOY / "aws-ecs-fargate" / "lambda" / "handler.py", "ecs_handler")
    c = clients()
    env = lambda_env(queue.url, "launch")
    with Stubber(c["secretsmanager"]) as sm, Stubber(c["ecs"]) as ecs:
        sm.add_response("get_secret_value", {"SecretString": "q-token\n"}, {"SecretId": env["QUEUE_TOKEN_SECRET_ARN"]})
        list_params = {"cluster": CLUSTER, "startedBy": "scalr-agent-launcher", "desiredStatus": "RUNNING"}
        ecs.add_response("list_tasks", {"taskArns": ["t0"]}, list_params)  # one agent alive, running task 1
        ecs.add_response("run_task", tasks(3), run_task_params(3))
        ecs.add_response("list_tasks", {"taskArns": ["t0", "t1", "t2", "t3"]}, list_params)  # second tick: nothing to add
        result = handler.handler({}, Context(ticks=2), env=env, clients=c)
        ecs.assert_no_pending_responses()
    assert result == {"started": 3}
    assert all(r[2]["Authorization"] == "Bearer q-token" for r in queue.requests)


def test_lambda_metrics_mode_publishes_tasks_per_agent(queue):
    handler = load_module(DEPLOY / "aws-ecs-fargate" / "lambda" / "handler.py", "ecs_handler")
    c = clients()
    env = lambda_env(queue.url, "metrics")
    with Stubber(c["secretsmanager"]) as sm, Stubber(c["ecs"]) as ecs, Stubber(c["cloudwatch"]) as cw:
        sm.add_response("get_secret_value", {"SecretString": "q-token"}, {"SecretId": env["QUEUE_TOKEN_SECRET_ARN"]})
        ecs.add_response("describe_services", {"services": [{"serviceName": "scalr-agent", "desiredCount": 2}]},
                         {"cluster": CLUSTER, "services": ["scalr-agent"]})
        dims = [{"Name": "Pool", "Value": "scalr-agent"}]
        cw.add_response("put_metric_data", {}, {"Namespace": "ScalrAgent", "MetricData": [
            {"MetricName": "TasksPerAgent", "Dimensions": dims, "Value": 2.0, "Unit": "Count"},
            {"MetricName": "PendingTasks", "Dimensions": dims, "Value": 3, "Unit": "Count"}]})
        result = handler.handler({}, Context(ticks=1), env=env, clients=c)
        cw.assert_no_pending_responses()
    assert result == {"pending": 3, "running": 1, "agents": 2, "tasks_per_agent": 2.0}


def test_lambda_refuses_missing_settings():
    handler = load_module(DEPLOY / "aws-ecs-fargate" / "lambda" / "handler.py", "ecs_handler")
    with pytest.raises(ValueError) as e:
        handler.handler({}, Context(1), env={"MODE": "launch"}, clients={})
    assert "missing environment variables: SCALR_URL, QUEUE_TOKEN_SECRET_ARN, CLUSTER" in str(e.value)
    with pytest.raises(ValueError) as e:
        handler.handler({}, Context(1), env=dict(lambda_env("http://x", "sideways")), clients={})
    assert "MODE must be launch or metrics, found 'sideways'" in str(e.value)


@pytest.fixture
def cloud_run():
    job = "/v2/projects/p/locations/europe-west1/jobs/scalr-agent-single"
    executions = {"executions": [
        {"name": "e1", "taskCount": 3, "succeededCount": 1, "failedCount": 0},          # 2 alive
        {"name": "e0", "taskCount": 5, "succeededCount": 5, "completionTime": "2026-01-01T00:00:00Z"},
    ]}
    server = Server({("GET", job + "/executions"): (200, executions), ("POST", job + ":run"): (200, {"name": "op"})})
    yield server, job
    server.close()


def test_cloud_run_runner_counts_and_runs(cloud_run):
    server, job = cloud_run
    runner = CloudRunRunner("p", "europe-west1", "scalr-agent-single", token=lambda: "gcp-at", api=server.url + "/v2")
    assert runner.alive() == 2
    assert runner.start(4) == 4
    method, path, headers, body = server.requests[-1]
    assert (method, path) == ("POST", job + ":run")
    assert json.loads(body) == {"overrides": {"taskCount": 4}}
    assert headers["Authorization"] == "Bearer gcp-at"


def test_cloud_function_launches_for_pending_tasks(cloud_run, queue, tmp_path):
    server, job = cloud_run
    main = load_module(DEPLOY / "gcp-cloud-run" / "function" / "main.py", "gcp_main")
    token = tmp_path / "token"
    token.write_text("q-token\n")
    env = {"SCALR_URL": queue.url, "QUEUE_TOKEN_FILE": str(token), "PROJECT": "p", "REGION": "europe-west1",
           "JOB": "scalr-agent-single", "MAX_AGENTS": "10"}
    runner = CloudRunRunner("p", "europe-west1", "scalr-agent-single", token=lambda: "gcp-at", api=server.url + "/v2")
    # pending 3, running 1, alive 2 -> one waiting agent -> start 2
    assert main.launch(None, env=env, runner=runner) == {"pending": 3, "running": 1, "alive": 2, "started": 2}
    assert json.loads(server.requests[-1][3]) == {"overrides": {"taskCount": 2}}


def test_launch_once_with_a_fake_runner():
    class Runner:
        def __init__(self):
            self.started = 0

        def alive(self):
            return 1

        def start(self, n):
            self.started += n
            return n

    r = Runner()
    result = launch_once(lambda: QueueDepth(4, 0), r, max_agents=3)
    assert (result.alive, result.started, r.started) == (1, 2, 2)
