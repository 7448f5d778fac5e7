//! `scalr-agent relay` end to end: the real binary between the fake gateway
//! (`support::gateway`) and a VCS made of Debian's `git http-backend` plus a fake API
//! (`support::git_server`), all on 127.0.0.1.

use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;

use crate::support::gateway::{Gateway, Outcome, next_chunk, outcome};
use crate::support::git_server::GitServer;
use crate::support::relay::{RelayProc, git, make_repos};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

struct Setup {
    gw: Gateway,
    vcs: GitServer,
    relay: RelayProc,
    dir: tempfile::TempDir,
}

/// Repositories in every vendor's layout, the VCS, the gateway and a relay for `vendor`.
async fn setup(vendor: &str, extra: &[(&str, &str)]) -> Setup {
    let dir = crate::support::dirs::tempdir();
    let root = dir.path().join("repos");
    make_repos(
        &root,
        3,
        4,
        16 * 1024,
        &[
            "acme/net/infra.git",
            "acme/infra.git",
            "scm/ACME/infra.git",
            "acme/ops/_git/infra",
        ],
    );
    let vcs = GitServer::start(&root).await;
    let gw = Gateway::start().await;
    let relay = RelayProc::start(&gw.url, &vcs.base, vendor, extra);
    gw.wait_for(Duration::from_secs(60), "the relay's registration", |i| {
        !i.registrations.is_empty()
    })
    .await;
    Setup {
        gw,
        vcs,
        relay,
        dir,
    }
}

fn refused(o: &Outcome) -> Option<(&str, &str)> {
    match o {
        Outcome::Refused { rule_set, reason } => Some((rule_set, reason)),
        _ => None,
    }
}

async fn expect_refused(gw: &Gateway, method: &str, path: &str) -> String {
    let o = gw.call(method, path, &[], None).await;
    match refused(&o) {
        Some((set, reason)) => format!("{set}: {reason}"),
        None => panic!("{method} {path} was not refused: {o:?}"),
    }
}

async fn expect_ok(gw: &Gateway, method: &str, path: &str) -> Vec<u8> {
    let body = (method != "GET").then(|| Body::from("{}"));
    let (status, _, body) = gw.call(method, path, &[], body).await.collect().await;
    assert_eq!(
        status,
        200,
        "{method} {path}: {:?}",
        String::from_utf8_lossy(body.as_ref().unwrap())
    );
    body.unwrap()
}

fn objects(repo: &std::path::Path) -> String {
    let mut lines: Vec<String> = git(repo, &["rev-list", "--all", "--objects"])
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn git_clone_and_fetch_through_the_relay_match_a_direct_clone() {
    let s = setup(
        "gitlab",
        &[("SCALR_AGENT_VCS_ALLOWED_PROJECTS", "acme/net/.*")],
    )
    .await;
    let work = s.dir.path().join("repos/work");
    let via = s.dir.path().join("via-relay");
    let direct = s.dir.path().join("direct");
    let front = format!("{}acme/net/infra.git", s.gw.front());
    git(
        s.dir.path(),
        &["clone", "-q", &front, via.to_str().unwrap()],
    );
    let direct_url = format!("{}/acme/net/infra.git", s.vcs.base);
    git(
        s.dir.path(),
        &["clone", "-q", &direct_url, direct.to_str().unwrap()],
    );
    assert_eq!(objects(&via), objects(&direct));
    assert!(!objects(&via).is_empty());
    assert!(
        s.vcs.seen().iter().any(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "git-protocol" && v == "version=2")),
        "Git-Protocol was not forwarded"
    );
    // A new commit on the server, fetched through the relay.
    std::fs::write(work.join("README"), "more\n").unwrap();
    git(&work, &["commit", "-qam", "more"]);
    let bare = s.dir.path().join("repos/acme/net/infra.git");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    git(&via, &["fetch", "-q", "origin"]);
    assert_eq!(
        git(&via, &["rev-parse", "origin/main"]),
        git(&work, &["rev-parse", "HEAD"])
    );
    // A push through the relay is refused and never reaches the VCS.
    std::fs::write(via.join("x"), "x").unwrap();
    git(&via, &["add", "x"]);
    git(&via, &["commit", "-qm", "x"]);
    let out = std::process::Command::new("git")
        .args(["push", "origin", "HEAD:main"])
        .current_dir(&via)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a push through the relay succeeded");
    let e = expect_refused(&s.gw, "POST", "/acme/net/infra.git/git-receive-pack").await;
    assert!(e.starts_with("push:"), "{e}");
    let e = expect_refused(
        &s.gw,
        "GET",
        "/acme/net/infra.git/info/refs?service=git-receive-pack",
    )
    .await;
    assert!(e.starts_with("push:"), "{e}");
    assert!(
        !s.vcs.seen().iter().any(|r| r.path.contains("receive-pack")),
        "receive-pack reached the VCS"
    );
    // The audit has a line per request.
    s.relay
        .wait_log("\"rule\":\"git upload-pack\"", Duration::from_secs(10))
        .await;
    let log = s.relay.log();
    assert!(log.contains("\"project\":\"acme/net/infra\""), "{log}");
}

