//! systemd's service notifications (sd_notify(3), through the `sd-notify` crate): readiness,
//! stopping, status text and the watchdog. Without `NOTIFY_SOCKET` (not started by systemd
//! with `Type=notify`) nothing is sent.
//!
//! **When `READY=1` is sent.** Recovery is done before `Server::serve` runs; `serve` starts
//! accepting clients and then hands the leader watch to `ready_when_serving`, which sends
//! `READY=1` once the node *serves*, meaning it accepts clients and knows a leader (itself or
//! another member), so its answers are grants and redirects rather than "no leader". Two
//! cases cannot wait for that:
//! - a node with an empty data directory and no `--bootstrap` (`--join`, or a lost disk)
//!   hears from no leader until an operator adds it (`raftlock cluster add`), which needs it
//!   running: it is ready as soon as it accepts connections;
//! - a follower whose peers are down (no quorum) may never hear from a leader: after
//!   [`READY_WITHOUT_LEADER`] it is declared ready anyway, with `STATUS=` saying no leader is
//!   known, so that systemd's start timeout does not kill a node that is doing all it can
//!   (voting, waiting for its peers) and turn a quorum loss into a restart loop.
//!
//! `STATUS=` follows the leader afterwards (`systemctl status` shows it).
//!
//! **The watchdog.** With `WatchdogSec=` in the unit, systemd sets `WATCHDOG_USEC` (and
//! `WATCHDOG_PID`). `Watchdog::ping` is called by the driver loop on every turn (it turns at
//! least once per tick) and sends `WATCHDOG=1` every half interval, so a driver that stops
//! turning (a deadlock, a blocked runtime) stops the pings and systemd restarts the node.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::time::Instant;

use super::inbox::LeaderInfo;

/// How long a node with a log waits for a leader before it declares itself ready without one.
/// Well below the units' `TimeoutStartSec=60s`, well above an election on a loaded machine.
pub const READY_WITHOUT_LEADER: Duration = Duration::from_secs(30);

/// Sends `states` to systemd if it asked for notifications; logs (without failing) if it
/// cannot be told. `NOTIFY_SOCKET` is left set: the daemon notifies more than once.
pub fn notify_logged(states: &[NotifyState<'_>]) {
    match sd_notify::notify(false, states) {
        Ok(()) => {
            if std::env::var_os("NOTIFY_SOCKET").is_some() {
                tracing::debug!(?states, "notified systemd");
            }
        }
        Err(error) => tracing::warn!(?states, %error, "cannot notify systemd"),
    }
}

/// Sends `READY=1` once the node serves (see the module doc), then keeps `STATUS=` current
/// until the driver is gone.
pub(crate) async fn ready_when_serving(
    mut leader: watch::Receiver<LeaderInfo>,
    expect_leader: bool,
    patience: Duration,
) {
    if !expect_leader {
        notify_logged(&[
            NotifyState::Ready,
            NotifyState::Status("serving; empty and waiting to be added (raftlock cluster add)"),
        ]);
    } else {
        notify_logged(&[NotifyState::Status("recovered; waiting for a leader")]);
        let give_up = Instant::now() + patience;
        loop {
            if let Some(id) = leader.borrow_and_update().leader {
                tracing::info!(leader = id, "serving: a leader is known");
                let status = format!("serving; leader {id}");
                notify_logged(&[NotifyState::Ready, NotifyState::Status(&status)]);
                break;
            }
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(give_up) => {
                    tracing::warn!(
                        waited_s = patience.as_secs(),
                        "no leader known yet; telling systemd the node is ready anyway"
                    );
                    notify_logged(&[
                        NotifyState::Ready,
                        NotifyState::Status("serving; no leader known (are the peers up?)"),
                    ]);
                    break;
                }
            }
        }
    }
    while leader.changed().await.is_ok() {
        let status = match leader.borrow_and_update().leader {
            Some(id) => format!("serving; leader {id}"),
            None => "serving; no leader known (an election is under way?)".to_string(),
        };
        notify_logged(&[NotifyState::Status(&status)]);
    }
}

/// The watchdog keep-alive, pinged from the driver loop.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// Half of `WATCHDOG_USEC`; `None` when systemd asked for no watchdog.
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC` and `WATCHDOG_PID` naming this
    /// process), or one that does nothing.
    pub(crate) fn from_env() -> Watchdog {
        let mut usec = 0;
        let every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2))
            .filter(|every| !every.is_zero());
        if let Some(every) = every {
            tracing::info!(
                every_ms = every.as_millis() as u64,
                "systemd watchdog enabled"
            );
        }
        Watchdog { every, last: None }
    }

    /// Sends `WATCHDOG=1` if half the interval has passed since the last one.
    pub(crate) fn ping(&mut self) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < every)
        {
            return;
        }
        self.last = Some(now);
        if let Err(error) = sd_notify::notify(false, &[NotifyState::Watchdog]) {
            tracing::warn!(%error, "cannot send WATCHDOG=1 to systemd");
        }
    }
}
