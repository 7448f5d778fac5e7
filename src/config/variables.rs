//! Every environment variable the agent reads, with legacy aliases, defaults and meanings.
//!
//! size: one table of every variable (the README's table is checked against it); it is split only by being data, one entry per variable.

/// Every variable the agent reads, with its legacy aliases, default and meaning.
///
/// The README's configuration table is checked against this list by a unit test, so the two
/// cannot drift apart.
pub const VARIABLES: &[Variable] = &[
    var("SCALR_URL", &[], "", "Control-plane URL (needed by `run`)."),
    var(
        "SCALR_AGENT_TOKEN",
        &["SCALR_TOKEN"],
        "",
        "Pool token (needed by `run`); never passed to tasks.",
    ),
    var(
        "SCALR_AGENT_TOKEN_FILE",
        &[],
        "",
        "Absolute path of a file holding the pool token (a Kubernetes or Container Apps secret mount), instead of `SCALR_AGENT_TOKEN` (both set: refused). Read once at start: a regular file of at most 16 KiB, surrounding whitespace dropped, links followed; refused when others may read it (mode 0400, or 0440 with the agent's group: Kubernetes `defaultMode: 0400`), since where Landlock is missing a run could.",
    ),
    var(
        "SCALR_AGENT_NAME",
        &[],
        "host name",
        "Unique agent name in the pool.",
    ),
    var(
        "SCALR_AGENT_DEBUG",
        &["SCALR_DEBUG"],
        "false",
        "Debug logs.",
    ),
    var(
        "SCALR_AGENT_LOG_FORMAT",
        &["SCALR_LOG_FORMAT"],
        "plain",
        "`plain` (alias `dev`) or `json` (one JSON object per line).",
    ),
    var(
        "SCALR_AGENT_DATA_DIR",
        &["SCALR_WORK_DIR", "SCALR_DATA_HOME"],
        "/var/lib/scalr-agent",
        "Run data; must allow exec. Stages run as dedicated uids that must traverse every directory above it (`o+x`; 0711 is enough): `exec`, `run` and `doctor` check at start and stop with exit 64 naming the first directory that does not let them.",
    ),
    var(
        "SCALR_AGENT_CACHE_DIR",
        &[],
        "the data dir",
        "Software (and later provider) caches; may be shared by several agents.",
    ),
    var(
        "SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB",
        &[],
        "5120",
        "Soft LRU limit of cached binaries; a binary in use is never evicted.",
    ),
    var(
        "SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS",
        &[],
        "10",
        "Remove binaries unused this many days.",
    ),
    var(
        "SCALR_AGENT_CA_CERT",
        &["SCALR_CA_CERT"],
        "",
        "Extra CA bundle: a PEM file path, inline PEM, or base64 of a PEM bundle; added to the system and built-in roots.",
    ),
    var(
        "SCALR_AGENT_CONTAINER_TASK_CA_CERT",
        &["SCALR_CONTAINER_TASK_CA_CERT"],
        "",
        "CA certificates trusted by stages only (the Scalr agent's name for its task containers' bundle): a PEM file path, inline PEM, or base64; added to the system roots and `SCALR_AGENT_CA_CERT` in the bundle stages get (`SSL_CERT_FILE`). The agent's own connections do not trust it.",
    ),
    var(
        "HTTP_PROXY",
        &["http_proxy"],
        "",
        "Proxy for `http://` URLs.",
    ),
    var(
        "HTTPS_PROXY",
        &["https_proxy"],
        "",
        "Proxy for `https://` URLs.",
    ),
    var(
        "NO_PROXY",
        &["no_proxy"],
        "",
        "Comma-separated hosts, domains and CIDRs that bypass the proxy.",
    ),
    var(
        "SCALR_AGENT_HTTP_READ_TIMEOUT",
        &[],
        "60s",
        "Idle timeout of one read on a connection (seconds or `90s`, `2m`); downloads have no whole-transfer timeout.",
    ),
    var(
        "SCALR_AGENT_HTTP_CONNECT_TIMEOUT",
        &[],
        "15s",
        "TCP+TLS connect timeout.",
    ),
    var(
        "SCALR_AGENT_HTTP_MAX_RETRIES",
        &[],
        "5",
        "Retries of a request after a connection error, timeout, 408, 429 or 5xx.",
    ),
    var(
        "SCALR_AGENT_HTTP_BACKOFF",
        &[],
        "500ms",
        "First retry delay; doubles each retry (with jitter), capped at 30 s; `Retry-After` wins when larger.",
    ),
    var(
        "SCALR_AGENT_SOFTWARE_MIRROR_URL",
        &[],
        "",
        "Base URL of a mirror for all tools: `<base>/<tool>/` then the vendor's own layout (see README).",
    ),
    var(
        "SCALR_AGENT_TERRAFORM_MIRROR_URL",
        &[],
        "https://releases.hashicorp.com/terraform",
        "Base URL for Terraform releases (`<base>/<V>/terraform_<V>_...`).",
    ),
    var(
        "SCALR_AGENT_OPENTOFU_MIRROR_URL",
        &[],
        "https://github.com/opentofu/opentofu/releases/download",
        "Base URL for OpenTofu releases (`<base>/v<V>/tofu_<V>_...`).",
    ),
    var(
        "SCALR_AGENT_OPA_MIRROR_URL",
        &[],
        "https://github.com/open-policy-agent/opa/releases/download",
        "Base URL for OPA releases (`<base>/v<V>/opa_linux_<arch>_static`).",
    ),
    var(
        "SCALR_AGENT_INFRACOST_MIRROR_URL",
        &[],
        "GitHub `infracost/infracost` (v0.x), `infracost/cli` (v2+)",
        "Base URL for Infracost releases (`<base>/v<V>/infracost-linux-<arch>.tar.gz`).",
    ),
    var(
        "SCALR_AGENT_SOFTWARE_TRUSTED_KEYS",
        &[],
        "",
        "Comma-separated paths of armored OpenPGP public keys trusted, besides the vendors' pinned keys, to sign Terraform and OpenTofu checksum files (a private mirror's re-signed files).",
    ),
    var(
        "SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK",
        &[],
        "required",
        "`required`, or `disabled` to accept checksum files without an OpenPGP signature (every install then logs a warning). SHA256 is always checked.",
    ),
    var(
        "SCALR_AGENT_SOFTWARE_MAX_SIZE_MB",
        &[],
        "1024",
        "Largest download and largest extracted executable accepted.",
    ),
    var(
        "SCALR_AGENT_PROVIDER_CACHE_ENABLED",
        &[],
        "true",
        "The shared provider store: runs get store entries linked into their plugin cache, and providers they download are added to the store afterwards (see README, Provider cache).",
    ),
    var(
        "SCALR_AGENT_PROVIDER_CACHE_SIZE_LIMIT_MB",
        &[],
        "2560",
        "Soft size limit of the provider store: least recently used entries not in use are evicted above it (entries unused for `SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS` too).",
    ),
    var(
        "SCALR_AGENT_PROVIDER_CACHE_CONCURRENCY",
        &[],
        "10",
        "Provider store fills (downloads) running at once, across all runs of this agent.",
    ),
    var(
        "SCALR_AGENT_PROVIDER_CACHE_DROP_KERNEL_PAGES",
        &[],
        "true",
        "After a run, drop the kernel's page cache of the store entries it used that no other run uses (`posix_fadvise(DONTNEED)`; the files stay), so cached providers do not count against the agent's memory.",
    ),
    var(
        "SCALR_AGENT_PROVIDER_NETWORK_MIRRORS",
        &[],
        "[]",
        "JSON list of provider network mirrors `{\"url\", \"token\"?, \"include\"?: [\"host/namespace/type\"]}` (`*` = one segment) the store is filled from, in order, before the origin registry.",
    ),
    var(
        "SCALR_AGENT_PROVIDER_REGISTRY_HOSTS",
        &[],
        "",
        "JSON object `{\"host\": \"<providers.v1 base URL>\"}` replacing service discovery for those registry hosts, for the store and (as a `host` block) for runs.",
    ),
    var(
        "SCALR_AGENT_HOOKS_DIR",
        &[],
        "",
        "Agent-level hooks baked into the image: executables or scripts named `pre-init`, `pre-plan`, `post-plan`, `pre-apply`, `post-apply`, run before the workspace's hook of the same phase.",
    ),
    var(
        "SCALR_AGENT_KEEP_TASK_DIRS",
        &[],
        "false",
        "Keep each task's directory after it finishes, for debugging (it holds the run's variables: leave off in production).",
    ),
    var(
        "SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB",
        &[],
        "512",
        "Largest plan file, plan JSON or cost estimate the agent reads back from a task; a larger one is refused and fails the task.",
    ),
    var(
        "SCALR_AGENT_CANCEL_GRACE",
        &[],
        "30s",
        "After a timeout or a graceful cancel, how long a stage has to stop after SIGINT before its whole process tree is killed.",
    ),
    var(
        "SCALR_AGENT_TASK_READ_PATHS",
        &[],
        "",
        "Comma-separated absolute paths tasks may read and execute besides the system directories and the binary cache (e.g. a provider mirror mounted into the container); everything else outside the task directory stays hidden by Landlock.",
    ),
    var(
        "PATH",
        &[],
        "the standard system PATH",
        "The agent's PATH; tasks get their tool directory and `HOME/.local/bin` first, then this (so tools added by an image's `ENV PATH` stay reachable).",
    ),
    var(
        "SCALR_AGENT_MIN_ISOLATION",
        &[],
        "degraded",
        "Minimum isolation level for running tasks: `isolated`, `degraded` or `unisolated`. A platform below it refuses tasks; above it but not `isolated`, each task's log starts with a warning. See `scalr-agent doctor`.",
    ),
    var(
        "SCALR_AGENT_TASK_UID_RANGE",
        &[],
        "20000-20999",
        "Dedicated uids (gid = uid) for concurrently running tasks, `FIRST-LAST`; must not contain the agent's own uid. Leased through the data directory, so agents and `exec`s sharing one never share a uid; agents on different data directories need disjoint ranges. They need no `/etc/passwd` lines to run, but `ssh`, `git` over ssh and `whoami` need a user entry: with `libnss-wrapper` installed (it is in the images) each stage gets one (see `SCALR_AGENT_NSS_WRAPPER_LIB`).",
    ),
    var(
        "SCALR_AGENT_NSS_WRAPPER_LIB",
        &[],
        "the standard library paths",
        "Path of `libnss_wrapper.so` (Debian's `libnss-wrapper`). When it exists, each stage runs with a user entry of its own (name `scalr-task`, or the image's name for that uid; home = the task's `HOME`) from `passwd` and `group` files the agent writes into the task's directory, through `LD_PRELOAD`; `/etc/passwd` is never changed. Looked for in `/usr/lib/<arch>-linux-gnu/` when unset; without it `doctor` warns that task uids do not resolve.",
    ),
    var(
        "SCALR_AGENT_TASK_RLIMIT_NOFILE",
        &[],
        "8192",
        "Open files per stage process (`RLIMIT_NOFILE`).",
    ),
    var(
        "SCALR_AGENT_TASK_RLIMIT_FSIZE_MB",
        &[],
        "10240",
        "Largest file a stage process may write (`RLIMIT_FSIZE`).",
    ),
    var(
        "SCALR_AGENT_TASK_RLIMIT_NPROC",
        &[],
        "4096",
        "Processes and threads per task uid (`RLIMIT_NPROC`); only with a dedicated uid.",
    ),
    var(
        "SCALR_AGENT_SANDBOX_TEST_DENY",
        &[],
        "",
        "Tests only: comma-separated `landlock` (Landlock calls fail with `ENOSYS`), `setresuid` (uid changes fail with `EPERM`) and `openat2` (`openat2` fails with `ENOSYS`, so task files are resolved by the per-component walk), emulating a weaker platform by running the agent behind a seccomp filter. Never set in production.",
    ),
    var(
        "SCALR_AGENT_DRIVER",
        &["SCALR_DRIVER"],
        "local",
        "Task driver of `run`; only `local` (each stage a sandboxed child process) is supported. `run --local` says the same.",
    ),
    var(
        "SCALR_AGENT_CONCURRENCY",
        &[],
        "1",
        "Task slots of `run` (1-16). One by default: a Terraform run can take the reference 2 vCPU / 4 GB on its own; scale with more agents or raise it on bigger hosts.",
    ),
    var(
        "SCALR_AGENT_SINGLE",
        &["SCALR_SINGLE"],
        "false",
        "Single mode (serverless): take one task, run it, report, deregister, exit.",
    ),
    var(
        "SCALR_AGENT_SINGLE_WAIT_TIMEOUT",
        &[],
        "120s",
        "Single mode: how long to wait for the task before deregistering and exiting 0.",
    ),
    var(
        "SCALR_AGENT_WORKER_ON_STOP_ACTION",
        &[],
        "drain",
        "On SIGTERM/SIGINT: `drain` (take no task, let running ones finish until the drain timeout, then grace-shutdown), `grace-shutdown` (SIGTERM the tools, SIGKILL after the grace timeout) or `force-shutdown` (SIGKILL now). A second signal exits at once (the spool is delivered on the next start).",
    ),
    var(
        "SCALR_AGENT_WORKER_DRAIN_TIMEOUT",
        &[],
        "60s (0 on Cloud Run)",
        "Drain: how long running tasks may go on before grace-shutdown.",
    ),
    var(
        "SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT",
        &[],
        "30s (4s on Cloud Run)",
        "Time between SIGTERM to a tool and SIGKILL.",
    ),
    var(
        "SCALR_AGENT_WORKER_REPORT_TIMEOUT",
        &[],
        "10s (4s on Cloud Run)",
        "Time kept after the tools stopped to deliver logs and final statuses. The defaults total 100 s, inside Fargate's 120 s stop window.",
    ),
    var(
        "SCALR_AGENT_DISCONNECT_ON_STOP",
        &[],
        "true",
        "Deregister from the pool on stop, freeing the name at once.",
    ),
    var(
        "SCALR_AGENT_STATE_PERSISTENCE_ENABLED",
        &[],
        "true",
        "Keep the connection state in `$SCALR_AGENT_DATA_DIR/.agent.state` so a restarted agent takes its identity back; `false` for serverless.",
    ),
    var(
        "SCALR_AGENT_HEALTH_ADDR",
        &[],
        "",
        "Address of an HTTP listener serving `/healthz`, `/readyz` (registered, heartbeat recent, not stopping) and `/metrics` (Prometheus text: tasks, slots, heartbeats, uploads, software cache hits, misses and bytes downloaded), e.g. `0.0.0.0:9090`; port `0` picks a free port (logged at start); off when unset.",
    ),
    var(
        "SCALR_AGENT_TASK_LOG_LIMIT_MB",
        &[],
        "100",
        "Largest log of one task; past it the task's output is dropped after one truncation line, and `result.json` says `log_truncated: true` (the task goes on).",
    ),
    var(
        "SCALR_AGENT_TASK_MEMORY_LIMIT_MB",
        &[],
        "",
        "Memory bound of each task: a memory cgroup per task (cgroup v1 memory hierarchy, or v2 with the memory controller delegated to the agent's cgroup) that every stage joins; the kernel kills the task's process, not the agent. Unset: no per-task bound (`doctor` says so). A task fails when its cgroup cannot be created.",
    ),
    var(
        "SCALR_AGENT_TASK_INHERIT_IDENTITY",
        &[],
        "true",
        "Stages get the platform's identity variables present in the agent's environment (the documented list: ECS, EKS IRSA and Pod Identity, ACA, AKS, App Service, Google's project), token files copied into the task 0400 for its uid, credentials masked; `false`: none. See [Identity of runs](#identity-of-runs).",
    ),
    var(
        "SCALR_AGENT_TASK_ENV_PASSTHROUGH",
        &[],
        "",
        "Comma-separated names or `PREFIX*` patterns of more agent variables stages get. An entry that could match a name the agent reads (the configuration table, legacy names, `SCALR_*`, `*`), a name the agent sets for stages (`PATH`, `HOME`, `TF_VAR_*`, ...) or an identity variable is refused at start (exit 64).",
    ),
    var(
        "SCALR_AGENT_SPOOL_LIMIT_MB",
        &[],
        "1024",
        "Disk bound of the spool (logs, artifacts and final statuses not yet delivered); past it a task's log is truncated with a clear line.",
    ),
    var(
        "SCALR_AGENT_VCS_URL",
        &[],
        "",
        "`relay`: the VCS's base URL (scheme, host, port, optional path prefix such as `/gitlab`), without credentials; every relayed path is joined to it by the relay.",
    ),
    var(
        "SCALR_AGENT_VCS_VENDOR",
        &[],
        "",
        "`relay`: `github_enterprise`, `gitlab`, `bitbucket_datacenter` or `azure_devops`; chooses the preset rules.",
    ),
    var(
        "SCALR_AGENT_VCS_ALLOWED_PROJECTS",
        &[],
        "all",
        "`relay`: regular expression over the whole decoded project (`owner/repo`, `group/sub/repo`, `PROJECT/repo`, `org/project/repo`); anchored by the relay as `^(?:…)$`.",
    ),
    var(
        "SCALR_AGENT_RELAY_RULES_FILE",
        &[],
        "",
        "`relay`: absolute path of the operator's rules (`allow|deny METHOD PATTERN [only] [key=value…]` per line), checked before the preset; an empty or unreadable file stops the relay at start.",
    ),
    var(
        "SCALR_AGENT_RELAY_PARALLELISM",
        &[],
        "4",
        "`relay`: requests relayed at the same time (one long poll each).",
    ),
    var(
        "SCALR_AGENT_RELAY_REQUEST_TIMEOUT",
        &[],
        "30m",
        "`relay`: bound of one request, from acquisition to the last response byte.",
    ),
    var(
        "SCALR_AGENT_RELAY_IDLE_TIMEOUT",
        &[],
        "60s",
        "`relay`: a request fails when none of its bytes moved for this long, either way (request body from the control plane or into the VCS, response head or body from the VCS or into the control plane); a slow but steady body never times out.",
    ),
    var(
        "SCALR_AGENT_RELAY_MAX_BODY_MB",
        &[],
        "4096",
        "`relay`: largest request or response body relayed; a larger one fails the request.",
    ),
    var(
        "SCALR_AGENT_RELAY_STOP_TIMEOUT",
        &[],
        "30s",
        "`relay`: on SIGTERM, how long in-flight requests may take to finish before they are cancelled and reported failed.",
    ),
    var(
        "SCALR_AGENT_METADATA_<tag>",
        &[],
        "",
        "`relay`: metadata tags sent at registration to identify the process or machine, e.g. `SCALR_AGENT_METADATA_instance_id`.",
    ),
    var(
        "ECS_CONTAINER_METADATA_URI_V4",
        &[],
        "",
        "Set by AWS ECS/Fargate; read only to report the platform.",
    ),
    var(
        "K_SERVICE",
        &[],
        "",
        "Set by Cloud Run services; reported as the platform, and the stop defaults fit Cloud Run's 10 s window.",
    ),
    var(
        "PORT",
        &[],
        "",
        "Set by Cloud Run services (with `K_SERVICE`): without `SCALR_AGENT_HEALTH_ADDR`, `run` serves the health listener on `0.0.0.0:$PORT`, the port Cloud Run routes and probes. Ignored elsewhere.",
    ),
    var(
        "CLOUD_RUN_JOB",
        &[],
        "",
        "Set by Cloud Run jobs; reported as the platform, and the stop defaults fit Cloud Run's 10 s window.",
    ),
    var(
        "CONTAINER_APP_NAME",
        &[],
        "",
        "Set by Azure Container Apps apps; read only to report the platform.",
    ),
    var(
        "CONTAINER_APP_JOB_NAME",
        &[],
        "",
        "Set by Azure Container Apps jobs; read only to report the platform.",
    ),
    var(
        "KUBERNETES_SERVICE_HOST",
        &[],
        "",
        "Set in Kubernetes pods; read only to report the platform.",
    ),
    var(
        "GCE_METADATA_HOST",
        &[],
        "169.254.169.254",
        "`host[:port]` of the cloud metadata server `doctor` probes from a stage (on a cloud platform, or wherever this is set); Google's client libraries read the same variable. Not passed to stages.",
    ),
];

