//! The agent's own log: plain text or JSON lines on stderr (stdout carries command output).
//!
//! JSON lines carry `timestamp`, `level`, `event` (the message), `agent` (its name), once
//! registered `agent_id`, `pool_id` and `pool` (see [`set_identity`]), and the event's fields. Secrets never reach here: they travel as [`crate::secret::Secret`], whose
//! `Debug` is `***`.

use std::fmt;
use std::io::IsTerminal;
use std::sync::RwLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `SCALR_AGENT_LOG_FORMAT`: how log lines look; filled in by `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

/// Installs the global subscriber. Called once by `main`; a second call is a no-op.
pub fn init(format: Format, debug: bool, agent_name: &str) {
    let filter = tracing_subscriber::EnvFilter::new(if debug {
        "info,scalr_agent=debug"
    } else {
        "warn,scalr_agent=info"
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Plain => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder
            .event_format(JsonLines {
                agent: agent_name.to_string(),
            })
            .try_init(),
    };
}

/// Who the agent is in its pool: set at each registration, carried by every JSON line after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent_id: String,
    /// `None` when the server did not name the pool.
    pub pool: Option<Pool>,
}

/// The agent's pool, as the control plane named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub name: String,
}

/// One agent per process: the identity is process-wide, like the subscriber.
static IDENTITY: RwLock<Option<Identity>> = RwLock::new(None);

/// Records the identity the control plane gave (a re-registration may change it).
pub fn set_identity(identity: Identity) {
    *IDENTITY.write().unwrap_or_else(|e| e.into_inner()) = Some(identity);
}

struct JsonLines {
    agent: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        line.insert(
            "event".into(),
            fields
                .0
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        line.insert("agent".into(), Value::String(self.agent.clone()));
        if let Some(id) = IDENTITY.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            line.insert("agent_id".into(), Value::String(id.agent_id.clone()));
            if let Some(pool) = &id.pool {
                line.insert("pool_id".into(), Value::String(pool.id.clone()));
                line.insert("pool".into(), Value::String(pool.name.clone()));
            }
        }
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}
