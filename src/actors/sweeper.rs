//! The sweeper: frees the staged sources that failed uploads keep for a
//! retry once `failed_source_retention_hours` have passed
//! ([`crate::store::kept`]). The file goes first, then its row, through the
//! registry: a crash between the two only means the file is removed again.
//! The record stays, failed; a retry of it is then refused. It also forgets
//! the `Idempotency-Key`s older than `idempotency_key_retention_hours`
//! ([`crate::store::idempotency`]), a write of their own rows only, like
//! the cleaner's; a lookup ignores an expired key before it goes. A task of the
//! server's own (on `Services::tasks`), asleep until the next source is due;
//! it looks again at least every [`LOOK_EVERY`], or every retention period
//! if that is shorter, so a source kept after it fell asleep is not freed
//! late by more than that. It ends when the server stops.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use super::{registry, Services};
use crate::store::idempotency;
use crate::store::record::{unix_now, TransitionPatch};

/// Longest sleep between two looks.
const LOOK_EVERY: Duration = Duration::from_secs(600);

/// Shortest sleep between two looks.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// Sources freed per read of the due ones.
const BATCH: usize = 64;

/// Starts the sweeper.
pub fn start(services: &Arc<Services>) {
    let services = services.clone();
    services.tasks.clone().spawn(run(services));
}

async fn run(services: Arc<Services>) {
    let look_every = LOOK_EVERY
        .min(services.config.failed_source_retention)
        .max(MIN_WAIT);
    loop {
        let wait = match sweep(&services).await {
            Ok(Some(next)) => Duration::from_secs(u64::try_from(next - unix_now()).unwrap_or(0)),
            Ok(None) => look_every,
            Err(e) => {
                warn!(error = %e, "cannot free the sources of failed uploads now; trying again later");
                Duration::from_secs(60)
            }
        };
        // After the sources, which free disk: a failure here stops nothing else.
        if let Err(e) = forget_expired_keys(&services).await {
            warn!(error = %e, "cannot forget the expired Idempotency-Keys now; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(wait.clamp(MIN_WAIT, look_every)) => {}
            () = services.stop.cancelled() => return,
        }
    }
}

/// Frees every source that is due; returns when the next one is.
async fn sweep(services: &Arc<Services>) -> Result<Option<i64>, String> {
    loop {
        let store = services.store.clone();
        let at = unix_now();
        let (due, next) = services
            .blocking(move || store.sources_due(at, BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if due.is_empty() {
            return Ok(next);
        }
        for id in due {
            if services.stop.is_cancelled() {
                return Ok(None);
            }
            free(services, id).await?;
        }
    }
}

/// Forgets the `Idempotency-Key`s past their retention, a batch per write.
async fn forget_expired_keys(services: &Arc<Services>) -> Result<(), String> {
    let before = idempotency::kept_since(services.config.idempotency_key_retention);
    loop {
        let store = services.store.clone();
        let forgotten = services
            .blocking(move || store.forget_idempotency_keys(before, BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if forgotten < BATCH || services.stop.is_cancelled() {
            return Ok(());
        }
    }
}

/// Removes the staged source of `id`, then its row.
async fn free(services: &Arc<Services>, id: Uuid) -> Result<(), String> {
    let staged = services.layout.staged_path(id);
    let removed = services
        .blocking(move || match std::fs::remove_file(staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(|e| e.to_string())?;
    removed.map_err(|e| format!("removing the source of {id}: {e}"))?;
    let freed = TransitionPatch {
        source_freed: true,
        ..Default::default()
    };
    match registry::patch(services, id, freed).await {
        Ok(_) => {}
        // Deleted meanwhile: the deletion removed the row.
        Err(e) if e.is_moved_on() => {}
        Err(e) => return Err(e.to_string()),
    }
    info!(upload = %id, "freed the source of a failed upload");
    Ok(())
}
