//! Tokens bound to their session, and reclaim after a restart (docs/protocol.md "Session
//! binding", "Restart and reclaim", v1.1): another session's calls with a task's token are
//! refused on every task endpoint; a `kill -9` of the real `scalr-agent run` then a restart
//! with its state file reclaims the task and finishes it exactly once; without the state file
//! (or with a wrong secret, refused) the agent is a new one, cannot touch the old task, and the
//! server ends it by its lease. The state file itself is refused when others could reach it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::control_plane::{ControlPlane, Fault};
use crate::support::daemon::{Daemon, Rig};
use crate::support::executor::{FakeExecutor, Script};
use crate::support::procs::{marker, nothing_left, processes_with};
use crate::support::sessions::SESSION_HEADER;

const LONG: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(3);

/// Registers with the pool token straight over HTTP, as anyone holding it could; returns the
/// status and the answer.
async fn register_raw(cp: &ControlPlane, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(cp.url.join("api/agent/v1/register").unwrap())
        .bearer_auth("pool-token")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn registration(name: &str) -> Value {
    json!({"name": name, "version": "0", "protocol": "1.1", "os": "linux",
           "cpu_platform": "linux_amd64", "driver": "local", "runtime": "vm",
           "concurrency": 1, "isolation": null})
}

/// One task call with `token` and, when given, `session`; returns the status and the error
/// code of the answer.
async fn task_call(
    cp: &ControlPlane,
    (method, path, body): (&str, &str, &'static [u8]),
    token: &str,
    session: Option<&str>,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            cp.url
                .join(&format!("api/agent/v1/tasks/t1/{path}"))
                .unwrap(),
        )
        .bearer_auth(token)
        .body(body);
    if let Some(s) = session {
        req = req.header(SESSION_HEADER, s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, v["error"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn another_session_s_task_token_is_refused_on_every_task_endpoint() {
    let rig = Rig::new().await;
    rig.queue(
        "t1",
        Script {
            chunks: vec![b"holder's log\n".to_vec()],
            work: Duration::from_secs(600),
            ..Script::default()
        },
    );
    let agent = rig.start("holder", &[]);
    rig.cp
        .wait_for("t1 acknowledged and logging", LONG, |i| {
            i.tasks["t1"].acked_by.is_some() && !i.tasks["t1"].log.is_empty()
        })
        .await;
    let holder = rig.cp.lock().register_outcomes[0].agent_id.clone().unwrap();

    // Someone with the pool token and the task's token (leaked from a task, a log) opens a
    // session of its own.
    let (status, thief) = register_raw(&rig.cp, registration("thief")).await;
    assert_eq!(status, 201, "{thief}");
    let thief_session = thief["session_token"].as_str().unwrap().to_owned();
    let token = rig.cp.task("t1").token;
    let before = rig.cp.task("t1");
    let endpoints: [(&str, &str, &'static [u8]); 7] = [
        ("POST", "ack", b"{}"),
        ("GET", "signal?cursor=0", b""),
        ("GET", "inputs/configuration", b""),
        ("PUT", "log?offset=0", b"forged log line\n"),
        ("PUT", "artifacts/plan-file", b"forged plan"),
        (
            "POST",
            "steps",
            br#"{"step":"plan","status":"running","index":9,"kind":"plan","command":null,"exit_code":null,"signal":null,"duration_ms":null}"#,
        ),
        (
            "POST",
            "finish",
            br#"{"status":"succeeded","result":null,"error":null,"log_size":0}"#,
        ),
    ];
    for call in endpoints {
        let other = task_call(&rig.cp, call, &token, Some(&thief_session)).await;
        assert_eq!(
            other,
            (403, "wrong_session".into()),
            "{} {}",
            call.0,
            call.1
        );
        let none = task_call(&rig.cp, call, &token, None).await;
        assert_eq!(none, (403, "wrong_session".into()), "{} {}", call.0, call.1);
        let unknown = task_call(&rig.cp, call, &token, Some("session-made-up")).await;
        assert_eq!(
            unknown,
            (401, "session_unknown".into()),
            "{} {}",
            call.0,
            call.1
        );
    }
    // Nothing of those calls was done.
    let after = rig.cp.task("t1");
    assert_eq!(after.log, before.log);
    assert_eq!(after.steps, before.steps);
    assert!(after.artifacts.is_empty() && after.finishes.is_empty());
    assert_eq!(after.finish_calls, 0);

    // Knowing the holder's id is not enough to take it over: a made-up secret is refused, no
    // secret makes a new agent; neither touches the holder's session or task.
    let mut body = registration("holder");
    body["previous_agent_id"] = json!(holder);
    body["reclaim_secret"] = json!("guessed");
    let (status, answer) = register_raw(&rig.cp, body.clone()).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "reclaim_refused");
    body["name"] = json!("impostor");
    body.as_object_mut().unwrap().remove("reclaim_secret");
    let (status, answer) = register_raw(&rig.cp, body).await;
    assert_eq!(status, 201, "{answer}");
    assert_ne!(
        answer["agent_id"],
        json!(holder),
        "an id alone gives nothing back"
    );
    let impostor = answer["session_token"].as_str().unwrap().to_owned();
    let call = ("PUT", "log?offset=0", b"x".as_slice());
    assert_eq!(
        task_call(&rig.cp, call, &token, Some(&impostor)).await,
        (403, "wrong_session".into())
    );
    assert_eq!(rig.cp.task("t1").rebound, 0);

    // The holder was never disturbed: it finishes the task with its own session.
    rig.cp.signal("t1", "cancel");
    let f = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(f["status"], "canceled", "{f}");
    let t = rig.cp.task("t1");
    assert_eq!(t.finishes.len(), 1);
    assert!(String::from_utf8_lossy(&t.log).starts_with("holder's log\n"));
    assert!(!String::from_utf8_lossy(&t.log).contains("forged"));
    agent.stop().await.unwrap();
}

/// Starts a real agent on a task whose hook prints a line, spools a second one (the server
/// refuses log chunks from then on) and sleeps on a unique marker; kills it with SIGKILL.
/// Returns the marker and the agent id it had.
async fn killed_mid_task(d: &Daemon, name: &str) -> (String, String) {
    let m = marker();
    d.enqueue(
        "t1",
        &format!("echo hook-started; sleep 1; echo spooled-line; sleep {m}"),
    );
    let mut first = d.start(name, &[]);
    d.wait_log(&first, "t1", "hook-started").await;
    d.cp.fail_next("log", std::iter::repeat_n(Fault::Status(503), 100_000));
    let spool = d.h.data_dir().join("spool/t1/log");
    first
        .until("the next line in the spool", || {
            std::fs::read(&spool)
                .is_ok_and(|l| String::from_utf8_lossy(&l).contains("spooled-line"))
        })
        .await;
    first.kill().await;
    nothing_left(&m, Duration::from_secs(5)).await;
    d.cp.lock().faults.clear();
    assert!(d.cp.task("t1").finishes.is_empty());
    let id = d.cp.task("t1").handed_to[0].clone();
    assert!(
        !first.stderr().contains("reclaim-"),
        "the reclaim secret is never logged"
    );
    (m, id)
}

fn read_state(d: &Daemon) -> Value {
    let p = d.h.data_dir().join(".agent.state");
    let meta = std::fs::symlink_metadata(&p).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "owner-only");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[tokio::test]
async fn a_restart_with_the_state_file_reclaims_and_finishes_its_spooled_task_exactly_once() {
    let d = Daemon::new().await;
    let (m, id) = killed_mid_task(&d, "reclaimer").await;
    let saved = read_state(&d);
    assert_eq!(saved["agent_id"], json!(id));
    let secret = saved["reclaim_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("reclaim-"), "{saved}");

    let mut second = d.start("reclaimer", &[]);
    let f = d.finished(&second, "t1").await;
    assert_eq!(f["status"], "errored", "{f}");
    assert_eq!(f["error"], "agent restarted");
    let log = d.log("t1");
    assert!(
        log.contains("hook-started") && log.contains("spooled-line"),
        "{log}"
    );
    let t = d.cp.task("t1");
    assert_eq!(t.finish_calls, 1, "exactly one finish");
    assert_eq!(t.rebound, 1, "re-bound to the new session once");
    assert!(t.ended_by_server.is_none());
    // It asked for its id back with the secret, got it, and a new secret.
    let reg = d.cp.lock().registrations.last().cloned().unwrap();
    assert_eq!(reg["previous_agent_id"], json!(id));
    assert_eq!(reg["reclaim_secret"], json!(secret));
    let outcome = d.cp.lock().register_outcomes.last().cloned().unwrap();
    assert!(outcome.reclaimed && outcome.agent_id.as_deref() == Some(id.as_str()));
    let rotated = read_state(&d);
    assert_eq!(rotated["agent_id"], json!(id));
    assert_ne!(
        rotated["reclaim_secret"],
        json!(secret),
        "rotated at the reclaim"
    );
    // The spent secret opens nothing any more (the new session made its calls).
    let mut body = registration("reclaimer");
    body["previous_agent_id"] = json!(id);
    body["reclaim_secret"] = json!(secret);
    assert_eq!(register_raw(&d.cp, body).await.0, 403);

    let status = second.stop().await;
    assert!(status.success(), "{}", second.stderr());
    assert!(!second.stderr().contains("reclaim-"), "never logged");
    assert!(processes_with(&m).is_empty());
}

/// A restart that cannot reclaim: a new agent id, the spooled task refused (its delivery
/// dropped), and the server ends it by its lease, with no finish from anyone.
async fn restart_as_a_new_agent(d: &Daemon, name: &str, old_id: &str) -> String {
    // The dead agent's name is free again after a second without contact.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let registered = |i: &crate::support::control_plane::Inner| {
        i.register_outcomes
            .iter()
            .filter(|o| o.status == 201)
            .count()
    };
    let before = registered(&d.cp.lock());
    let mut second = d.start(name, &[]);
    d.cp.wait_for("the server ended t1", LONG, |i| {
        i.tasks["t1"].ended_by_server.is_some()
    })
    .await;
    // The lease may run out before the second agent got through registration (under load).
    d.cp.wait_for("the second agent registered", LONG, |i| {
        registered(i) > before
    })
    .await;
    let outcome =
        d.cp.lock()
            .register_outcomes
            .iter()
            .rev()
            .find(|o| o.status == 201)
            .cloned()
            .unwrap();
    let new_id = outcome.agent_id.unwrap();
    assert!(!outcome.reclaimed);
    assert_ne!(new_id, old_id, "a new agent id");
    let t = d.cp.task("t1");
    assert_eq!(t.finishes.len(), 1, "{:#?}", t.finishes);
    assert_eq!(t.finishes[0]["error"], "agent lost");
    assert_eq!(t.finish_calls, 0, "no finish got through");
    assert_eq!(t.rebound, 0);
    assert!(
        !d.log("t1").contains("agent restarted"),
        "the new agent touched nothing"
    );
    second
        .until("the refused spool dropped", || {
            std::fs::read_dir(d.h.data_dir().join("spool")).is_ok_and(|mut e| e.next().is_none())
        })
        .await;
    let status = second.stop().await;
    assert!(status.success(), "{}", second.stderr());
    second.stderr()
}

/// The daemon fixture whose server ends a task by its lease ([`LEASE`]) and holds a name as
/// connected for only 1 s after its agent's last contact.
async fn leased_daemon() -> Daemon {
    let d = Daemon::new().await;
    {
        let mut i = d.cp.lock();
        i.lease = LEASE;
        i.offline_after = Duration::from_secs(1);
    }
    d
}

#[tokio::test]
async fn a_restart_without_the_state_file_is_a_new_agent_and_the_old_task_ends_by_lease() {
    let d = leased_daemon().await;
    let (m, id) = killed_mid_task(&d, "forgetful").await;
    // The state file is lost (the rest of the disk stays, to show the spool cannot be used).
    std::fs::remove_file(d.h.data_dir().join(".agent.state")).unwrap();
    restart_as_a_new_agent(&d, "forgetful", &id).await;
    let reg = d.cp.lock().registrations.last().cloned().unwrap();
    assert!(reg.get("previous_agent_id").is_none() && reg.get("reclaim_secret").is_none());
    assert!(processes_with(&m).is_empty());
}

#[tokio::test]
async fn the_right_id_with_a_wrong_secret_is_refused() {
    let d = leased_daemon().await;
    let (m, id) = killed_mid_task(&d, "tampered").await;
    let mut state = read_state(&d);
    state["reclaim_secret"] = json!("reclaim-not-the-one");
    std::fs::write(d.h.data_dir().join(".agent.state"), state.to_string()).unwrap();
    let stderr = restart_as_a_new_agent(&d, "tampered", &id).await;
    assert!(
        d.cp.lock()
            .register_outcomes
            .iter()
            .any(|o| o.status == 403),
        "the reclaim was refused"
    );
    assert!(
        stderr.contains(&format!("refused to give agent id {id} back"))
            && stderr.contains("reclaim secret")
            && stderr.contains("registering as a new agent"),
        "{stderr}"
    );
    assert!(!stderr.contains("reclaim-not-the-one"), "{stderr}");
    assert!(processes_with(&m).is_empty());
}

#[tokio::test]
async fn a_state_file_others_could_reach_is_refused() {
    let d = Daemon::new().await;
    let p = d.h.data_dir().join(".agent.state");
    std::fs::create_dir_all(d.h.data_dir()).unwrap();
    std::fs::write(
        &p,
        r#"{"agent_id":"agt-9","name":"strict","reclaim_secret":"reclaim-x"}"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut a = d.start("strict", &[]);
    let status = a.exit().await;
    let err = a.stderr();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("refusing the agent's state file {}", p.display()))
            && err.contains("mode 0644")
            && err.contains("expected mode 0600"),
        "{err}"
    );
    assert!(!err.contains("reclaim-x"), "{err}");
    assert_eq!(d.cp.hits("register"), 0, "nothing was sent");
    // A symbolic link in its place is refused the same way.
    std::fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
    let mut a = d.start("strict", &[]);
    assert!(!a.exit().await.success());
    assert!(a.stderr().contains("a symbolic link"), "{}", a.stderr());
}

#[tokio::test]
async fn a_control_plane_that_forgot_its_sessions_gets_the_running_task_back_by_reclaim() {
    let rig = Rig::new().await;
    let script = Script {
        chunks: (0..20u8).map(|n| vec![b'a' + n; 1000]).collect(),
        pause: Duration::from_millis(150),
        ..Script::default()
    };
    rig.queue("t1", script.clone());
    // Beats 10 s apart: a task call is the first to meet the forgotten session.
    rig.cp.lock().heartbeat_ms = 10_000;
    let agent = rig.start("survivor", &[]);
    rig.cp
        .wait_for("t1 logging", LONG, |i| !i.tasks["t1"].log.is_empty())
        .await;
    // A restarted control plane: every session is gone, the agents and tasks are not.
    rig.cp.restart();
    let f = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(f["status"], "succeeded", "{f}");
    let t = rig.cp.task("t1");
    assert_eq!(t.finishes.len(), 1);
    assert_eq!(t.log, FakeExecutor::expected_log(&script), "the whole log");
    assert!(t.rebound >= 1, "the reclaim re-bound the task");
    assert!(
        rig.cp.lock().session_unknown >= 1,
        "a task call met the forgotten session"
    );
    let outcomes = rig.cp.lock().register_outcomes.clone();
    assert!(
        outcomes.len() >= 2 && outcomes[1..].iter().all(|o| o.reclaimed),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o.agent_id == outcomes[0].agent_id));
    agent.stop().await.unwrap();
}
