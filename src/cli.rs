//! The command line: parses arguments, loads the configuration, runs one command, and maps
//! every outcome to an exit code (here and nowhere else).
//!
//! Exit codes: 0 success; 1 the command failed; 2 bad arguments (clap); 64 bad configuration.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Needs};
use crate::software::SoftwareCache;
use crate::software::catalog::{Platform, Tool, Version};
use crate::task::result::TaskStatus;

/// Exit code for configuration errors (BSD `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a command that failed.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "scalr-agent", version, about = "Self-hosted agent that runs OpenTofu/Terraform stages as sandboxed child processes", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the agent's version and platform.
    Version,
    /// Manage the verified cache of OpenTofu, Terraform, OPA and Infracost binaries.
    #[command(subcommand)]
    Software(SoftwareCommand),
    /// Run one task from a JSON file (docs/task-spec.md): stream its log, write result.json and
    /// the artifacts into --out. Exits 0 when the task succeeded, 1 otherwise.
    Exec {
        /// The task file.
        task: std::path::PathBuf,
        /// Output directory (default: ./<task id>).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Report what isolation this platform gives to stages, why, and what to change.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Join the agent pool and run tasks until stopped (SIGTERM/SIGINT; a second one exits at once).
    Run {
        /// Run each stage as a sandboxed child process (the only driver; accepted for compatibility).
        #[arg(long)]
        local: bool,
    },
    /// VCS agent mode: relay the control plane's requests to a private VCS through a
    /// default-deny allowlist, until stopped (SIGTERM/SIGINT; a second one exits at once).
    Relay,
    /// Tests and diagnostics: apply a sandbox policy (JSON on stdin), then exec ARGV.
    #[command(name = "__sandbox-selftest", hide = true)]
    SandboxSelftest {
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SoftwareCommand {
    /// Download, verify and cache a tool version; print the executable's path.
    Install {
        /// opentofu, terraform, opa or infracost.
        tool: Tool,
        /// Exact version, e.g. 1.8.2 (a leading `v` is accepted).
        version: Version,
        /// Build to install; defaults to this machine's.
        #[arg(long)]
        platform: Option<Platform>,
    },
    /// List cached binaries: tool, version, platform, size, last use, verification.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove damaged, long-unused and least recently used binaries above the size limit.
    Prune {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the provider store: provider, version, platform, size, last use, h1:, verification.
    Providers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Re-hash every stored package against its recorded h1:.
        #[arg(long)]
        verify: bool,
        /// Apply the eviction policy first (damaged, unused, then LRU above the size limit).
        #[arg(long)]
        prune: bool,
        /// Download, verify and store a provider for this machine's platform first, as the
        /// agent does after a run (repeatable): `HOST/NAMESPACE/TYPE@VERSION`.
        #[arg(long, value_name = "PROVIDER@VERSION")]
        add: Vec<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::agent::uptime::mark_start();
    // The stage helper is a separate, minimal program sharing this executable: it must not parse
    // arguments, read configuration or start a runtime.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == crate::sandbox::helper::SUBCOMMAND)
    {
        return crate::sandbox::helper::main();
    }
    let cli = Cli::parse();
    if let Command::Version = cli.command {
        println!(
            "scalr-agent {} ({})",
            env!("CARGO_PKG_VERSION"),
            Platform::host().map_or("unsupported platform", Platform::name)
        );
        return ExitCode::SUCCESS;
    }
    if let Command::SandboxSelftest { argv } = &cli.command {
        return ExitCode::from(crate::sandbox::selftest::run(argv));
    }
    let needs = match cli.command {
        Command::Run { .. } => Needs::ControlPlane,
        Command::Relay => Needs::Relay,
        _ => Needs::Local,
    };
    let config = match Config::from_process_env(needs) {
        Ok(c) => c,
        Err(e) => {
            eprint!("scalr-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::logging::init(config.log_format, config.debug, &config.name);
    for name in &config.unknown_variables {
        tracing::warn!(variable = %name, "unknown SCALR_* variable ignored (a typo?)");
    }
    for name in &config.ignored_variables {
        tracing::warn!(
            variable = %name,
            "a setting of the Scalr agent's container drivers, ignored: the local driver runs \
             each stage as a sandboxed child process in this container (extend the agent's \
             image instead of naming a task image)"
        );
    }
    // Before any thread exists: capability sets are per thread.
    let deny = &config.sandbox.test_deny;
    if !deny.is_empty()
        && let Err(e) = crate::sandbox::probe::emulate_weaker_platform(deny)
    {
        eprintln!("scalr-agent: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Err(e) = crate::sandbox::probe::harden_agent() {
        tracing::warn!(error = %e, "cannot harden the agent process");
    }
    if let Command::Doctor { json } = cli.command {
        return doctor(&config, json);
    }
    if matches!(cli.command, Command::Run { .. } | Command::Exec { .. })
        && let Err(code) = check_reach(&config)
    {
        return code;
    }
    // Multi-threaded (see ARCHITECTURE.md, "The runtime"): one task's slow I/O never holds the
    // heartbeat, other tasks' logs, the health listener or the signal handlers. Its worker
    // threads live as long as the runtime, so stages spawned from them keep their parent.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scalr-agent: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scalr-agent: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one match over every command: the dispatch reads in one place"
)]
async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    // Before any task: the data directory private by permission, crashed tasks' leftovers gone.
    let (data, bins) = (config.data_dir.clone(), config.binaries_dir());
    tokio::task::spawn_blocking(move || crate::task::sweep::at_start(&data, &bins)).await??;
    if let Command::Exec { task, out } = command {
        let status = crate::exec::run(&config.exec(), &task, out.as_deref()).await?;
        return Ok(if status == TaskStatus::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILURE)
        });
    }
    let cache = SoftwareCache::new(
        config.binaries_dir(),
        config.software.clone(),
        config.http.clone(),
    );
    match command {
        Command::Version | Command::SandboxSelftest { .. } => {
            unreachable!("handled before the configuration is loaded")
        }
        Command::Doctor { .. } | Command::Exec { .. } => unreachable!("handled earlier"),
        Command::Run { local: _ } => {
            run_agent(config).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Relay => {
            let settings = config.relay.expect("Needs::Relay fills the relay settings");
            let shutdown = tokio_util::sync::CancellationToken::new();
            let metrics = std::sync::Arc::default();
            let relay = crate::relay::run(settings, metrics, shutdown.clone());
            until_stopped(relay, shutdown).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Software(SoftwareCommand::Install {
            tool,
            version,
            platform,
        }) => {
            let platform = match platform.or_else(Platform::host) {
                Some(p) => p,
                None => {
                    anyhow::bail!("this machine's architecture has no tool builds; pass --platform")
                }
            };
            let installed = cache.install(tool, &version, platform).await?;
            println!("{}", installed.path.display());
        }
        Command::Software(SoftwareCommand::List { json }) => {
            let rows = tokio::task::spawn_blocking(move || cache.list()).await??;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<10} {:<14} {:<12} {:>9}  {:<20}  VERIFIED",
                    "TOOL", "VERSION", "PLATFORM", "SIZE", "LAST USED"
                )?;
                for r in rows {
                    let used = r
                        .last_used
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                        .unwrap_or_else(|| "-".into());
                    let verified = match r.damage {
                        Some(d) => format!("DAMAGED: {d} (reinstalled on next use)"),
                        None => r.verified,
                    };
                    writeln!(
                        out,
                        "{:<10} {:<14} {:<12} {:>9}  {:<20}  {}",
                        r.tool,
                        r.version,
                        r.platform,
                        human_size(r.size),
                        used,
                        verified
                    )?;
                }
            }
        }
        Command::Software(SoftwareCommand::Providers {
            json,
            verify,
            prune,
            add,
        }) => providers(&config, json, verify, prune, &add).await?,
        Command::Software(SoftwareCommand::Prune { json }) => {
            let report = tokio::task::spawn_blocking(move || cache.prune()).await??;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                for r in &report.removed {
                    writeln!(out, "removed {r}")?;
                }
                for k in &report.kept_in_use {
                    writeln!(out, "kept {k} (in use)")?;
                }
                writeln!(
                    out,
                    "freed {}, {} remain",
                    human_size(report.freed_bytes),
                    human_size(report.remaining_bytes)
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `software providers`: the provider store's entries, optionally pruned first.
async fn providers(
    config: &Config,
    json: bool,
    verify: bool,
    prune: bool,
    add: &[String],
) -> anyhow::Result<()> {
    let store = crate::providers::ProviderStore::new(config.providers.clone(), config.http.clone());
    for spec in add {
        let pkg = crate::providers::addr::Package::parse_spec(spec)?;
        let ensured = store.ensure(&pkg).await?;
        if !json {
            let how = if ensured.filled.is_some() {
                "added"
            } else {
                "already stored"
            };
            writeln!(
                std::io::stdout().lock(),
                "{how}: {pkg} {}",
                ensured.manifest.h1
            )?;
        }
    }
    let (report, rows) = tokio::task::spawn_blocking(move || {
        let report = if prune { Some(store.prune()) } else { None };
        (report.transpose(), store.list(verify))
    })
    .await?;
    let report = report?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "pruned": report, "entries": rows }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    if let Some(r) = &report {
        for line in &r.removed {
            writeln!(out, "removed {line}")?;
        }
    }
    writeln!(
        out,
        "{:<44} {:<12} {:<12} {:>9}  {:<20}  {:<48}  VERIFIED",
        "PROVIDER", "VERSION", "PLATFORM", "SIZE", "LAST USED", "H1"
    )?;
    for r in rows {
        let verified = match r.damage {
            Some(d) => format!("DAMAGED: {d} (replaced on next fill)"),
            None => r.verified.unwrap_or_default(),
        };
        writeln!(
            out,
            "{:<44} {:<12} {:<12} {:>9}  {:<20}  {:<48}  {}",
            r.provider,
            r.version,
            r.target,
            human_size(r.size),
            r.last_used.unwrap_or_else(|| "-".into()),
            r.h1.unwrap_or_else(|| "-".into()),
            verified
        )?;
    }
    Ok(())
}

/// `run`: the daemon, with signals turned into its shutdown token. A second signal exits at
/// once (code 130); what was not delivered stays in the spool for the next start.
async fn run_agent(config: Config) -> anyhow::Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let launcher = crate::sandbox::stage::Launcher::current()?;
    let executor = std::sync::Arc::new(crate::agent::runner_executor::RunnerExecutor::new(
        crate::exec::runner(&config.exec(), launcher),
    ));
    let daemon = crate::agent::run(config.agent, executor, shutdown.clone());
    until_stopped(daemon, shutdown).await
}

/// Runs `work` until it ends; the first SIGTERM/SIGINT cancels `shutdown`, a second one exits
/// at once (code 130).
async fn until_stopped<E>(
    work: impl std::future::Future<Output = Result<(), E>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::pin!(work);
    let mut signals = 0;
    loop {
        tokio::select! {
            r = &mut work => return Ok(r?),
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        signals += 1;
        if signals == 1 {
            tracing::info!("stop signal received; stopping (a second signal exits at once)");
            shutdown.cancel();
        } else {
            tracing::warn!("second stop signal: exiting now");
            std::process::exit(130);
        }
    }
}

/// Before `exec` and `run` start anything: task uids must reach the task directories and the
/// tools (see `datadir::check_reach`); exit 64 naming the directory and the fix if not.
fn check_reach(config: &Config) -> Result<(), ExitCode> {
    let switching = crate::sandbox::probe::probe_uid_switch().ok;
    match crate::datadir::check_reach(&config.data_dir, &config.cache_dir, switching) {
        Ok(crate::datadir::Reach::Reachable) => Ok(()),
        Ok(crate::datadir::Reach::Skipped) => {
            tracing::info!(
                data_dir = %config.data_dir.display(),
                "the agent cannot switch uids (not root): stages run as its own uid; the task \
                 uids' reach of the data directory is not checked"
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("scalr-agent: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// `doctor`: probes, prints the report, exits 64 when task uids cannot reach the data
/// directory (as `exec` and `run` would), 1 when tasks would be refused.
fn doctor(config: &Config, json: bool) -> ExitCode {
    let probes = crate::sandbox::probe::probe();
    let reach =
        crate::datadir::check_reach(&config.data_dir, &config.cache_dir, probes.uid_switch.ok);
    let settings = config.doctor();
    let report = crate::doctor::report(&settings, &probes)
        .with_reach(&reach)
        .with_identity(&settings, &config.data_dir, &probes);
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(t) => t + "\n",
            Err(e) => {
                eprintln!("scalr-agent: error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    } else {
        report.to_text()
    };
    print!("{text}");
    if report.unreachable {
        ExitCode::from(EXIT_CONFIG)
    } else if report.refused {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
