//! `scalr-agent __sandbox-selftest ARGV...` (hidden; tests and diagnostics): reads a
//! [`Policy`] as JSON on stdin, applies it to this process with `layers::apply`, prints the
//! layer reports as one JSON line on stderr, then executes `ARGV` (an absolute path) with only
//! `PATH`, `HOME` and `TMPDIR` (the task directory) in its environment.
//!
//! It runs before the configuration is read and before any thread exists, exactly like the
//! stage helper's child, so tests can check what a stage sees without the task runner.

use std::io::Read;

use super::layers;
use super::policy::Policy;

/// Runs the self-test; returns an exit code only on failure (1: bad input or a layer failed,
/// 127: exec failed).
pub fn run(argv: &[String]) -> u8 {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!(
            "{}",
            serde_json::json!({ "error": format!("reading stdin: {e}") })
        );
        return 1;
    }
    let policy: Policy = match serde_json::from_str(&input) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "{}",
                serde_json::json!({ "error": format!("bad policy: {e}") })
            );
            return 1;
        }
    };
    let reports = match layers::apply(&policy) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "{}",
                serde_json::json!({ "error": e.to_string(), "layer": e.layer, "errno": e.errno() })
            );
            return 1;
        }
    };
    eprintln!("{}", serde_json::json!({ "layers": reports }));
    let dir = policy.task_dir.display().to_string();
    let env = [
        ("PATH".to_string(), "/usr/bin:/bin".to_string()),
        ("HOME".to_string(), dir.clone()),
        ("TMPDIR".to_string(), dir),
    ];
    let e = layers::exec(argv, &env);
    eprintln!(
        "{}",
        serde_json::json!({ "error": format!("exec {:?}: {e}", argv.first()) })
    );
    127
}