/// Allowed and refused requests of one vendor's preset; every other method on each allowed
/// path and a list of off-list paths are refused, and none of them reaches the VCS.
async fn preset(vendor: &str, allowed: &[(&str, &str)], off_list: &[&str]) {
    let s = setup(vendor, &[]).await;
    for (m, p) in allowed {
        expect_ok(&s.gw, m, p).await;
    }
    let before = s.vcs.seen().len();
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
    ];
    let mut refusals = 0;
    for (_, p) in allowed {
        let ok: Vec<&str> = allowed
            .iter()
            .filter(|(_, q)| q == p)
            .map(|(m, _)| *m)
            .collect();
        for m in methods.iter().filter(|m| !ok.contains(m)) {
            let e = expect_refused(&s.gw, m, p).await;
            assert!(e.starts_with("allowlist:"), "{m} {p}: {e}");
            refusals += 1;
        }
    }
    for p in off_list {
        for m in methods {
            expect_refused(&s.gw, m, p).await;
            refusals += 1;
        }
    }
    assert_eq!(
        s.vcs.seen().len(),
        before,
        "a refused request reached the VCS"
    );
    let seen = s
        .relay
        .wait_count("\"outcome\":\"refused\"", refusals, Duration::from_secs(10))
        .await;
    assert_eq!(seen, refusals, "one audit line per refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_enterprise_preset() {
    let refs = "/acme/infra.git/info/refs?service=git-upload-pack";
    preset(
        "github_enterprise",
        &[
            ("GET", "/api/v3/repos/acme/infra/compare/abc...def"),
            (
                "POST",
                "/api/v3/repos/acme/infra/statuses/0123456789abcdef0123456789abcdef01234567",
            ),
            ("GET", "/api/v3/repos/acme/infra/pulls/7/files"),
            ("DELETE", "/api/v3/repos/acme/infra/deployments/3"),
            ("GET", refs),
        ],
        &[
            "/api/graphql",
            "/api/v3/repos/acme/infra/compare/abc...def/extra",
            "/api/v3/repos/acme/infra/contents/x",
            "/api/v3/repos/acme/infra/compareXabcXXXdef",
            "/api/v3/user/keys",
            "/api/v3/admin/users",
            "/acme/infra.git/git-receive-pack",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gitlab_preset() {
    preset(
        "gitlab",
        &[
            ("GET", "/api/v4/user"),
            (
                "GET",
                "/api/v4/projects/acme%2Fnet%2Finfra/repository/archive.tar.gz?sha=main",
            ),
            (
                "POST",
                "/api/v4/projects/acme%2Finfra/statuses/0123456789abcdef0123456789abcdef01234567",
            ),
            (
                "PUT",
                "/api/v4/projects/acme%2Finfra/merge_requests/4/notes/9",
            ),
            (
                "GET",
                "/acme/net/infra.git/info/refs?service=git-upload-pack",
            ),
        ],
        &[
            "/api/graphql",
            "/api/v4/projects/acme%2Finfra/repository/files/a%2Fb/raw",
            "/api/v4/projects/acme%2Finfra/variables",
            "/api/v4/projects/acme%2Finfra/members",
            "/api/v4/user/keys",
            "/api/v4/projects/acme%2Finfra/repository/commits/abc",
            "/acme/infra.git/info/refs",
            "/acme/infra.git/info/refs?service=git-upload-pack&x=1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bitbucket_datacenter_preset() {
    preset(
        "bitbucket_datacenter",
        &[
            (
                "GET",
                "/rest/api/1.0/projects/ACME/repos/infra/archive?format=tgz",
            ),
            (
                "GET",
                "/rest/api/latest/projects/ACME/repos/infra/pull-requests/5",
            ),
            (
                "PUT",
                "/rest/api/1.0/projects/ACME/repos/infra/pull-requests/5/comments/2",
            ),
            (
                "GET",
                "/rest/api/1.0/projects/ACME/repos/infra/pull-requests/5/comments/2",
            ),
            (
                "GET",
                "/scm/ACME/infra.git/info/refs?service=git-upload-pack",
            ),
        ],
        &[
            "/rest/api/1X0/projects/ACME/repos/infra",
            "/rest/api/1.0/projects/ACME/repos/infra/permissions/users",
            "/rest/api/1.0/admin/users",
            "/projects/ACME/repos/infra/raw/.spacelift/config.yml",
            "/scm/ACME/infra.git/git-receive-pack",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_devops_preset() {
    preset(
        "azure_devops",
        &[
            (
                "GET",
                "/acme/ops/_apis/git/repositories/infra/items?path=/main.tf&api-version=7.1",
            ),
            (
                "PATCH",
                "/acme/ops/_apis/git/repositories/infra/pullRequests/3/threads/4/comments/5",
            ),
            ("OPTIONS", "/acme/_apis"),
            (
                "GET",
                "/acme/ops/_git/infra/info/refs?service=git-upload-pack",
            ),
        ],
        &[
            "/prefix/acme/ops/_apis/git/repositories/infra/items",
            "/acme/ops/_apis/git/repositories/infra/pushes",
            "/acme/ops/_apis/git/repositories/infra/refs",
            "/acme/_apis/projects",
            "/acme/ops/_git/infra/git-receive-pack",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traversal_lookalikes_and_foreign_projects_are_refused() {
    let s = setup(
        "gitlab",
        &[("SCALR_AGENT_VCS_ALLOWED_PROJECTS", "acme/infra")],
    )
    .await;
    expect_ok(&s.gw, "GET", "/api/v4/projects/acme%2Finfra").await;
    expect_ok(
        &s.gw,
        "GET",
        "/acme/infra.git/info/refs?service=git-upload-pack",
    )
    .await;
    let before = s.vcs.seen().len();
    for p in [
        "/api/v4/projects/acme%2Finfra/../../user",
        "/api/v4/projects/acme%2Finfra/%2e%2e/x",
        "/api/v4/projects/acme%2Finfra/%2E%2E",
        "/api/v4/projects/acme%2F..%2Fother",
        "/api/v4/projects/acme%252Finfra",
        "/api/v4/projects/acme%5cinfra",
        "/api/v4/projects/acme%2Finfra%00",
        "/api/v4/projects/acme%2Finfra;x=1",
        "/api/v4//projects/acme%2Finfra",
        "//evil.example/api/v4/user",
        "http://evil.example/api/v4/user",
        "/api/v4/projects/acme%2Finfra/repository/branches/a%2Fb",
        "/api/v4/projects/acme\\infra",
        "/./api/v4/user",
        "/acme/infra.git/../other.git/info/refs?service=git-upload-pack",
    ] {
        let e = expect_refused(&s.gw, "GET", p).await;
        assert!(
            e.starts_with("path:") || e.starts_with("projects:"),
            "{p}: {e}"
        );
    }
    for p in [
        "/api/v4/projects/acme%2Finfra2",
        "/api/v4/projects/acme%2Finfra-old",
        "/api/v4/projects/xacme%2Finfra",
        "/api/v4/projects/acme%2Finfra%2Fsub",
        "/api/v4/projects/other%2Facme%2Finfra",
        "/api/v4/projects/1234",
        "/acme/infra2.git/info/refs?service=git-upload-pack",
        "/acme/net/infra.git/info/refs?service=git-upload-pack",
    ] {
        let e = expect_refused(&s.gw, "GET", p).await;
        assert!(e.starts_with("projects:"), "{p}: {e}");
    }
    assert_eq!(
        s.vcs.seen().len(),
        before,
        "a refused request reached the VCS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_redirects_encoding_metrics_and_no_credentials_in_logs() {
    let s = setup(
        "gitlab",
        &[
            ("SCALR_AGENT_HEALTH_ADDR", "127.0.0.1:0"),
            ("SCALR_AGENT_METADATA_instance_id", "i-123"),
        ],
    )
    .await;
    let o =
        s.gw.call(
            "GET",
            "/api/v4/projects/acme%2Finfra?private_token=canary-query-secret",
            &[
                ("Accept", "application/json"),
                ("Accept", "text/plain"),
                ("Authorization", "Bearer canary-header-secret"),
                ("PRIVATE-TOKEN", "canary-private-token"),
                ("Host", "evil.example"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("Forwarded", "for=10.0.0.1"),
                ("Proxy-Authorization", "Basic canary-proxy"),
                ("Connection", "X-Hop"),
                ("X-Hop", "1"),
            ],
            None,
        )
        .await;
    let (status, headers, _) = o.collect().await;
    assert_eq!(status, 200);
    let count = |n: &str| headers.iter().filter(|(k, _)| k == n).count();
    assert_eq!((count("link"), count("set-cookie")), (2, 2), "{headers:?}");
    let seen = s.vcs.seen().pop().unwrap();
    let h = |n: &str| {
        seen.headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(h("accept"), ["application/json", "text/plain"]);
    assert_eq!(
        h("host"),
        [format!("127.0.0.1:{}", s.vcs.base.port().unwrap())]
    );
    for gone in [
        "x-forwarded-for",
        "forwarded",
        "proxy-authorization",
        "x-hop",
        "connection",
    ] {
        assert!(
            h(gone).is_empty(),
            "{gone} reached the VCS: {:?}",
            seen.headers
        );
    }
    assert_eq!(h("authorization"), ["Bearer canary-header-secret"]);
    // Content-Encoding passes untouched; redirects come back unfollowed.
    let (_, headers, body) =
        s.gw.call("GET", "/api/v4/projects/acme%2Finfra?test=gzip", &[], None)
            .await
            .collect()
            .await;
    assert!(
        headers.contains(&("content-encoding".into(), "gzip".into())),
        "{headers:?}"
    );
    assert_eq!(&body.unwrap()[..2], [0x1f, 0x8b]);
    let (status, headers, _) =
        s.gw.call(
            "GET",
            "/api/v4/projects/acme%2Finfra?test=redirect",
            &[],
            None,
        )
        .await
        .collect()
        .await;
    assert_eq!(status, 302);
    assert!(headers.iter().any(|(k, _)| k == "location"));
    assert!(!s.vcs.seen().iter().any(|r| r.path.contains("elsewhere")));
    // Registration carried the metadata tags; readiness and metrics are served.
    assert_eq!(
        s.gw.lock().registrations[0]["metadata"]["instance_id"],
        "i-123"
    );
    s.relay
        .wait_log("health listener started", Duration::from_secs(10))
        .await;
    // Audit lines are written as each relayed request ends: wait for the redacted one before
    // reading the whole log for canaries.
    s.relay
        .wait_log("private_token=***", Duration::from_secs(10))
        .await;
    let log = s.relay.log();
    let addr = log
        .lines()
        .find(|l| l.contains("health listener started"))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["addr"].as_str().map(String::from))
        .unwrap();
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("scalr_agent_relay_requests_total{rule=\"get project\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scalr_agent_relay_requests_total{rule=\"get project\",status=\"302\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scalr_agent_relay_in_flight 0"),
        "{metrics}"
    );
    // No credential in any log line, debug logging included.
    for canary in [
        "canary-query-secret",
        "canary-header-secret",
        "canary-private-token",
        "canary-proxy",
    ] {
        assert!(
            !log.contains(canary),
            "{canary} leaked into the log:\n{log}"
        );
    }
    assert!(log.contains("private_token=***"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_request_times_out_without_blocking_others_and_can_be_cancelled() {
    let s = setup(
        "gitlab",
        &[
            ("SCALR_AGENT_RELAY_IDLE_TIMEOUT", "3s"),
            ("SCALR_AGENT_RELAY_PARALLELISM", "3"),
        ],
    )
    .await;
    let (_, hung) =
        s.gw.submit("GET", "/api/v4/projects/acme%2Finfra?test=hang", &[], None);
    let (cancel_id, cancelled) =
        s.gw.submit("GET", "/api/v4/projects/acme%2Finfra?test=hang", &[], None);
    s.gw.wait_for(
        Duration::from_secs(10),
        "both hanging requests acquired",
        |i| i.acquired.len() >= 2,
    )
    .await;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        expect_ok(&s.gw, "GET", "/api/v4/user").await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "quick requests waited for the hanging ones"
    );
    s.gw.cancel(&cancel_id);
    match tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .unwrap()
        .unwrap()
    {
        Outcome::Failed { reason, .. } => assert!(reason.contains("cancelled"), "{reason}"),
        o => panic!("{o:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(20), hung)
        .await
        .unwrap()
        .unwrap()
    {
        Outcome::Failed { reason, sent } => {
            assert!(
                reason.contains("did not answer") && reason.contains("timed out"),
                "{reason}"
            );
            assert!(sent);
        }
        o => panic!("{o:?}"),
    }
}

/// A request body of `n` chunks of `size` bytes, one every `every`; then, when `stall`,
/// nothing more, ever.
fn paced(n: usize, size: usize, every: Duration, stall: bool) -> Body {
    let s = futures_util::stream::iter(0..n).then(move |_| async move {
        tokio::time::sleep(every).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'p'; size]))
    });
    if stall {
        Body::from_stream(s.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(s)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_means_no_byte_moved_in_either_direction() {
    let s = setup(
        "gitlab",
        &[
            ("SCALR_AGENT_RELAY_IDLE_TIMEOUT", "2s"),
            ("SCALR_AGENT_RELAY_REQUEST_TIMEOUT", "10m"),
            ("SCALR_AGENT_RELAY_PARALLELISM", "5"),
        ],
    )
    .await;
    let echo = format!("/api/v4/projects/acme%2Finfra/statuses/{SHA}?test=echo");
    let project = "/api/v4/projects/acme%2Finfra";
    // Slow but steady, each longer than the idle time: a request body uploaded to the VCS in
    // 16 chunks 250 ms apart, and a response body dripping from the VCS as slowly.
    let slow_up = paced(16, 1000, Duration::from_millis(250), false);
    let (status, _, body) =
        s.gw.call("POST", &echo, &[], Some(slow_up))
            .await
            .collect()
            .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(v["length"], 16_000);
    let drip = format!("{project}/repository/archive?test=drip&size=16384&every=250");
    let (status, _, body) = s.gw.call("GET", &drip, &[], None).await.collect().await;
    assert_eq!((status, body.unwrap().len()), (200, 16384));

    // Stalls, one per place a request can wait, at once: each fails after the idle time.
    let huge = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'h'; 1 << 20]))),
    );
    let stalls = [
        (
            "POST",
            echo.clone(),
            Some(paced(3, 1000, Duration::from_millis(10), true)),
            "the control plane sent no more of the request body",
        ),
        (
            "POST",
            format!("{project}/statuses/{SHA}?test=hang"),
            Some(Body::from_stream(huge)),
            "the VCS took no more of the request body",
        ),
        (
            "GET",
            format!("{project}?test=hang"),
            None,
            "the VCS did not answer",
        ),
        (
            "GET",
            format!("{project}/repository/archive?test=stall&size=5000"),
            None,
            "the VCS sent no more of the response body",
        ),
    ];
    // Each is reported failed (the last one after its head was answered: its body breaks).
    let started = std::time::Instant::now();
    let mut waiting = Vec::new();
    for (method, path, body, want) in stalls {
        let (id, rx) = s.gw.submit(method, &path, &[], body);
        waiting.push((id, rx, want));
    }
    for (id, _outcome, want) in &waiting {
        s.gw.wait_for(Duration::from_secs(30), want, |i| {
            i.failures.iter().any(|(f, _)| f == id)
        })
        .await;
        let reason =
            s.gw.lock()
                .failures
                .iter()
                .find(|(f, _)| f == id)
                .unwrap()
                .1
                .clone();
        assert!(
            reason.starts_with(want)
                && reason
                    .contains("timed out, no byte moved for 2s (SCALR_AGENT_RELAY_IDLE_TIMEOUT)"),
            "{reason}"
        );
        s.relay.wait_log(want, Duration::from_secs(10)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "the stalls ended after {took:?}"
    );
    drop(waiting);

    // The control plane stops taking the response: the upload times out the same way.
    let big = format!("{project}/repository/archive?test=big&size={}", 64u64 << 20);
    let (id, rx) = s.gw.submit("GET", &big, &[], None);
    let Outcome::Answered { status, body, .. } = outcome(&id, rx).await else {
        panic!("the archive was not answered")
    };
    assert_eq!(status, 200);
    s.gw.wait_for(Duration::from_secs(30), "the upload's idle failure", |i| {
        i.failures.iter().any(|(f, reason)| {
            f == &id && reason.starts_with("the control plane took no more of the response")
        })
    })
    .await;
    drop(body);
    s.relay
        .wait_log(
            "the control plane took no more of the response",
            Duration::from_secs(10),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forgotten_session_registers_again_once_and_the_request_still_succeeds() {
    let s = setup("gitlab", &[("SCALR_AGENT_RELAY_PARALLELISM", "3")]).await;
    expect_ok(&s.gw, "GET", "/api/v4/user").await;
    // The session is forgotten between the acquisition and the body download.
    s.gw.lock().forget_sessions_on_acquire = true;
    let echo = format!("/api/v4/projects/acme%2Finfra/statuses/{SHA}?test=echo");
    let (status, _, body) =
        s.gw.call("POST", &echo, &[], Some(Body::from("hello")))
            .await
            .collect()
            .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(v["length"], 5);
    // Three requests in flight when the gateway forgets every session: each response upload
    // is refused, the relay registers again once and sends each response again.
    let acquired = s.gw.lock().acquired.len();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            s.gw.submit("GET", "/api/v4/projects/acme%2Finfra?test=slow", &[], None)
                .1
        })
        .collect();
    s.gw.wait_for(
        Duration::from_secs(10),
        "three slow requests acquired",
        |i| i.acquired.len() >= acquired + 3,
    )
    .await;
    let before = {
        let mut i = s.gw.lock();
        i.sessions.clear();
        i.registrations.len()
    };
    for rx in slow {
        let (code, _, body) = outcome("a slow request", rx).await.collect().await;
        assert_eq!((code, body.unwrap()), (200, b"slow answer".to_vec()));
    }
    assert_eq!(
        s.gw.lock().registrations.len(),
        before + 1,
        "concurrent refusals registered more than once"
    );
    assert!(
        s.gw.lock().failures.is_empty(),
        "{:?}",
        s.gw.lock().failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_restart_and_vcs_outage_are_survived() {
    let s = setup("gitlab", &[]).await;
    expect_ok(&s.gw, "GET", "/api/v4/user").await;
    s.gw.restart(Duration::from_secs(1)).await;
    expect_ok(&s.gw, "GET", "/api/v4/user").await;
    assert!(
        s.gw.lock().registrations.len() >= 2,
        "the relay did not register again"
    );
    s.vcs.stop();
    // Connections kept alive from before the outage get one 503 each; then the VCS is gone.
    let mut failure = None;
    for _ in 0..10 {
        match s.gw.call("GET", "/api/v4/user", &[], None).await {
            Outcome::Failed { reason, .. } => {
                failure = Some(reason);
                break;
            }
            Outcome::Answered { status: 503, .. } => {}
            o => panic!("{o:?}"),
        }
    }
    let reason = failure.expect("no request failed during the VCS outage");
    // A new connection is refused; one the VCS had kept alive is reset, or closed before the
    // answer, as it stops.
    assert!(
        reason.contains("the VCS did not answer")
            && (reason.contains("refused")
                || reason.contains("reset")
                || reason.contains("connection closed before message completed")),
        "{reason}"
    );
    // The relay still serves the gateway: a refusal still comes back at once.
    expect_refused(&s.gw, "DELETE", "/api/v4/user").await;
    s.relay
        .wait_log("\"outcome\":\"failed\"", Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_bodies_stream_in_flat_memory() {
    let mut s = setup("gitlab", &[]).await;
    const SIZE: u64 = 64 << 20;
    let o =
        s.gw.call(
            "GET",
            &format!("/api/v4/projects/acme%2Finfra/repository/archive?test=big&size={SIZE}"),
            &[],
            None,
        )
        .await;
    let Outcome::Answered {
        status, mut body, ..
    } = o
    else {
        panic!("the archive was not answered")
    };
    assert_eq!(status, 200);
    let mut n = 0u64;
    while let Some(c) = next_chunk(&mut body).await {
        n += c.unwrap().len() as u64;
    }
    assert_eq!(n, SIZE);
    // A 64 MiB request body, generated as it is sent.
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let stream =
        futures_util::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let (status, _, body) =
        s.gw.call(
            "POST",
            &format!("/api/v4/projects/acme%2Finfra/statuses/{SHA}?test=echo"),
            &[],
            Some(Body::from_stream(stream)),
        )
        .await
        .collect()
        .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(v["length"], SIZE);
    let peak = s.relay.peak_rss_kib();
    assert!(
        peak < 48 * 1024,
        "the relay's peak RSS was {peak} KiB for 64 MiB bodies"
    );
    // Graceful stop: an in-flight request finishes within the stop window.
    let (_, slow) =
        s.gw.submit("GET", "/api/v4/projects/acme%2Finfra?test=slow", &[], None);
    s.gw.wait_for(Duration::from_secs(10), "the slow request acquired", |i| {
        i.acquired.len() >= 3
    })
    .await;
    let status = s.relay.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let (code, _, body) = outcome("the slow request", slow).await.collect().await;
    assert_eq!((code, body.unwrap()), (200, b"slow answer".to_vec()));
    assert_eq!(s.gw.lock().deregistrations, 1);
}

/// The stop races a hand-out: the server takes a request off its queue for a relay's poll, and
/// the relay stops before the answer reaches it. The relay drops the poll and deregisters; the
/// deregistration hands the unreported request out again, and the next relay serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_handed_out_as_the_relay_stops_goes_to_the_next_relay() {
    let mut s = setup("gitlab", &[]).await;
    s.gw.lock().answer_delay = Duration::from_secs(3);
    let (id, rx) = s.gw.submit("GET", "/api/v4/user", &[], None);
    s.gw.wait_for(
        Duration::from_secs(10),
        "the request taken for a poll",
        |i| i.acquired.contains(&id),
    )
    .await;
    let status = s.relay.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    {
        let i = s.gw.lock();
        assert_eq!(i.deregistrations, 1);
        assert_eq!(i.handed_back, vec![id.clone()]);
    }
    s.gw.lock().answer_delay = Duration::ZERO;
    let _next = RelayProc::start(&s.gw.url, &s.vcs.base, "gitlab", &[]);
    let (code, _, body) = outcome(&id, rx).await.collect().await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(
        s.gw.lock().acquired.iter().filter(|a| **a == id).count(),
        2,
        "handed out twice: to the stopping relay's poll, then to the next relay"
    );
}

/// A relay that could not report a request's end cannot promise that its unreported requests
/// never reached it, so it stops without deregistering (the server then ends them as a lost
/// relay's, never handing them out again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_could_not_report_an_end_leaves_without_deregistering() {
    let mut s = setup("gitlab", &[("SCALR_AGENT_HTTP_MAX_RETRIES", "1")]).await;
    s.gw.lock().reports_unavailable = true;
    let (id, _never) =
        s.gw.submit("GET", "/api/v4/projects/acme%2Finfra/../x", &[], None);
    s.relay
        .wait_log("cannot report a refusal", Duration::from_secs(30))
        .await;
    let status = s.relay.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    s.relay
        .wait_log("leaving without deregistering", Duration::from_secs(10))
        .await;
    let i = s.gw.lock();
    assert_eq!(i.deregistrations, 0);
    assert!(i.handed_back.is_empty(), "{:?}", i.handed_back);
    assert!(i.acquired.contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_rules_come_first_and_an_empty_file_is_refused() {
    let dir = crate::support::dirs::tempdir();
    let rules = dir.path().join("rules");
    std::fs::write(
        &rules,
        "# extra endpoints\nallow POST /api/graphql\ndeny GET /api/v4/projects/[^/]+/repository/archive\n",
    )
    .unwrap();
    let s = setup(
        "gitlab",
        &[("SCALR_AGENT_RELAY_RULES_FILE", rules.to_str().unwrap())],
    )
    .await;
    s.relay
        .wait_log("\"additions\":2", Duration::from_secs(5))
        .await;
    expect_ok(&s.gw, "POST", "/api/graphql").await;
    let e = expect_refused(
        &s.gw,
        "GET",
        "/api/v4/projects/acme%2Finfra/repository/archive",
    )
    .await;
    assert!(e.contains("file:3"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let mut bad = RelayProc::start(
        &s.gw.url,
        &s.vcs.base,
        "gitlab",
        &[("SCALR_AGENT_RELAY_RULES_FILE", empty.to_str().unwrap())],
    );
    let status = tokio::time::timeout(Duration::from_secs(20), bad.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    // The log reader collects the last lines after the exit.
    crate::support::wait::until(
        "the refusal in the relay's log",
        Duration::from_secs(20),
        || bad.log().contains("holds no rule"),
    )
    .await;
    assert!(bad.log().contains("holds no rule"), "{}", bad.log());
}
