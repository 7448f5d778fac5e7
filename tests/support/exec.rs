//! The fixture of `exec` tests: a harness whose mirror serves the real Terraform 1.0.3, a
//! workspace directory with the hello configuration, a plan task of it, and `exec` run through
//! the agent builder.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};

use super::harness::Harness;

const MAIN_TF: &str = include_str!("../../examples/hello/main.tf");

/// A mirror with the real Terraform 1.0.3 and a workspace directory with `main.tf`.
pub struct Exec {
    pub h: Harness,
    pub dir: PathBuf,
}

impl Exec {
    pub async fn new() -> Exec {
        Exec::with(&[]).await
    }

    pub async fn with(extra: &[(&str, &str)]) -> Exec {
        let h = Harness::with(extra).await;
        h.publish_real_terraform();
        let dir = h.dir.path().join("workspace");
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/main.tf"), MAIN_TF).unwrap();
        Exec { h, dir }
    }

    /// A plan task of the hello configuration; tests adjust it.
    pub fn task(&self, id: &str) -> Value {
        json!({
            "id": id,
            "action": "plan",
            "run": {"id": "run-42", "mode": "apply", "source": "cli"},
            "workspace": {"id": "ws-1", "name": "hello", "iac_platform": "terraform", "iac_version": "1.0.3"},
            "environment": {"id": "env-1", "name": "test"},
            "control_plane": {"hostname": "scalr.example.test", "run_token": "run-token-0123456789"},
            "configuration": {"directory": "config"},
            "variables": [
                {"key": "greeting", "value": "Hello", "category": "terraform"},
                {"key": "replicas", "value": "21", "category": "terraform"},
                {"key": "tags", "value": "{ owner = \"team-a\" }", "category": "terraform", "hcl": true},
            ],
        })
    }

    /// Runs `exec` with the harness's variables plus `extra`; returns the output, the result
    /// (`null` if none was written) and the output directory.
    pub async fn run(&self, task: &Value, extra: &[(&str, &str)]) -> (Output, Value, PathBuf) {
        let id = task["id"].as_str().unwrap_or("bad");
        let file = self.dir.join(format!("{id}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(task).unwrap()).unwrap();
        let out = self.dir.join(format!("{id}.out"));
        let output = self.h.agent().envs(extra).exec(&file, &out).await;
        let result = std::fs::read(out.join("result.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(Value::Null);
        (output, result, out)
    }
}

/// Asserts that the first error of a task's result contains `expected`.
pub fn assert_first_error(result: &Value, expected: &str) {
    assert!(
        result["errors"][0].as_str().unwrap().contains(expected),
        "{result:#}"
    );
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
