//! The supervisor: starts the registry, webhook delivery, uploader,
//! transcoder pool and intake as linked children, restarts any that stops or
//! fails, and resumes unfinished uploads at start and after the pool restarts.
//!
//! A child that keeps stopping is not restarted in a tight loop: the first
//! restart is at once, each next one within [`RESTART_WINDOW`] waits twice as
//! long as the one before (from [`RESTART_BACKOFF`]'s first wait), and after
//! [`MAX_RESTARTS`] in the window the child is left stopped (which `/readyz`
//! reports) until the window has passed, then tried again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tracing::{error, info, warn};

use super::intake::Intake;
use super::registry::Registry;
use super::transcoder::{self, TranscoderFactory};
use super::uploader::Uploader;
use super::webhooks::WebhookDelivery;
use super::{recovery, Services};
use crate::backoff::Backoff;

/// How long shutdown waits for each child to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Restarts of one child within [`RESTART_WINDOW`] before it is left stopped.
pub const MAX_RESTARTS: usize = 5;

/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The waits before the second and later restarts within the window.
pub const RESTART_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(250),
    max: Duration::from_secs(5),
};

/// The root of the actor tree.
pub struct Supervisor;

/// The children, so a supervision event can be matched to what to restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Child {
    /// The status registry.
    Registry,
    /// The uploader.
    Uploader,
    /// The transcoder pool.
    Transcoders,
    /// The intake actor.
    Intake,
    /// Webhook delivery.
    Webhooks,
}

/// Supervisor state.
pub struct SupervisorState {
    /// Shared services, handed to each child it (re)starts.
    services: Arc<Services>,
    /// Which child each running actor id is.
    children: HashMap<ActorId, Child>,
    /// Set by `Shutdown`: stopped children are not restarted.
    stopping: bool,
    /// When each child was (or is to be) restarted lately, oldest first.
    restarts: HashMap<Child, Vec<Instant>>,
}

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// Tests and operators: stop one child abruptly to exercise restarts.
    Kill(Child),
    /// The server: stop every child, in an order that lets the registry
    /// commit what the others send it last, and reply once they are gone.
    Shutdown(RpcReplyPort<()>),
    /// The supervisor itself, once a child's wait before its restart is over.
    Restart(Child),
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        services: Arc<Services>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            services,
            children: HashMap::new(),
            stopping: false,
            restarts: HashMap::new(),
        };
        for child in [
            Child::Registry,
            Child::Webhooks,
            Child::Uploader,
            Child::Transcoders,
            Child::Intake,
        ] {
            start(&myself, &mut state, child).await?;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let resumed = recovery::resume(&state.services, false).await?;
        info!(resumed, "unfinished uploads resumed");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Kill(child) => {
                if let Some(cell) = cell_of(&state.services, child) {
                    warn!(?child, "killing child on request");
                    cell.kill();
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                for child in [
                    Child::Intake,
                    Child::Transcoders,
                    Child::Uploader,
                    Child::Webhooks,
                    Child::Registry,
                ] {
                    if let Some(cell) = cell_of(&state.services, child) {
                        let _ = cell.stop_and_wait(None, Some(SHUTDOWN_WAIT)).await;
                    }
                }
                let _ = reply.send(());
            }
            SupervisorMsg::Restart(child) if !state.stopping => {
                restart(&myself, state, child).await?
            }
            SupervisorMsg::Restart(_) => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping {
            return Ok(());
        }
        error!(?child, ?reason, "child stopped");
        schedule_restart(&myself, state, child).await
    }
}

/// Restarts `child` now or after its backoff, or gives up on it after
/// [`MAX_RESTARTS`] within [`RESTART_WINDOW`].
async fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    child: Child,
) -> Result<(), ActorProcessingErr> {
    let now = Instant::now();
    let recent = state.restarts.entry(child).or_default();
    recent.retain(|at| now.saturating_duration_since(*at) < RESTART_WINDOW);
    if recent.len() >= MAX_RESTARTS {
        error!(
            ?child,
            restarts = recent.len(),
            window_secs = RESTART_WINDOW.as_secs(),
            "child keeps stopping; left stopped for the window, then tried again"
        );
        myself.send_after(RESTART_WINDOW, move || SupervisorMsg::Restart(child));
        return Ok(());
    }
    let wait = match recent.len() {
        0 => Duration::ZERO,
        n => RESTART_BACKOFF.before_retry(n as u32),
    };
    recent.push(now + wait);
    if wait.is_zero() {
        return restart(myself, state, child).await;
    }
    warn!(
        ?child,
        wait_ms = wait.as_millis() as u64,
        "restarting after a wait"
    );
    myself.send_after(wait, move || SupervisorMsg::Restart(child));
    Ok(())
}

/// Starts `child` again; a start that fails counts as one more stop.
async fn restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    child: Child,
) -> Result<(), ActorProcessingErr> {
    if child == Child::Transcoders {
        // Before the new pool is there: a dispatch meanwhile finds no pool,
        // gives its place back and is left for the resume below.
        transcoder::forget_pool(&state.services);
    }
    if let Err(e) = start(myself, state, child).await {
        error!(?child, error = %e, "child did not start");
        return Box::pin(schedule_restart(myself, state, child)).await;
    }
    info!(?child, "child restarted");
    if child == Child::Transcoders {
        recovery::resume(&state.services, true).await?;
    }
    Ok(())
}

fn cell_of(services: &Services, child: Child) -> Option<ActorCell> {
    let peers = &services.peers;
    match child {
        Child::Registry => peers.registry.get().map(|a| a.get_cell()),
        Child::Uploader => peers.uploader.get().map(|a| a.get_cell()),
        Child::Transcoders => peers.transcoders.get().map(|a| a.get_cell()),
        Child::Intake => peers.intake.get().map(|a| a.get_cell()),
        Child::Webhooks => peers.webhooks.get().map(|a| a.get_cell()),
    }
}

async fn start(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    child: Child,
) -> Result<(), ActorProcessingErr> {
    let services = state.services.clone();
    let peers = &services.peers;
    let me = myself.get_cell();
    let id = match child {
        Child::Registry => {
            let (actor, _) = Actor::spawn_linked(None, Registry, services.clone(), me).await?;
            let id = actor.get_id();
            peers.registry.set(Some(actor));
            id
        }
        Child::Uploader => {
            let (actor, _) = Actor::spawn_linked(None, Uploader, services.clone(), me).await?;
            let id = actor.get_id();
            peers.uploader.set(Some(actor));
            id
        }
        Child::Transcoders => {
            let args = transcoder::pool_arguments(&services, services.config.transcoders);
            let (actor, _) =
                Actor::spawn_linked(None, TranscoderFactory::default(), args, me).await?;
            let id = actor.get_id();
            peers.transcoders.set(Some(actor));
            id
        }
        Child::Intake => {
            let (actor, _) = Actor::spawn_linked(None, Intake, services.clone(), me).await?;
            let id = actor.get_id();
            peers.intake.set(Some(actor));
            id
        }
        Child::Webhooks => {
            let (actor, _) =
                Actor::spawn_linked(None, WebhookDelivery, services.clone(), me).await?;
            let id = actor.get_id();
            peers.webhooks.set(Some(actor));
            id
        }
    };
    state.children.insert(id, child);
    Ok(())
}
