//! The task log: every step's merged output and the agent's headers, masked, to every sink.
//!
//! Masking replaces each sensitive value (sensitive variables, the run token, API keys) with
//! `***`, including when a value arrives split across two reads of a pipe: the stream masker
//! holds back only a tail that could still be the start of a secret, and releases it with the
//! next chunk or at the end of the step.

use std::io::Write;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};

/// Values shorter than this are not masked: masking `1` or `no` everywhere would destroy the
/// log without protecting anything.
pub const MIN_MASKED_LEN: usize = 3;
const MASK: &[u8] = b"***";

/// The set of values to hide.
#[derive(Debug)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
    longest: usize,
    patterns: Vec<Vec<u8>>,
}

impl Masker {
    /// Builds a masker for these values; each line of a multi-line value is masked too.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for v in values {
            for candidate in std::iter::once(v).chain(v.lines().map(str::trim)) {
                if candidate.len() >= MIN_MASKED_LEN
                    && !patterns.iter().any(|p| p == candidate.as_bytes())
                {
                    patterns.push(candidate.as_bytes().to_vec());
                }
            }
        }
        let matcher = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("literal patterns always build")
        });
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Masker {
            matcher,
            longest,
            patterns,
        }
    }

    /// Every value the task's log must never show: its sensitive variables, its run token,
    /// its cost-estimation key.
    pub fn for_task(task: &super::model::Task) -> Masker {
        let mut values: Vec<&str> = task
            .variables
            .iter()
            .filter(|v| v.sensitive)
            .map(|v| v.value.as_str())
            .collect();
        values.push(task.control_plane.run_token.expose());
        if let Some(c) = &task.cost_estimation {
            values.push(c.api_key.expose());
        }
        Masker::new(values)
    }

    /// Masks a complete text (error messages, command lines).
    pub fn mask(&self, text: &str) -> String {
        match &self.matcher {
            None => text.to_string(),
            Some(m) => m.replace_all(text, &vec!["***"; self.patterns.len()]),
        }
    }

    /// Masks `buf`, except for a tail that may be the start of a secret; returns the masked
    /// part and how many bytes at the end were held back.
    fn mask_stream(&self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let Some(m) = &self.matcher else {
            out.extend_from_slice(buf);
            return 0;
        };
        let mut last = 0;
        for found in m.find_iter(buf) {
            out.extend_from_slice(&buf[last..found.start()]);
            out.extend_from_slice(MASK);
            last = found.end();
        }
        let rest = &buf[last..];
        let hold = (1..self.longest.min(rest.len() + 1))
            .rev()
            .find(|&k| {
                self.patterns
                    .iter()
                    .any(|p| p.len() > k && p.starts_with(&rest[rest.len() - k..]))
            })
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - hold]);
        hold
    }
}

/// Where log bytes go: stdout, a file, the control plane's spool.
pub type Sink = Box<dyn Write + Send>;

/// One task's log.
pub struct TaskLog {
    masker: Arc<Masker>,
    sinks: Vec<Sink>,
    pending: Vec<u8>,
    written: u64,
    /// Past this many bytes, step output is dropped (the agent's own lines still go out).
    limit: u64,
    truncated: bool,
}

impl TaskLog {
    pub fn new(masker: Arc<Masker>, sinks: Vec<Sink>) -> TaskLog {
        TaskLog {
            masker,
            sinks,
            pending: Vec::new(),
            written: 0,
            limit: u64::MAX,
            truncated: false,
        }
    }

    /// Bounds the steps' output to `bytes` (`SCALR_AGENT_TASK_LOG_LIMIT_MB`): what comes
    /// after is dropped, after one line saying so.
    pub fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// Whether step output was dropped at the limit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn masker(&self) -> &Arc<Masker> {
        &self.masker
    }

    /// Bytes written so far (after masking).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A step's output chunk.
    pub fn output(&mut self, chunk: &[u8]) {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buf.len());
        let hold = self.masker.mask_stream(&buf, &mut out);
        self.pending = buf[buf.len() - hold..].to_vec();
        self.emit_output(&out);
    }

    /// Step output, within the limit.
    fn emit_output(&mut self, bytes: &[u8]) {
        if self.truncated {
            return;
        }
        let room = self.limit.saturating_sub(self.written) as usize;
        if bytes.len() <= room {
            self.emit(bytes);
            return;
        }
        self.emit(&bytes[..room]);
        self.truncated = true;
        self.pending.clear();
        let line = format!(
            "\n[scalr-agent] log truncated: the task's log reached {} MiB (SCALR_AGENT_TASK_LOG_LIMIT_MB); later output of its steps is dropped (the task goes on)\n",
            self.limit >> 20
        );
        self.emit(line.as_bytes());
    }

    /// Releases held-back bytes: the step's output is complete.
    pub fn end_output(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let masked = self.masker.mask(&String::from_utf8_lossy(&pending));
        // Held-back bytes may end mid-way through a UTF-8 sequence; keep raw bytes then.
        if std::str::from_utf8(&pending).is_ok() {
            self.emit_output(masked.as_bytes());
        } else {
            self.emit_output(&pending);
        }
    }

    /// A line from the agent itself (step headers, warnings), masked.
    pub fn line(&mut self, text: &str) {
        self.end_output();
        let mut line = self.masker.mask(text).into_bytes();
        line.push(b'\n');
        self.emit(&line);
    }

    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.written += bytes.len() as u64;
        self.sinks
            .retain_mut(|s| s.write_all(bytes).and_then(|()| s.flush()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(secrets: &[&str]) -> (TaskLog, Buf) {
        let buf = Buf::default();
        (
            TaskLog::new(
                Arc::new(Masker::new(secrets.iter().copied())),
                vec![Box::new(buf.clone())],
            ),
            buf,
        )
    }

    #[test]
    fn masks_values_split_across_chunks() {
        let (mut l, buf) = log(&["hunter2-secret", "tok"]);
        l.output(b"password is hunt");
        assert_eq!(
            &*buf.0.lock().unwrap(),
            b"password is ",
            "the possible prefix is held back"
        );
        l.output(b"er2-secret and tok");
        l.output(b"en\n");
        l.end_output();
        assert_eq!(
            String::from_utf8_lossy(&buf.0.lock().unwrap()),
            "password is *** and ***en\n"
        );
    }

    #[test]
    fn held_back_tail_is_released_when_it_is_not_a_secret() {
        let (mut l, buf) = log(&["abcdef"]);
        l.output(b"xx abc");
        l.output(b"xyz");
        l.end_output();
        assert_eq!(String::from_utf8_lossy(&buf.0.lock().unwrap()), "xx abcxyz");
    }

    #[test]
    fn output_past_the_limit_is_dropped_after_one_line() {
        let (mut l, buf) = log(&[]);
        l.set_limit(10);
        l.output(b"0123456");
        l.output(b"789abcdef");
        l.output(b"more");
        l.line("Task t: failed");
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        assert!(l.truncated());
        assert!(text.starts_with("0123456789\n[scalr-agent] log truncated: the task's log reached 0 MiB (SCALR_AGENT_TASK_LOG_LIMIT_MB)"), "{text}");
        assert!(!text.contains("abc") && !text.contains("more"), "{text}");
        assert!(text.ends_with("Task t: failed\n"), "{text}");
    }

    #[test]
    fn multi_line_values_and_short_values() {
        let m = Masker::new(["line-one\nline-two", "ab"]);
        assert_eq!(m.mask("x line-two y ab"), "x *** y ab");
    }
}
