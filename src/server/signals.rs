//! The daemon's signals: SIGTERM and SIGINT stop it gracefully; SIGHUP reloads what can be
//! reloaded and never stops it.
//!
//! What a SIGHUP reloads: the log filter, re-read from `--log-filter-file` (the filter of
//! `--log-level` comes from the command line or the environment, which a running process
//! cannot re-read, so without the file there is nothing to reload, and the log line says so);
//! and, when TLS is configured, every TLS certificate, key and CA file (`server::tls`): new
//! connections use the new files, open ones keep theirs, and a file that does not load leaves
//! the old set in force. The cluster key and every other setting are read at start only:
//! change them with a restart (one node at a time is a rolling restart). Each SIGHUP logs one
//! line saying what it did to the log filter, and one more about TLS when TLS is configured.

use tokio::signal::unix::{signal, Signal, SignalKind};

use std::sync::Arc;

use super::logging::{LogControl, Reloaded};
use super::tls::ServerTls;

/// Takes SIGTERM and SIGINT (Ctrl-C) away from their default action (which ends the process
/// at once) and returns a future that completes when either arrives.
///
/// The handlers are installed when this is called, not when the future is first polled: call
/// it before announcing the port, or a SIGTERM sent right after the announcement could still
/// kill the process instead of stopping it gracefully.
pub fn shutdown() -> impl std::future::Future<Output = ()> + Send + 'static {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut terminate), Ok(mut interrupt)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            biased;
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Takes SIGHUP away from its default action (which ends the process). Call it as early as
/// possible; then run [`reload_on_hangup`] with the result.
pub fn hangups() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

/// Reloads the log filter (and the TLS files, given `tls`) on every SIGHUP, for as long as
/// the process runs.
pub async fn reload_on_hangup(
    mut hangups: Signal,
    mut log: LogControl,
    tls: Option<Arc<ServerTls>>,
) {
    while hangups.recv().await.is_some() {
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    "SIGHUP: reloaded the TLS certificates, keys and CAs; new connections use them"
                ),
                Err(error) => tracing::warn!(
                    error = %crate::error_chain(&error),
                    "SIGHUP: cannot reload the TLS files; keeping the ones in force"
                ),
            }
        }
        match log.reload() {
            Ok(Reloaded::Changed { from, to }) => {
                tracing::info!(%from, %to, "SIGHUP: reloaded the log filter from --log-filter-file")
            }
            Ok(Reloaded::Unchanged(filter)) => tracing::info!(
                %filter,
                "SIGHUP: reloaded --log-filter-file; the log filter is unchanged"
            ),
            Ok(Reloaded::NoFile(filter)) => tracing::info!(
                %filter,
                "SIGHUP: nothing to reload (the log filter comes from --log-level; give \
                 --log-filter-file to change it at run time)"
            ),
            Err(error) => tracing::warn!(
                error = %crate::error_chain(&error),
                filter = log.current(),
                "SIGHUP: cannot reload the log filter; keeping the one in force"
            ),
        }
    }
}
