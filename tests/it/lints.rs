//! The invariants `cargo clippy` enforces stay enforced: `clippy.toml` keeps every disallowed
//! method, a file under `src/` allows them only where ARCHITECTURE.md lists it for each kind of
//! call it makes, and files stay small unless their header says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The kinds of disallowed call, each with the methods `clippy.toml` must forbid and the text
/// that names such a call in a file's non-test code.
const KINDS: [(&str, &[&str], &[&str]); 4] = [
    (
        "env",
        &[
            "std::env::var\"",
            "std::env::var_os\"",
            "std::env::vars\"",
            "std::env::vars_os\"",
            "std::env::set_var\"",
            "std::env::remove_var\"",
        ],
        &["env::var", "env::set_var", "env::remove_var"],
    ),
    (
        "spawn",
        &[
            "std::process::Command::spawn\"",
            "std::process::Command::output\"",
            "std::process::Command::status\"",
            "tokio::process::Command::spawn\"",
            "tokio::process::Command::output\"",
            "tokio::process::Command::status\"",
            "libc::fork\"",
            "nix::unistd::fork\"",
        ],
        &["Command::new", "fork()", "fork("],
    ),
    (
        "http",
        &[
            "reqwest::Client::new\"",
            "reqwest::Client::builder\"",
            "reqwest::ClientBuilder::new\"",
            "reqwest::ClientBuilder::build\"",
        ],
        &["reqwest::Client::", "ClientBuilder"],
    ),
    (
        "fs",
        &[
            "std::fs::read\"",
            "std::fs::read_to_string\"",
            "std::fs::copy\"",
            "std::fs::File::open\"",
            "std::fs::OpenOptions::open\"",
            "std::fs::remove_file\"",
            "std::fs::remove_dir\"",
            "std::fs::remove_dir_all\"",
            "tokio::fs::read\"",
            "tokio::fs::read_to_string\"",
            "tokio::fs::copy\"",
            "tokio::fs::File::open\"",
            "tokio::fs::OpenOptions::open\"",
            "tokio::fs::remove_file\"",
            "tokio::fs::remove_dir\"",
            "tokio::fs::remove_dir_all\"",
        ],
        &[
            "fs::read(",
            "read_to_string(",
            "fs::copy(",
            "File::open(",
            "OpenOptions::new(",
            "remove_file(",
            "remove_dir(",
            "remove_dir_all(",
        ],
    ),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, relative to the crate root, with its text.
fn sources() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root()).unwrap().display().to_string();
                files.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

