"""Structural tests of the three Terraform modules (python-hcl2), and the ECS task definition
rendered from the module's own template checked against the AWS API model (botocore)."""

import json
import re
from pathlib import Path

import botocore.session
import hcl2
import pytest
from botocore.validate import ParamValidator

from conftest import DEPLOY

MODULES = ["aws-ecs-fargate", "gcp-cloud-run", "azure-container-apps"]
METRICS_API_PARAMS = {"url", "format", "valueLocation", "targetValue", "activationTargetValue", "authMode", "unsafeSsl"}


def load(module):
    merged = {"resource": {}, "variable": {}, "output": {}, "locals": {}, "data": {}}
    for tf in sorted((DEPLOY / module).glob("*.tf")):
        doc = hcl2.loads(tf.read_text())
        for block in doc.get("resource", []) + doc.get("data", []):
            kind = "resource" if block in doc.get("resource", []) else "data"
            for rtype, named in block.items():
                for rname, body in named.items():
                    merged[kind][f"{rtype}.{rname}"] = body
        for key in ("variable", "output"):
            for block in doc.get(key, []):
                merged[key].update(block)
        for block in doc.get("locals", []):
            merged["locals"].update({k: one(v) for k, v in block.items()})
    return merged


def one(value):
    """python-hcl2 wraps attribute values and blocks in lists."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def default(module, name):
    return one(load(module)["variable"][name]["default"])


@pytest.mark.parametrize("module", MODULES)
def test_every_variable_and_output_is_described_and_typed(module):
    m = load(module)
    assert m["resource"], module
    for name, var in m["variable"].items():
        assert var.get("description"), f"{module}: variable {name} has no description"
        assert var.get("type"), f"{module}: variable {name} has no type"
    for name, out in m["output"].items():
        assert out.get("description"), f"{module}: output {name} has no description"


@pytest.mark.parametrize("module", MODULES)
def test_reserved_names_cover_the_token_and_are_enforced(module):
    m = load(module)
    reserved = m["locals"]["reserved"]
    for name in ("SCALR_URL", "SCALR_AGENT_TOKEN", "SCALR_TOKEN", "SCALR_AGENT_TOKEN_FILE", "SCALR_AGENT_SINGLE"):
        assert name in reserved, f"{module}: {name} not reserved"
    text = "".join(p.read_text() for p in (DEPLOY / module).glob("*.tf"))
    assert "setintersection(keys(var.environment), local.reserved)" in text


# --- AWS ECS / Fargate ---------------------------------------------------------------------

def stop_timeout():
    expr = load("aws-ecs-fargate")["locals"]["stop_timeout"]
    names = re.findall(r"var\.(\w+)", expr)
    assert names == ["drain_timeout_seconds", "grace_timeout_seconds", "report_timeout_seconds", "stop_margin_seconds"], expr
    return sum(default("aws-ecs-fargate", n) for n in names)


def test_stop_timeout_fits_fargate_and_the_agents_window():
    assert stop_timeout() == 60 + 30 + 10 + 5
    assert stop_timeout() <= 120
    td = load("aws-ecs-fargate")["resource"]["aws_ecs_task_definition.agent"]
    conditions = [one(p["condition"]) for p in one(td["lifecycle"])["precondition"]]
    assert "${local.stop_timeout <= 120}" in conditions


def render_container_definitions(shape):
    """The module's container template rendered the way templatefile() does it, with the
    environment the module builds for `shape`."""
    m = load("aws-ecs-fargate")
    template = (DEPLOY / "aws-ecs-fargate" / "templates" / "container.json.tftpl").read_text()
    main = (DEPLOY / "aws-ecs-fargate" / "main.tf").read_text()
    names = set(re.findall(r"^\s+(SCALR_\w+)\s+=", main, re.M))
    single_only = {"SCALR_AGENT_SINGLE", "SCALR_AGENT_SINGLE_WAIT_TIMEOUT", "SCALR_AGENT_STATE_PERSISTENCE_ENABLED"}
    env = sorted(names - (single_only if shape == "service" else {"SCALR_AGENT_HEALTH_ADDR"}))
    values = {
        "image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/scalr-agent@sha256:" + "a" * 64,
        "stop_timeout": str(stop_timeout()),
        "environment": json.dumps([{"name": n, "value": "x"} for n in env]),
        "pool_token_secret_arn": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:pool-AbCdEf",
        "health_check": m["locals"]["health_check"].replace('\\"', '"') if shape == "service" else "",
        "log_group": "/ecs/scalr-agent",
        "region": "eu-west-1",
        "stream_prefix": shape,
    }
    used = set(re.findall(r"\$\{(\w+)\}", template))
    assert used == set(values), f"template variables {used} != {set(values)}"
    rendered = re.sub(r"\$\{(\w+)\}", lambda mm: values[mm.group(1)], template)
    return json.loads(rendered)


@pytest.mark.parametrize("shape", ["service", "single"])
@pytest.mark.parametrize("arch", ["X86_64", "ARM64"])
def test_task_definition_matches_the_aws_api_model(shape, arch):
    m = load("aws-ecs-fargate")
    td = m["resource"]["aws_ecs_task_definition.agent"]
    assert arch in re.findall(r"[\"'](\w+)[\"']", one(one(m["variable"]["cpu_architecture"]["validation"])["condition"]))
    containers = render_container_definitions(shape)
    params = {
        "family": f"scalr-agent-{shape}",
        "taskRoleArn": "arn:aws:iam::111122223333:role/scalr-agent-task",
        "executionRoleArn": "arn:aws:iam::111122223333:role/scalr-agent-execution",
        "networkMode": one(td["network_mode"]),
        "containerDefinitions": containers,
        "volumes": [{"name": one(v["name"])} for v in td["volume"]],
        "requiresCompatibilities": one(td["requires_compatibilities"]),
        "cpu": str(default("aws-ecs-fargate", "cpu")),
        "memory": str(default("aws-ecs-fargate", "memory")),
        "runtimePlatform": {"cpuArchitecture": arch, "operatingSystemFamily": one(one(td["runtime_platform"])["operating_system_family"])},
        "ephemeralStorage": {"sizeInGiB": default("aws-ecs-fargate", "ephemeral_storage_gib")},
    }
    model = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition")
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()
    (agent,) = containers
    assert agent["stopTimeout"] <= 120 and agent["readonlyRootFilesystem"] is True
    assert agent["secrets"] == [{"name": "SCALR_AGENT_TOKEN", "valueFrom": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:pool-AbCdEf"}]
    env = {e["name"] for e in agent["environment"]}
    assert "SCALR_AGENT_TOKEN" not in env
    assert ("SCALR_AGENT_SINGLE" in env) == (shape == "single")
    assert ("healthCheck" in agent) == (shape == "service")
    mounts = {mp["containerPath"] for mp in agent["mountPoints"]}
    assert mounts == {"/var/lib/scalr-agent", "/tmp"}, "a read-only root needs writable data and /tmp"
    assert "SYS_PTRACE" not in json.dumps(agent["linuxParameters"])


def test_ecs_shapes_and_launcher():
    m = load("aws-ecs-fargate")
    policy = one(m["resource"]["aws_appautoscaling_policy.tasks_per_agent"]["target_tracking_scaling_policy_configuration"])
    metric = one(policy["customized_metric_specification"])
    assert one(metric["metric_name"]) == "TasksPerAgent" and one(metric["namespace"]) == "ScalrAgent"
    assert one(policy["target_value"]) == "${var.concurrency}"
    fn = m["resource"]["aws_lambda_function.launcher"]
    assert one(fn["reserved_concurrent_executions"]) == 1
    assert one(fn["handler"]) == "handler.handler"
    env = one(one(fn["environment"])["variables"])
    assert "QUEUE_TOKEN_SECRET_ARN" in env and not any("TOKEN" in k and "ARN" not in k for k in env)
    sources = m["locals"]["launcher_sources"]
    for name in sources:
        assert (DEPLOY / "launcher" / "scalr_launcher" / name).is_file()


# --- Google Cloud Run ----------------------------------------------------------------------

def test_cloud_run_job_never_retries_and_has_a_timeout():
    m = load("gcp-cloud-run")
    job = m["resource"]["google_cloud_run_v2_job.single"]
    task = one(one(job["template"])["template"])
    assert one(task["max_retries"]) == 0
    assert one(task["timeout"]) == "${var.task_timeout_seconds}s"
    assert one(task["execution_environment"]) == "EXECUTION_ENVIRONMENT_GEN2"
    assert m["locals"]["job_env"]  # SCALR_AGENT_SINGLE is in it
    assert "SCALR_AGENT_SINGLE" in (DEPLOY / "gcp-cloud-run" / "main.tf").read_text()


def test_cloud_run_service_health_on_port_cpu_always_and_memory():
    m = load("gcp-cloud-run")
    svc = m["resource"]["google_cloud_run_v2_service.agents"]
    container = one(one(svc["template"])["containers"])
    port = one(one(container["ports"])["container_port"])
    # The agent serves health on $PORT (Cloud Run sets it to the container port): no address
    # of its own that could drift from the port.
    assert "SCALR_AGENT_HEALTH_ADDR =" not in (DEPLOY / "gcp-cloud-run" / "main.tf").read_text()
    resources = one(container["resources"])
    assert one(resources["cpu_idle"]) is False
    for probe in ("startup_probe", "liveness_probe"):
        get = one(one(container[probe])["http_get"])
        assert one(get["path"]) == "/healthz" and one(get["port"]) == port
    scaling = one(one(svc["template"])["scaling"])
    assert one(scaling["min_instance_count"]) == one(scaling["max_instance_count"])
    memory = default("gcp-cloud-run", "memory")
    assert memory.endswith("Gi") and int(memory[:-2]) >= 4


# --- Azure Container Apps ------------------------------------------------------------------

def test_container_apps_job_scales_on_queue_depth_with_managed_identity():
    m = load("azure-container-apps")
    job = m["resource"]["azurerm_container_app_job.single"]
    assert one(job["replica_retry_limit"]) == 0
    assert one(one(job["identity"])["type"]) == "UserAssigned"
    secrets = {one(s["name"]): s for s in job["secret"]}
    assert set(secrets) == {"pool-token", "queue-token"}
    for s in secrets.values():
        assert "key_vault_secret_id" in s and "value" not in s
    scale = one(one(job["event_trigger_config"])["scale"])
    assert one(scale["min_executions"]) == 0
    rule = one(scale["rules"])
    assert one(rule["custom_rule_type"]) == "metrics-api"
    meta = one(rule["metadata"])
    assert set(meta) <= METRICS_API_PARAMS
    assert meta["valueLocation"] == "pending" and meta["authMode"] == "bearer"
    assert 'trimsuffix(var.scalr_url, "/")}/api/agent/v1/queue' in meta["url"]
    auth = one(rule["authentication"])
    assert one(auth["secret_name"]) == "queue-token" and one(auth["trigger_parameter"]) == "token"
    container = one(one(job["template"])["container"])
    token_env = [e for e in container["env"] if one(e["name"]) == "SCALR_AGENT_TOKEN"]
    assert one(token_env[0]["secret_name"]) == "pool-token"
