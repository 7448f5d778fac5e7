"""The Helm chart: rendered over a matrix of values with Helm's own engine, linted, every
manifest checked strictly against the Kubernetes schemas (several versions) and the KEDA objects
against KEDA's CRD-derived models; the stop window, probes, security profiles and refused values
are asserted."""

import copy
import json

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

from conftest import CHART, RENDER_DIR

KUBE_VERSIONS = ["1.25.0", "1.30.0", kubernetes_validate.latest_version()]
BASE = {"scalrUrl": "https://example.scalr.io", "token": {"existingSecret": "scalr-agent-pool"}}
QUEUE = {"queue": {"existingSecret": "scalr-agent-queue"}}
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUU\n-----END CERTIFICATE-----\n"


def merged(**over):
    values = copy.deepcopy(BASE)
    for key, value in over.items():
        values[key] = value
    return values


# name -> values; every case is rendered, linted and validated.
MATRIX = {
    "default": merged(),
    "restricted-ca-proxy-irsa": merged(
        securityProfile="restricted",
        caBundle={"pem": PEM},
        proxy={"https": "http://proxy:3128", "noProxy": "10.0.0.0/8,.internal"},
        serviceAccount={"create": True, "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/runs"}},
        extraEnv=[{"name": "TF_LOG", "value": "INFO"}, {"name": "AWS_REGION", "value": "eu-west-1"}],
        agent={"concurrency": 4, "minIsolation": "degraded"},
        deployment={"replicas": 3, "podDisruptionBudget": {"enabled": False}},
    ),
    "grace-shutdown-pvc-inline-token": merged(
        token={"value": "pool-token-value"},
        stop={"action": "grace-shutdown", "drainTimeoutSeconds": 60, "graceTimeoutSeconds": 20,
              "reportTimeoutSeconds": 10, "marginSeconds": 5},
        dataVolume={"existingClaim": "agent-data"},
        deployment={"replicas": 1},
    ),
    "scaledjob-azure-workload-identity": merged(
        mode="scaledJob",
        scaledJob=QUEUE,
        serviceAccount={"create": True, "annotations": {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000001"}},
        podLabels={"azure.workload.identity/use": "true"},
        caBundle={"existingConfigMap": "corp-ca", "key": "bundle.pem"},
    ),
    "scaledjob-restricted-digest-force": merged(
        mode="scaledJob",
        scaledJob={**QUEUE, "maxReplicaCount": 30, "activeDeadlineSeconds": 3600},
        securityProfile="restricted",
        image={"repository": "registry.example/scalr-agent", "digest": "sha256:" + "a" * 64},
        stop={"action": "force-shutdown", "drainTimeoutSeconds": 0, "graceTimeoutSeconds": 0,
              "reportTimeoutSeconds": 10, "marginSeconds": 5},
    ),
}


def render(values):
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    out = chart.render(values, name="agents", namespace="scalr", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_spec(docs):
    for d in docs:
        if d["kind"] == "Deployment":
            return d["spec"]["template"]["spec"]
        if d["kind"] == "ScaledJob":
            return d["spec"]["jobTargetRef"]["template"]["spec"]
    raise AssertionError("no Deployment or ScaledJob rendered")


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module", params=sorted(MATRIX))
def case(request):
    values = MATRIX[request.param]
    docs = render(values)
    RENDER_DIR.mkdir(parents=True, exist_ok=True)
    kept = list(docs)
    for job in by_kind(docs, "ScaledJob"):
        # checkov does not read KEDA objects: it checks the Jobs KEDA will create from this.
        meta = {"name": job["metadata"]["name"], "namespace": job["metadata"]["namespace"],
                "annotations": job["metadata"]["annotations"]}
        kept.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job["spec"]["jobTargetRef"]})
    (RENDER_DIR / f"{request.param}.yaml").write_text(yaml.safe_dump_all(kept, sort_keys=False))
    return request.param, values, docs


def test_lint_is_clean(case):
    name, values, _ = case
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    # Severity 1 is informational ("icon is recommended"); warnings and errors fail.
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report["errors"], f"{name}: {bad} {report['errors']}"


def test_kubernetes_objects_are_valid_strictly(case):
    name, _, docs = case
    kube = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    assert kube, name
    for version in KUBE_VERSIONS:
        for doc in kube:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{name}: {doc['kind']} invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


def strict_roundtrip(model, doc):
    """Parses `doc` with KEDA's CRD-derived model; any field the CRD does not know is dropped by
    the model, so the round trip must give the document back unchanged."""
    parsed = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert parsed == doc, f"{doc['kind']}: fields unknown to KEDA's CRD:\n{json.dumps(doc, indent=1)}\n!=\n{json.dumps(parsed, indent=1)}"


