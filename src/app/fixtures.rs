//! State fixtures through the App (see `storage::fixtures`): saving one,
//! listing and deleting them, and restoring one atomically for requests
//! (the server's gate shut, see `crate::gate`) as a logged change.

use std::sync::Arc;
use std::time::Duration;

use super::{origin_json, with_origin, App, Origin, ORIGIN};
use crate::engine::time::Millis;
use crate::engine::{Command, EngineError, Outcome};
use crate::storage::fixtures::{self, FixtureError, Listed};
use crate::storage::snapshot::SnapshotInfo;
use crate::storage::store::Store;

/// How long a restore waits for the requests in flight to finish (new ones
/// wait meanwhile); past it the restore gives up and the gate opens again.
pub const RESTORE_DRAIN_MS: u64 = 5_000;

/// Why a state fixture could not be saved, restored or deleted.
#[derive(Debug)]
pub enum StateError {
    /// The server keeps no data directory (fixtures live there).
    NoDataDirectory,
    /// A cluster node: its state is the stream's, which no node may
    /// replace alone.
    Clustered,
    Fixture(FixtureError),
    /// Requests in flight did not finish within [`RESTORE_DRAIN_MS`]:
    /// nothing changed.
    Busy,
    /// The restore was asked from inside the gate it must shut.
    InsideGate,
    /// Storage failed (the message says what the state is now).
    Unavailable(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::NoDataDirectory => {
                f.write_str("this server keeps no data directory, where fixtures are stored")
            }
            StateError::Clustered => f.write_str(
                "a cluster node's state is the cluster stream's: state fixtures are kept by single nodes only",
            ),
            StateError::Fixture(e) => write!(f, "{e}"),
            StateError::Busy => write!(
                f,
                "requests in flight did not finish within {RESTORE_DRAIN_MS} ms; nothing changed, retry"
            ),
            StateError::InsideGate => {
                f.write_str("a restore cannot be made from a request that holds the state gate")
            }
            StateError::Unavailable(why) => write!(f, "storage failed: {why}"),
        }
    }
}

/// How a restore under the commit lock failed.
struct Failed {
    why: String,
    /// The engine was cleared: what it holds is no state the log describes.
    damaged: bool,
}

impl App {
    fn fixture_store(&self) -> Result<Arc<Store>, StateError> {
        if self.cluster.is_some() {
            return Err(StateError::Clustered);
        }
        self.store.clone().ok_or(StateError::NoDataDirectory)
    }

    /// Stores the state as it stands after every change acknowledged so far
    /// as fixture `name` (replacing one of that name). Requests run on.
    pub async fn save_state(&self, name: &str) -> Result<SnapshotInfo, StateError> {
        let store = self.fixture_store()?;
        let _one = self.fixtures.lock().await;
        fixtures::check_room(store.dir(), name).map_err(StateError::Fixture)?;
        let path = fixtures::path(store.dir(), name);
        let now = self.now();
        tokio::task::spawn_blocking(move || store.save_state(&path, now))
            .await
            .map_err(|e| StateError::Unavailable(e.to_string()))?
            .map_err(|e| StateError::Unavailable(e.to_string()))
    }

    /// The fixtures stored, by name.
    pub fn list_states(&self) -> Result<Vec<Listed>, StateError> {
        let store = self.fixture_store()?;
        fixtures::list(store.dir()).map_err(|e| StateError::Fixture(FixtureError::Io(e)))
    }

    /// Deletes fixture `name`.
    pub async fn delete_state(&self, name: &str) -> Result<(), StateError> {
        let store = self.fixture_store()?;
        let _one = self.fixtures.lock().await;
        fixtures::delete(store.dir(), name).map_err(StateError::Fixture)
    }

    /// Replaces the whole state with fixture `name`'s, atomically for
    /// requests (see [`crate::gate`]), as a logged change: returns once it
    /// is durable. Runs to its end even if the caller goes away.
    pub async fn restore_state(self: &Arc<Self>, name: &str) -> Result<SnapshotInfo, StateError> {
        // The request's origin is task-local: taken here, in its task.
        let origin: Option<Origin> = ORIGIN.try_with(|o| o.borrow().clone()).ok();
        if origin.as_ref().is_some_and(|o| o.gated) {
            return Err(StateError::InsideGate);
        }
        let app = self.clone();
        let name = name.to_string();
        let run = async move {
            match origin {
                Some(o) => with_origin(o, app.restore_state_inner(name)).await.0,
                None => app.restore_state_inner(name).await,
            }
        };
        tokio::spawn(run)
            .await
            .map_err(|e| StateError::Unavailable(e.to_string()))?
    }

