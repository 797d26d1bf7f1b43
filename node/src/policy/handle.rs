//! The router's handle on the local policy: the policy in force, swapped atomically when the
//! file changes, and the watcher that polls the file.
//!
//! Owns: [`PolicyHandle`] (load at start, [`PolicyHandle::reload`], the hash-change watch
//! for audit) and [`PolicyHandle::spawn_watcher`].
//!
//! It must never let a node start with a configured policy file that does not load, replace
//! the policy in force with one that fails to read, parse or validate (the previous one stays
//! and the error is reported), or evaluate anything itself (that is `engine`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::engine::sha256_hex;
use super::{LocalPolicy, PolicyError, PolicyInput, Verdict};

/// The router's handle on the local policy: hot-reloadable, cheap to read.
#[derive(Debug)]
pub struct PolicyHandle {
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<LocalPolicy>>>,
    /// (mtime, size) of the file when the watcher last looked.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Hash of the policy in force (None: no local policy). For audit hooks.
    changes: tokio::sync::watch::Sender<Option<String>>,
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl PolicyHandle {
    /// `None`: no local policy — everything the built-in rules allow stays allowed.
    /// `Some(path)`: the file must load now (a node must not start with a broken policy).
    pub fn new(path: Option<PathBuf>) -> Result<Self, PolicyError> {
        let (current, stamp) = match &path {
            Some(p) => {
                let stamp = file_stamp(p);
                (Some(Arc::new(LocalPolicy::load(p)?)), stamp)
            }
            None => (None, None),
        };
        let hash = current.as_ref().map(|p| p.hash());
        Ok(PolicyHandle {
            path,
            current: RwLock::new(current),
            stamp: Mutex::new(stamp),
            changes: tokio::sync::watch::channel(hash).0,
        })
    }

    /// The configured file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-read the file. `Ok(true)` when a different policy is now in force, `Ok(false)`
    /// when the text is unchanged (or no file is configured). A file that cannot be read,
    /// parsed or validated leaves the previous policy in force and returns the error.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if let Ok(mut s) = self.stamp.lock() {
            *s = file_stamp(path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        let hash = sha256_hex(&text);
        if self.current().is_some_and(|p| p.hash == hash) {
            return Ok(false);
        }
        let policy = Arc::new(LocalPolicy::from_text(&text, &path.display().to_string())?);
        match self.current.write() {
            Ok(mut g) => *g = Some(policy),
            Err(poisoned) => *poisoned.into_inner() = Some(policy),
        }
        self.changes.send_replace(Some(hash));
        Ok(true)
    }

    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<LocalPolicy>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `allowed` when no policy is loaded; otherwise the policy's verdict.
    pub fn evaluate(&self, input: &PolicyInput) -> Verdict {
        match self.current() {
            Some(p) => p.evaluate(input),
            None => Verdict::allow(),
        }
    }

    /// The hash of the policy in force, updated on every successful change (for audit).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.changes.subscribe()
    }

    /// Poll the file's mtime and size every `every` and reload when they change, until the
    /// node stops. Logs each change and each rejected file once. Does nothing when no file is
    /// configured. Must be called inside a tokio runtime.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration, tasks: &crate::tasks::Tasks) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let me = Arc::clone(self);
        tasks.spawn(tracing::info_span!("policy-watcher"), async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = file_stamp(&path);
                let seen = me.stamp.lock().map(|s| *s).unwrap_or(None);
                if now == seen {
                    continue;
                }
                match me.reload() {
                    Ok(true) => {
                        if let Some(p) = me.current() {
                            tracing::info!(
                                policy.path = %path.display(),
                                policy.hash = %p.hash(),
                                policy.rules = p.len(),
                                "local policy reloaded"
                            );
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        policy.path = %path.display(),
                        error = %e,
                        "local policy file rejected; the previous policy stays in force"
                    ),
                }
            }
        });
    }
}