# The metrics-api scaler's parameters (KEDA 2.13+ documentation), so a typo fails here.
METRICS_API_PARAMS = {"url", "format", "valueLocation", "targetValue", "activationTargetValue", "authMode", "unsafeSsl"}


def test_keda_objects_match_kedas_schemas(case):
    name, values, docs = case
    jobs = by_kind(docs, "ScaledJob")
    if values.get("mode") != "scaledJob":
        assert not jobs and not by_kind(docs, "TriggerAuthentication"), name
        return
    (job,) = jobs
    (auth,) = by_kind(docs, "TriggerAuthentication")
    strict_roundtrip(keda.ScaledJob, job)
    strict_roundtrip(keda.TriggerAuthentication, auth)
    # The Job template is a batch/v1 JobSpec: check it with the Kubernetes schemas too.
    as_job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": job["spec"]["jobTargetRef"]}
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(as_job, version, strict=True)
    (trigger,) = job["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    assert set(trigger["metadata"]) <= METRICS_API_PARAMS, trigger["metadata"]
    assert trigger["metadata"]["url"] == "https://example.scalr.io/api/agent/v1/queue"
    assert trigger["metadata"]["valueLocation"] == "pending"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "token", "name": "scalr-agent-queue", "key": "token"}]
    spec = job["spec"]["jobTargetRef"]
    assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never"
    env = env_of(spec["template"]["spec"]["containers"][0])
    assert env["SCALR_AGENT_SINGLE"] == "true"
    assert env["SCALR_AGENT_STATE_PERSISTENCE_ENABLED"] == "false"
    assert "SCALR_AGENT_HEALTH_ADDR" not in env


def window(stop):
    action = stop.get("action", "drain")
    drain, grace, report = stop.get("drainTimeoutSeconds", 60), stop.get("graceTimeoutSeconds", 30), stop.get("reportTimeoutSeconds", 10)
    own = {"drain": drain + grace + report, "grace-shutdown": grace + report, "force-shutdown": report}[action]
    return own + stop.get("marginSeconds", 5)


def test_stop_window_covers_the_agents_own(case):
    name, values, docs = case
    spec = pod_spec(docs)
    stop = values.get("stop", {})
    assert spec["terminationGracePeriodSeconds"] == window(stop), name
    env = env_of(spec["containers"][0])
    assert env["SCALR_AGENT_WORKER_ON_STOP_ACTION"] == stop.get("action", "drain")
    assert env["SCALR_AGENT_WORKER_DRAIN_TIMEOUT"] == f"{stop.get('drainTimeoutSeconds', 60)}s"
    assert env["SCALR_AGENT_WORKER_REPORT_TIMEOUT"] == f"{stop.get('reportTimeoutSeconds', 10)}s"


def test_deployment_probes_pdb_and_token(case):
    name, values, docs = case
    spec = pod_spec(docs)
    agent = spec["containers"][0]
    env = env_of(agent)
    # The pool token as a private file of a Secret volume, never in the environment.
    assert "SCALR_AGENT_TOKEN" not in env, name
    key = values["token"].get("existingSecretKey", "token")
    assert env["SCALR_AGENT_TOKEN_FILE"] == f"/etc/scalr-agent/token/{key}", name
    volume = next(v for v in spec["volumes"] if v["name"] == "token")
    assert volume["secret"]["secretName"] == values["token"].get("existingSecret", "agents-scalr-agent-token"), name
    assert volume["secret"]["items"] == [{"key": key, "path": key}], name
    restricted = values.get("securityProfile") == "restricted"
    assert volume["secret"]["defaultMode"] == (0o440 if restricted else 0o400), name
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "token")
    assert mount == {"name": "token", "mountPath": "/etc/scalr-agent/token", "readOnly": True}, name
    assert spec["automountServiceAccountToken"] is False
    if values.get("mode") == "scaledJob":
        return
    port = agent["ports"][0]["containerPort"]
    assert env["SCALR_AGENT_HEALTH_ADDR"] == f"0.0.0.0:{port}"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["startupProbe"]["httpGet"]["path"] == "/healthz"
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert len(pdbs) == int(values.get("deployment", {}).get("podDisruptionBudget", {}).get("enabled", True))
    secrets = by_kind(docs, "Secret")
    assert len(secrets) == int("value" in values["token"])


# Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
# the container-level controls the chart can influence.
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def pss_violations(spec, level):
    found = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(key)
    if any("hostPath" in v for v in spec.get("volumes", [])):
        found.append("hostPath volume")
    pod_sc = spec.get("securityContext", {})
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        caps = sc.get("capabilities", {})
        if sc.get("privileged"):
            found.append(f"{c['name']}: privileged")
        if not set(caps.get("add", [])) <= BASELINE_CAPS:
            found.append(f"{c['name']}: capabilities beyond baseline")
        if level == "restricted":
            if sc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{c['name']}: allowPrivilegeEscalation")
            if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                found.append(f"{c['name']}: capabilities")
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True or uid == 0:
                found.append(f"{c['name']}: runs as root")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                found.append(f"{c['name']}: seccomp")
    return found


def test_security_profiles(case):
    """`restricted` passes the restricted standard; `isolated` passes baseline and not restricted
    (root, with the capabilities the uid switch needs): what README.md says."""
    name, values, docs = case
    spec = pod_spec(docs)
    agent = spec["containers"][0]
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert agent["securityContext"]["allowPrivilegeEscalation"] is False
    assert pss_violations(spec, "baseline") == [], name
    env = env_of(agent)
    if values.get("securityProfile") == "restricted":
        assert pss_violations(spec, "restricted") == [], name
        assert spec["securityContext"]["runAsUser"] == 1000
        assert "SCALR_AGENT_TASK_UID_RANGE" not in env
        assert env["SCALR_AGENT_DATA_DIR"] == "/var/lib/scalr-agent/data"
        assert "initContainers" not in spec
    else:
        assert "runs as root" in " ".join(pss_violations(spec, "restricted"))
        assert spec["securityContext"]["runAsUser"] == 0
        assert set(agent["securityContext"]["capabilities"]["add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETPCAP", "SETUID"}
        (init,) = spec["initContainers"]
        assert "chmod 0711 /var/lib/scalr-agent" in init["command"][-1]
        assert env["SCALR_AGENT_DATA_DIR"] == "/var/lib/scalr-agent"


def test_ca_proxy_and_extra_env(case):
    name, values, docs = case
    spec = pod_spec(docs)
    env = env_of(spec["containers"][0])
    ca = values.get("caBundle", {})
    if ca:
        key = ca.get("key", "ca.crt")
        assert env["SCALR_AGENT_CA_CERT"] == f"/etc/scalr-agent/ca/{key}"
        (vol,) = [v for v in spec["volumes"] if v["name"] == "ca"]
        assert vol["configMap"]["name"] == ca.get("existingConfigMap", "agents-scalr-agent-ca")
        if ca.get("pem"):
            (cm,) = by_kind(docs, "ConfigMap")
            assert cm["data"][key] == PEM
    else:
        assert "SCALR_AGENT_CA_CERT" not in env
    proxy = values.get("proxy", {})
    assert env.get("HTTPS_PROXY") == proxy.get("https")
    assert env.get("NO_PROXY") == proxy.get("noProxy")
    for extra in values.get("extraEnv", []):
        assert env[extra["name"]] == extra["value"]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"extraEnv": [{"name": "SCALR_AGENT_TOKEN", "value": "x"}]}, "extraEnv[0]: SCALR_AGENT_TOKEN is set by the chart itself"),
        ({"extraEnv": [{"name": "A", "value": "1"}, {"name": "https_proxy", "value": "x"}]}, "extraEnv[1]: https_proxy is set by the chart itself"),
        ({"extraEnv": [{"name": "SCALR_TOKEN", "value": "x"}]}, "extraEnv[0]: SCALR_TOKEN is set by the chart itself"),
        ({"scalrUrl": ""}, "scalrUrl is required"),
        ({"token": {"existingSecret": "", "value": ""}}, "token.existingSecret (a Secret holding the pool token) or token.value is required"),
        ({"mode": "scaledJob"}, "mode scaledJob needs scaledJob.queue.existingSecret"),
    ],
)
def test_refused_values_name_the_problem(over, message):
    with pytest.raises(helm.HelmError) as e:
        render(merged(**over))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "over, where",
    [
        ({"agent": {"concurrency": 17}}, "concurrency"),
        ({"stop": {"action": "sleep", "drainTimeoutSeconds": 1, "graceTimeoutSeconds": 1, "reportTimeoutSeconds": 1, "marginSeconds": 1}}, "action"),
        ({"replicas": 3}, "replicas"),
        ({"securityProfile": "privileged"}, "securityProfile"),
        ({"extraEnv": [{"name": "BAD-NAME", "value": "x"}]}, "name"),
        ({"image": {"repository": "x", "digest": "latest"}}, "digest"),
    ],
)
def test_values_schema_refuses(over, where):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmValuesError) as e:
        chart.validate_schema(merged(**over))
    assert where in str(e.value)
