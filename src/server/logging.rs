//! The daemon's log: tracing events on stderr, one line each, as text or JSON.
//!
//! Three things are added to `tracing-subscriber`'s formatters:
//! - **the node id on every line** (`node=3` in text, `"node_id":3` in JSON): the dev cluster
//!   and a shared journal interleave several nodes, and events from tokio tasks carry no
//!   enclosing span that could say which node they came from;
//! - **journald priorities**: when stderr *is* the journal (`JOURNAL_STREAM` names stderr's
//!   device and inode, as systemd sets it), each line starts with the `<N>` syslog priority of
//!   its level (sd-daemon(3)), which journald strips and records, so `journalctl -p warning`
//!   works; the timestamp is left out there, since journald stamps every line itself;
//!   Under `raftlockd dev-cluster` the supervisor prefixes every text line with `[node N] `
//!   itself and sets [`PREFIXED_ENV`] for its nodes, which then leave `node=N` out of their
//!   text lines, so that a line names its node once (JSON lines keep `"node_id"`);
//! - **a reloadable filter**: the `EnvFilter` sits in a [`reload`] layer, and [`LogControl`]
//!   swaps it at run time (on SIGHUP, see `signals.rs`) without restarting the node.

use std::path::{Path, PathBuf};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::raft::NodeId;

/// Set (to `1`) by the dev-cluster supervisor in each node's environment: the supervisor
/// prefixes the node's text lines with `[node N] `, so the node leaves out its own `node=N`.
pub const PREFIXED_ENV: &str = "RAFTLOCKD_LOG_PREFIXED";

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: `TIME node=N LEVEL target: message key=value...`.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON shape plus `"node_id"`), for log
    /// shippers.
    Json,
}

/// Why the log could not be set up or its filter not changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter directive does not parse.
    // The parse error's own text already includes its cause: it is shown, not chained.
    #[error("invalid log filter {directive:?}: {reason}")]
    Filter {
        /// The text given.
        directive: String,
        /// What is wrong with it.
        reason: tracing_subscriber::filter::ParseError,
    },
    /// `--log-filter-file` cannot be read.
    #[error("cannot read the log filter file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A global subscriber is already installed (a bug in the binary).
    #[error("the log is already set up")]
    AlreadySet,
    /// The reload layer is gone (the subscriber was dropped: a bug).
    #[error("cannot replace the log filter")]
    Reload(#[source] reload::Error),
}

/// What the log is set up with.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// The node id written on every line (`None` for a process that is no node, such as the
    /// dev-cluster supervisor).
    pub node: Option<NodeId>,
    /// Text or JSON.
    pub format: LogFormat,
    /// The filter when no file is given (`--log-level`).
    pub level: String,
    /// A file holding the filter, read at start (over `level`) and again on every reload.
    pub filter_file: Option<PathBuf>,
}

/// The handle on the installed log: reloads its filter.
#[derive(Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    filter_file: Option<PathBuf>,
    current: String,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The filter changed from `from` to `to`.
    Changed {
        /// The filter before.
        from: String,
        /// The filter now.
        to: String,
    },
    /// The file holds the filter already in force.
    Unchanged(String),
    /// No `--log-filter-file`: there is nothing to re-read.
    NoFile(String),
}

impl LogControl {
    /// The filter in force.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Re-reads `--log-filter-file` and installs its filter if it changed. On an error the
    /// filter in force stays.
    pub fn reload(&mut self) -> Result<Reloaded, LogError> {
        let Some(path) = &self.filter_file else {
            return Ok(Reloaded::NoFile(self.current.clone()));
        };
        let directive = read_filter_file(path)?;
        if directive == self.current {
            return Ok(Reloaded::Unchanged(directive));
        }
        let filter = parse_filter(&directive)?;
        self.handle.reload(filter).map_err(LogError::Reload)?;
        let from = std::mem::replace(&mut self.current, directive.clone());
        Ok(Reloaded::Changed {
            from,
            to: directive,
        })
    }
}

/// Installs the global subscriber writing to stderr; returns the handle that reloads its
/// filter.
pub fn init(settings: &LogSettings) -> Result<LogControl, LogError> {
    let directive = match &settings.filter_file {
        Some(path) => read_filter_file(path)?,
        None => settings.level.clone(),
    };
    let (filter, handle) = reload::Layer::new(parse_filter(&directive)?);
    let journald = stderr_is_journal();
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = !journald && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let prefixed = std::env::var_os(PREFIXED_ENV).is_some_and(|v| v == "1");
    let installed = match settings.format {
        LogFormat::Text => {
            let inner = format().with_ansi(ansi).with_timer(NodeStamp {
                node: settings.node.filter(|_| !prefixed),
                time: !journald,
            });
            let lines = NodeLines {
                node: settings.node,
                journald,
                json: false,
                inner,
            };
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .event_format(lines);
            registry.with(layer).try_init()
        }
        LogFormat::Json => {
            let inner = format().json().with_timer(SystemTime);
            let lines = NodeLines {
                node: settings.node,
                journald,
                json: true,
                inner,
            };
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .fmt_fields(JsonFields::new())
                .event_format(lines);
            registry.with(layer).try_init()
        }
    };
    installed.map_err(|_| LogError::AlreadySet)?;
    Ok(LogControl {
        handle,
        filter_file: settings.filter_file.clone(),
        current: directive,
    })
}

fn format() -> format::Format {
    format::format()
}

fn parse_filter(directive: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(directive).map_err(|reason| LogError::Filter {
        directive: directive.to_string(),
        reason,
    })
}

/// The filter in `path`: its text without surrounding whitespace; `#` lines are comments.
fn read_filter_file(path: &Path) -> Result<String, LogError> {
    let text = std::fs::read_to_string(path).map_err(|source| LogError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let directive: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    Ok(directive.join(","))
}

/// True when stderr is the journal's stream: `JOURNAL_STREAM=DEV:INODE` matches stderr's own
/// device and inode (an inherited variable with stderr redirected elsewhere does not count).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr()) {
        // The field types differ between platforms (u64 on Linux x86-64, narrower elsewhere).
        #[allow(clippy::unnecessary_cast)]
        Ok(stat) => stat.st_dev as u64 == dev && stat.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// The syslog priority journald records for a level (sd-daemon(3)'s `<N>` prefixes).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The opening of a text line: the time (unless journald stamps the line) and the node id.
struct NodeStamp {
    node: Option<NodeId>,
    time: bool,
}

impl FormatTime for NodeStamp {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        if self.time {
            SystemTime.format_time(w)?;
        }
        match self.node {
            Some(node) if self.time => write!(w, " node={node}"),
            Some(node) => write!(w, "node={node}"),
            None => Ok(()),
        }
    }
}

/// Wraps a formatter: the journald priority before the line, and in JSON the node id as the
/// object's first member.
struct NodeLines<F> {
    node: Option<NodeId>,
    journald: bool,
    json: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for NodeLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.journald {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        let (true, Some(node)) = (self.json, self.node) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"node_id\":{node},{rest}"),
            // The JSON formatter always writes an object; anything else passes unchanged.
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_file_is_trimmed_and_comments_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log-filter");
        std::fs::write(
            &path,
            "# the daemon's log filter\n raftlock=debug \n\ninfo\n",
        )
        .expect("write");
        assert_eq!(
            read_filter_file(&path).expect("read"),
            "raftlock=debug,info"
        );
        assert!(matches!(
            read_filter_file(&dir.path().join("missing")),
            Err(LogError::ReadFile { .. })
        ));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