/// One documented environment variable.
#[derive(Debug)]
pub struct Variable {
    pub name: &'static str,
    pub legacy: &'static [&'static str],
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn var(
    name: &'static str,
    legacy: &'static [&'static str],
    default: &'static str,
    meaning: &'static str,
) -> Variable {
    Variable {
        name,
        legacy,
        default,
        meaning,
    }
}

pub(super) fn is_ours(name: &str) -> bool {
    VARIABLES
        .iter()
        .any(|v| v.name == name || v.legacy.contains(&name))
}

pub(super) fn leak_name(name: &str) -> &'static str {
    VARIABLES
        .iter()
        .flat_map(|v| std::iter::once(&v.name).chain(v.legacy.iter()))
        .find(|n| **n == name)
        .copied()
        .unwrap_or("SCALR_AGENT_*")
}

pub(super) fn unknown_variables<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .filter(|n| {
            n.starts_with("SCALR_")
                && !n.starts_with("SCALR_AGENT_METADATA_")
                && !is_ours(n)
                && !RESERVED.contains(&n.as_str())
                && !CONTAINER_DRIVER.contains(&n.as_str())
        })
        .cloned()
        .collect();
    unknown.sort();
    unknown
}

/// Settings of the Scalr agent's Docker and Kubernetes drivers, which have no meaning for the
/// local driver: named at start so a migrated agent's operator knows they do nothing here.
const CONTAINER_DRIVER: &[&str] = &[
    "SCALR_AGENT_CONTAINER_TASK_IMAGE",
    "SCALR_AGENT_CONTAINER_TASK_IMAGE_MODE",
    "SCALR_AGENT_CONTAINER_TASK_IMAGE_REGISTRY",
    "SCALR_AGENT_CONTAINER_TASK_CPU_REQUEST",
    "SCALR_AGENT_CONTAINER_TASK_CPU_LIMIT",
    "SCALR_AGENT_CONTAINER_TASK_MEM_REQUEST",
    "SCALR_AGENT_CONTAINER_TASK_MEM_LIMIT",
    "SCALR_AGENT_CONTAINER_TASK_SCHEDULING_TIMEOUT",
    "SCALR_AGENT_CONTAINER_TASK_NODE_SELECTOR",
    "SCALR_AGENT_CONTAINER_TASK_TOLERATIONS",
    "SCALR_AGENT_CONTAINER_TASK_ACQUIRE_TIMEOUT",
    "SCALR_AGENT_KUBERNETES_TASK_NAMESPACE",
    "SCALR_AGENT_DOCKER_ADDR",
    "SCALR_DOCKER_ADDR",
];

/// The container-driver settings that are set (a driver other than `local` is refused
/// elsewhere).
pub(super) fn ignored_variables<'a>(
    vars: impl Iterator<Item = (&'a String, &'a String)>,
) -> Vec<String> {
    let mut ignored: Vec<String> = vars
        .map(|(k, _)| k)
        .filter(|k| CONTAINER_DRIVER.contains(&k.as_str()))
        .cloned()
        .collect();
    ignored.sort();
    ignored
}

/// Names of the Scalr agent that later parts of this agent will read; not warned about.
const RESERVED: &[&str] = &[
    "SCALR_AGENT_HOOKS_DIR",
    "SCALR_AGENT_TLS_CERT_FILE",
    "SCALR_AGENT_TLS_KEY_FILE",
    "SCALR_AGENT_ENV",
];
