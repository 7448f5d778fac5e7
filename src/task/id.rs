//! The task-id rule, in one place: which ids a task document may carry, and the one
//! file-system-safe name made from an id that has not been checked (the control plane's
//! `task_id`), used for the spool's and the daemon's task directories.

/// The longest name [`dir_name`] makes.
const MAX_NAME: usize = 100;

/// Whether `b` may appear in a task id: ASCII letters, digits, `-` and `_`.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Why `id` is not a valid task id, or `None`: it must be non-empty letters, digits, `-` or
/// `_`.
pub fn problem(id: &str) -> Option<String> {
    (id.is_empty() || !id.chars().all(allowed))
        .then(|| format!("{id:?} must be non-empty letters, digits, `-` or `_`"))
}

/// A file-system-safe name for `id`: every character outside the task-id rule replaced by
/// `_`, at most 100 characters, never empty. A valid id shorter than that is its own name.
pub fn dir_name(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(MAX_NAME)
        .collect();
    if clean.is_empty() { "_".into() } else { clean }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_their_own_names() {
        for id in ["t1", "run-42_b", "A"] {
            assert_eq!(problem(id), None);
            assert_eq!(dir_name(id), id);
        }
    }

    #[test]
    fn anything_else_is_refused_and_made_safe() {
        for (id, name) in [
            ("", "_"),
            ("../etc", "___etc"),
            ("a/b", "a_b"),
            ("é", "_"),
            ("x.y", "x_y"),
        ] {
            assert!(problem(id).is_some(), "{id:?}");
            assert_eq!(dir_name(id), name);
        }
        assert_eq!(dir_name(&"a".repeat(300)).len(), MAX_NAME);
    }
}