    async fn restore_state_inner(
        self: Arc<Self>,
        name: String,
    ) -> Result<SnapshotInfo, StateError> {
        let store = self.fixture_store()?;
        let _one = self.fixtures.lock().await;
        // Checked whole off the async threads, before anything waits.
        let (dir, n, now) = (store.dir().to_path_buf(), name.clone(), self.now());
        let (bytes, mut info) =
            tokio::task::spawn_blocking(move || fixtures::read_checked(&dir, &n, now))
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))?
                .map_err(StateError::Fixture)?;
        let shut = self
            .gate
            .close_within(Duration::from_millis(RESTORE_DRAIN_MS))
            .await
            .ok_or(StateError::Busy)?;
        // The time of the change: read once nothing else runs.
        let now = self.now();
        let origin = origin_json(now);
        let app = self.clone();
        let committed =
            tokio::task::spawn_blocking(move || app.restore_committed(&name, now, &origin, &bytes))
                .await
                .unwrap_or_else(|e| {
                    Err(Failed {
                        why: e.to_string(),
                        damaged: true,
                    })
                });
        let lsn = match committed {
            Ok(lsn) => lsn,
            Err(f) if f.damaged => {
                // Not one request may read this state: every one is refused
                // until a restart recovers the state before the restore.
                store.log.latch();
                shut.break_forever();
                tracing::error!(
                    "state restore failed half-way: {}; restart to recover",
                    f.why
                );
                return Err(StateError::Unavailable(format!(
                    "{}; the server refuses every request until it is restarted, \
                     which recovers the state before the restore",
                    f.why
                )));
            }
            Err(f) => {
                return Err(StateError::Unavailable(format!(
                    "{}; nothing changed",
                    f.why
                )))
            }
        };
        store.log.wait(lsn).await.map_err(|_| {
            StateError::Unavailable(
                "the restore was made but the log could not make it durable; changes are \
                 refused until a restart, which recovers the state before the restore"
                    .into(),
            )
        })?;
        // The restored outbox's events were made by durable changes.
        self.release_all_made();
        drop(shut);
        // What the fixture held, and the record that restored it.
        info.lsn = lsn;
        Ok(info)
    }

    /// Under the commit lock: the restore's state file, then the engine
    /// replaced, then the record; returns its lsn. The gate is shut.
    fn restore_committed(
        &self,
        name: &str,
        now: Millis,
        origin: &[u8],
        bytes: &[u8],
    ) -> Result<u64, Failed> {
        let store = self.fixture_store().map_err(|e| Failed {
            why: e.to_string(),
            damaged: false,
        })?;
        let cmd = Command::RestoreState {
            fixture: name.into(),
            now,
        };
        let mut failed: Option<Failed> = None;
        let committed = store.log.commit_ledgered_at(&cmd, origin, |lsn| {
            let file = fixtures::restore_file(store.dir(), lsn);
            if let Err(e) = fixtures::write_restore_file(store.dir(), lsn, bytes) {
                failed = Some(Failed {
                    why: format!("{}: {e}", file.display()),
                    damaged: false,
                });
                return Err(EngineError::Invalid("fixture", "state file not written"));
            }
            let mut entries = Vec::new();
            let ledgered = store.log.is_ledgered().then_some(&mut entries);
            // The bytes loaded into a scratch engine a moment ago, so this
            // cannot fail; if it does (or panics), the engine is half made.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fixtures::apply(&self.engine, &file, bytes, name, now, ledgered)
            }));
            match applied {
                Ok(Ok(_)) => Ok((Outcome::Done, entries)),
                Ok(Err(e)) => {
                    failed = Some(Failed {
                        why: e.to_string(),
                        damaged: true,
                    });
                    Err(EngineError::Invalid("fixture", "restore failed"))
                }
                Err(_) => {
                    failed = Some(Failed {
                        why: "the restore panicked".into(),
                        damaged: true,
                    });
                    Err(EngineError::Invalid("fixture", "restore failed"))
                }
            }
        });
        match committed {
            Ok(c) => c.lsn.ok_or(Failed {
                why: "the restore was not logged".into(),
                damaged: true,
            }),
            Err(_) => Err(failed.unwrap_or(Failed {
                why: "the log is unavailable".into(),
                damaged: false,
            })),
        }
    }
}
