//! The node's background tasks: every task a node starts (delivery workers, cluster pulls
//! and sync, subscriptions, acknowledgement commits, watchers, the metrics endpoint) is
//! spawned through [`Tasks`], inside a tracing span, so shutdown can stop them all and wait
//! for exactly those, instead of guessing from reference counts.
//!
//! Two kinds of task: [`Tasks::spawn`] work is dropped at the next await point once the node
//! stops (a pull, a sync round, a subscription); [`Tasks::spawn_to_end`] work runs to its end
//! and must watch [`Tasks::stopping`] itself if it loops (a delivery worker stops between
//! batches; an acknowledgement commit always finishes, so the store closes after it).
//!
//! It must never: start a task outside the tracker, or let [`Tasks::drained`] return before
//! every tracked task has ended.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

pub use tokio_util::sync::CancellationToken as Stopping;

/// The tracker and stop signal every background task of one node shares.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `work` in `span` until it ends or the node stops, whichever comes first; work
    /// spawned after the stop does not run.
    pub fn spawn(&self, span: Span, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(
            async move {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {}
                    () = work => {}
                }
            }
            .instrument(span),
        );
    }

    /// Runs `work` in `span` to its end, even after the stop: for work that must finish, or
    /// that watches [`Tasks::stopping`] to stop at a safe point of its own.
    pub fn spawn_to_end(&self, span: Span, work: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(work.instrument(span));
    }

    /// The stop signal, for loops that stop at a point of their choosing
    /// (`stopping.cancelled().await`, `stopping.is_cancelled()`).
    pub fn stopping(&self) -> Stopping {
        self.stop.clone()
    }

    /// Tells every task to stop. Idempotent.
    pub fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Waits until every tracked task has ended, at most `within`; `Err` carries how many
    /// are still running. Call after [`Tasks::stop`].
    pub async fn drained(&self, within: Duration) -> Result<(), usize> {
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .map_err(|_| self.running())
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn stop_drops_spawned_work_and_waits_for_work_that_runs_to_its_end() {
        let tasks = Tasks::new();
        let finished = Arc::new(AtomicUsize::new(0));
        tasks.spawn(tracing::Span::none(), std::future::pending());
        let (f, stopping) = (finished.clone(), tasks.stopping());
        tasks.spawn_to_end(tracing::Span::none(), async move {
            stopping.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(tasks.running(), 2);
        assert_eq!(
            tasks.drained(Duration::from_millis(10)).await,
            Err(2),
            "nothing ends before the stop"
        );
        tasks.stop();
        tasks.drained(Duration::from_secs(5)).await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1, "to-end work finished");
        assert_eq!(tasks.running(), 0);

        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        tasks.spawn(tracing::Span::none(), async move {
            r.fetch_add(1, Ordering::SeqCst);
        });
        tasks.drained(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "work spawned after the stop never runs"
        );
    }
}
