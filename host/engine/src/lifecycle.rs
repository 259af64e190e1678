//! A run's one cancellation path: prepare → warmup → measure → drain → write.
//!
//! A [`Cancel`] is handed to every phase. It has three levels: running; stopping (no new
//! request starts, sleeping clients wake and leave, requests in flight get
//! [`INTERRUPT_GRACE`] to finish); and cut (requests still in flight end now,
//! keeping what was measured, marked `cancelled`). The first Ctrl-C or `--max-plugin-faults`
//! stops; the end of the grace period or a second Ctrl-C cuts. Records are flushed line by line
//! as they come, and the partial result is written after the cut like any other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How long in-flight requests may finish after Ctrl-C before they are cut off.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// How far a run has been asked to wind down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Running,
    /// No new requests; those in flight may finish within the grace period.
    Stopping,
    /// Requests in flight are cut off now.
    Cut,
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// Ctrl-C (SIGINT), or the caller's own stop signal.
    Interrupt,
    /// `--max-plugin-faults`: this many faults reached the limit.
    PluginFaults { limit: u64, faults: u64 },
    /// An SLO search stage could no longer meet an SLO (the text says which and why).
    SloMissed(String),
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Interrupt => f.write_str("interrupted (Ctrl-C)"),
            StopCause::PluginFaults { limit, faults } => write!(
                f,
                "{faults} plugin fault{} reached --max-plugin-faults {limit}",
                if *faults == 1 { "" } else { "s" }
            ),
            StopCause::SloMissed(why) => write!(f, "stopped early: {why}"),
        }
    }
}

/// The run's cancellation token; clones share it.
#[derive(Clone)]
pub struct Cancel {
    level: Arc<watch::Sender<Level>>,
    cause: Arc<Mutex<Option<StopCause>>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Cancel {
            level: Arc::new(watch::channel(Level::Running).0),
            cause: Arc::new(Mutex::new(None)),
        }
    }

    pub fn level(&self) -> Level {
        *self.level.borrow()
    }

    pub fn is_stopping(&self) -> bool {
        self.level() >= Level::Stopping
    }

    pub fn is_cut(&self) -> bool {
        self.level() >= Level::Cut
    }

    /// The first cause given to [`Self::stop`], if any.
    pub fn cause(&self) -> Option<StopCause> {
        self.cause.lock().unwrap().clone()
    }

    /// Asks the run to stop issuing requests. Returns whether this call did it (the first).
    pub fn stop(&self, cause: StopCause) -> bool {
        let first = self.level.send_if_modified(|l| {
            let was = *l;
            *l = was.max(Level::Stopping);
            was == Level::Running
        });
        if first {
            *self.cause.lock().unwrap() = Some(cause);
        }
        first
    }

    /// Cuts off every request still in flight (implies stopping).
    pub fn cut(&self, cause: StopCause) {
        self.stop(cause);
        self.level.send_if_modified(|l| {
            let was = *l;
            *l = Level::Cut;
            was != Level::Cut
        });
    }

    async fn reached(&self, level: Level) {
        let mut rx = self.level.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|l| *l >= level).await;
    }

    /// Resolves once the run is stopping (or cut).
    pub async fn stopped(&self) {
        self.reached(Level::Stopping).await
    }

    /// Resolves once requests in flight are to be cut off.
    pub async fn cut_off(&self) {
        self.reached(Level::Cut).await
    }

    /// Ctrl-C handling for the `llmb` process: the first SIGINT stops, the second cuts off what
    /// is in flight so the run writes what it has and exits; if it has not exited 2 s later the
    /// process exits with status 130. Signals are watched on a thread of their own, so a busy
    /// runtime cannot delay them.
    pub fn on_ctrl_c(&self) {
        let cancel = self.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("llmb-signals".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(cancel.watch_signals(ready_tx));
            });
        match spawned {
            // Registered before the run starts, so an early Ctrl-C is never the default
            // (immediate, unflushed) termination.
            Ok(_) => {
                let _ = ready_rx.recv_timeout(Duration::from_secs(5));
            }
            Err(e) => eprintln!("warning: cannot watch for Ctrl-C: {e}"),
        }
    }

    async fn watch_signals(self, ready: std::sync::mpsc::Sender<()>) {
        #[cfg(unix)]
        let Ok(mut sigint) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        else {
            return;
        };
        let _ = ready.send(());
        loop {
            #[cfg(unix)]
            let signalled = sigint.recv().await.is_some();
            #[cfg(not(unix))]
            let signalled = tokio::signal::ctrl_c().await.is_ok();
            if !signalled {
                return;
            }
            // The first Ctrl-C stops; one while already stopping (a second, or after
            // --max-plugin-faults) cuts off what is in flight.
            if self.stop(StopCause::Interrupt) {
                eprintln!(
                    "\nInterrupted: no new requests; those in flight get up to {:?} (Ctrl-C again to stop at once)",
                    INTERRUPT_GRACE
                );
                continue;
            }
            eprintln!(
                "\nInterrupted again: cutting off requests in flight, writing what was measured"
            );
            self.cut(StopCause::Interrupt);
            std::thread::sleep(Duration::from_secs(2));
            eprintln!(
                "llmb: still busy 2 s after the second Ctrl-C; exiting (records are on disk)"
            );
            std::process::exit(130);
        }
    }
}

/// A caller's `watch` flag (the library API before [`Cancel`]): turning true stops the run.
impl From<watch::Receiver<bool>> for Cancel {
    fn from(mut rx: watch::Receiver<bool>) -> Self {
        let cancel = Cancel::new();
        if *rx.borrow() {
            cancel.stop(StopCause::Interrupt);
            return cancel;
        }
        let forward = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                flag = rx.wait_for(|s| *s) => {
                    if flag.is_ok() {
                        forward.stop(StopCause::Interrupt);
                    }
                }
                // Nothing left to forward once the run is over.
                _ = forward.cut_off() => {}
            }
        });
        cancel
    }
}

impl From<&Cancel> for Cancel {
    fn from(c: &Cancel) -> Self {
        c.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn levels_only_go_up_and_the_first_cause_stays() {
        let c = Cancel::new();
        assert_eq!(c.level(), Level::Running);
        assert!(c.stop(StopCause::PluginFaults {
            limit: 1,
            faults: 1
        }));
        assert!(!c.stop(StopCause::Interrupt));
        assert!(c.is_stopping() && !c.is_cut());
        c.stopped().await;
        c.cut(StopCause::Interrupt);
        assert!(c.is_cut());
        c.cut_off().await;
        assert!(matches!(c.cause(), Some(StopCause::PluginFaults { .. })));
    }

    #[tokio::test]
    async fn a_watch_flag_stops_the_token() {
        let (tx, rx) = watch::channel(false);
        let c = Cancel::from(rx);
        assert!(!c.is_stopping());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), c.stopped())
            .await
            .unwrap();
        assert_eq!(c.cause(), Some(StopCause::Interrupt));
    }
}