/// The files ARCHITECTURE.md lists between `<!-- allow-list:KIND -->` and its end marker.
fn listed(arch: &str, kind: &str) -> BTreeSet<String> {
    let start = arch
        .find(&format!("<!-- allow-list:{kind} -->"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no {kind} allow list"));
    let end = arch
        .find(&format!("<!-- /allow-list:{kind} -->"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md's {kind} allow list has no end"));
    arch[start..end]
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- `"))
        .filter_map(|l| l.split(':').next())
        .flat_map(|names| names.split(", ").map(|n| n.trim_matches('`').to_string()))
        .collect()
}

/// The part of a file that is not its unit tests.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// `#[allow(clippy::disallowed_methods)]` (the environment, process, HTTP-client and file calls
/// that `clippy.toml` forbids) appears only in the files ARCHITECTURE.md lists, each with a
/// reason, and each allowing file is listed under every kind of call its code makes.
#[test]
fn disallowed_methods_are_allowed_only_where_listed() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let clippy = std::fs::read_to_string(root().join("clippy.toml")).unwrap();
    let sources = sources();
    let mut allowing = BTreeSet::new();
    for (file, text) in &sources {
        let compact: String = text.split_whitespace().collect();
        let allows = compact.matches("allow(clippy::disallowed_methods").count();
        // The unit tests' crate root allows them under `cfg(test)` only.
        let test_root = compact
            .matches("cfg_attr(test,allow(clippy::disallowed_methods")
            .count();
        if file == "src/lib.rs" {
            assert_eq!(
                allows, test_root,
                "src/lib.rs allows them outside cfg(test)"
            );
            continue;
        }
        if allows > 0 {
            let with_reason = compact
                .matches("allow(clippy::disallowed_methods,reason=")
                .count();
            assert_eq!(allows, with_reason, "{file}: an allow without a reason");
            allowing.insert(file.clone());
        }
    }
    let mut all_listed = BTreeSet::new();
    for (kind, methods, calls) in KINDS {
        for method in methods {
            assert!(clippy.contains(method), "clippy.toml lacks {method}");
        }
        let list = listed(&arch, kind);
        for file in &list {
            let text = sources
                .get(file)
                .unwrap_or_else(|| panic!("ARCHITECTURE.md lists {file}, which does not exist"));
            assert!(
                calls.iter().any(|c| non_test(text).contains(c)),
                "{file} is in the {kind} allow list but makes no such call"
            );
        }
        for file in &allowing {
            let code = non_test(&sources[file]);
            if let Some(call) = calls.iter().find(|c| code.contains(*c)) {
                assert!(
                    list.contains(file),
                    "{file} allows disallowed methods and calls {call}, but is not in the {kind} \
                     allow list of ARCHITECTURE.md"
                );
            }
        }
        all_listed.extend(list);
    }
    assert!(all_listed.contains("src/taskfs/mod.rs"), "{all_listed:?}");
    assert_eq!(
        allowing, all_listed,
        "src files allowing disallowed methods vs ARCHITECTURE.md's allow lists"
    );
}

/// No file under `src/` is over 500 lines unless its `//!` header says why, on a line starting
/// `size:` (functions are held to 80 lines by `clippy::too_many_lines`, see `clippy.toml`).
#[test]
fn src_files_stay_small_or_say_why() {
    let clippy = std::fs::read_to_string(root().join("clippy.toml")).unwrap();
    assert!(clippy.contains("too-many-lines-threshold = 80"), "{clippy}");
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("#![warn(clippy::too_many_lines)]"),
        "src/lib.rs"
    );
    let mut over = Vec::new();
    for (file, text) in sources() {
        let lines = text.lines().count();
        let says_why = text.lines().take_while(|l| l.starts_with("//!")).any(|l| {
            l.trim_start_matches("//!")
                .trim_start()
                .starts_with("size:")
        });
        if lines > 500 && !says_why {
            over.push(format!("{file}: {lines} lines"));
        }
    }
    assert!(
        over.is_empty(),
        "files over 500 lines without a `//! size:` reason: {over:?}"
    );
}

/// ARCHITECTURE.md's code map names every file under `src/`: by its path (`src/x/y.rs` or
/// `x/y.rs`), or in the section whose heading names its folder (`### \`src/x/\``) by its name
/// there (`y.rs` or `y`); a folder's `mod.rs` is its section.
#[test]
fn the_code_map_lists_every_src_file() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let sections: Vec<(Vec<&str>, &str)> = arch
        .split("\n### ")
        .chain(arch.split("\n## "))
        .map(|section| {
            let heading = section.lines().next().unwrap_or("");
            let folders = heading
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|name| name.starts_with("src/") && name.ends_with('/'))
                .collect();
            (folders, section)
        })
        .collect();
    let quoted = |text: &str, name: &str| text.contains(&format!("`{name}`"));
    let mut missing = Vec::new();
    for file in sources().into_keys() {
        let short = &file["src/".len()..];
        let in_section = sections.iter().any(|(folders, text)| {
            folders.iter().any(|folder| {
                file.strip_prefix(folder).is_some_and(|rel| {
                    rel == "mod.rs" || quoted(text, rel) || quoted(text, &rel[..rel.len() - 3])
                })
            })
        });
        if !(quoted(&arch, &file) || quoted(&arch, short) || in_section) {
            missing.push(file);
        }
    }
    assert!(
        missing.is_empty(),
        "files under src/ that ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}
