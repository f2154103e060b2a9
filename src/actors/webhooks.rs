//! Webhook delivery: posts the outbox's events to their endpoints, signed, at
//! least once and in order per upload and endpoint. A failed delivery is
//! tried again with exponential backoff (`webhooks.initial_backoff_ms`
//! doubling up to `webhooks.max_backoff_secs`) until `webhooks.max_age_secs`
//! after the event, then given up. The outbox is durable, so pending
//! deliveries survive restarts; at start, and on every tick, due rows go out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use time::OffsetDateTime;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use super::Services;
use crate::store::outbox::{Delivery, Endpoint, Settlement};
use crate::view::UploadView;
use crate::webhook::{
    event_type, signature_header, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER,
};

/// The delivery actor.
pub struct WebhookDelivery;

/// One client for the endpoints the operator configured, one for clients'
/// `callback_url`s, which (unless `webhooks.allow_private_callback_urls`)
/// resolves names to public addresses only and ignores proxy settings, so
/// that the check cannot be routed around.
#[derive(Clone)]
struct Clients {
    configured: reqwest::Client,
    callbacks: reqwest::Client,
}

impl Clients {
    fn new(config: &crate::webhook::WebhookConfig) -> reqwest::Result<Clients> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(config.timeout_secs))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("vidpipe-webhooks/", env!("CARGO_PKG_VERSION")))
        };
        let configured = builder().build()?;
        let callbacks = if config.allow_private_callback_urls {
            configured.clone()
        } else {
            builder()
                .no_proxy()
                .dns_resolver(Arc::new(crate::webhook::guard::PublicOnly))
                .build()?
        };
        Ok(Clients {
            configured,
            callbacks,
        })
    }
}

/// Messages to the delivery actor.
pub enum WebhookMsg {
    /// The registry (after a commit that wrote events) and the timer: send what is due.
    Poll,
    /// A delivery task: this outbox row is settled, so its chain may go on.
    Settled(u64),
}

/// The delivery actor's state.
pub struct WebhookState {
    /// Shared services: outbox, config, keys, storage for playback URLs.
    services: Arc<Services>,
    /// HTTP clients; neither follows redirects.
    clients: Clients,
    /// Outbox rows being delivered now, and their tasks' abort handles.
    in_flight: HashMap<u64, AbortHandle>,
    /// The delivery tasks, aborted and awaited when the actor stops (an
    /// unsettled row is simply sent again later).
    tasks: JoinSet<()>,
    /// The timer that sends `Poll`, stopped with the actor.
    ticker: Option<JoinHandle<()>>,
}

impl Actor for WebhookDelivery {
    type Msg = WebhookMsg;
    type State = WebhookState;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        services: Arc<Services>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let clients = Clients::new(&services.config.webhooks)?;
        Ok(WebhookState {
            services,
            clients,
            in_flight: HashMap::new(),
            tasks: JoinSet::new(),
            ticker: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let every = Duration::from_millis(state.services.config.webhooks.poll_interval_ms);
        state.ticker = Some(myself.send_interval(every, || WebhookMsg::Poll));
        // Deliveries left from before a restart go out now.
        myself.cast(WebhookMsg::Poll)?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        state.in_flight.clear();
        state.tasks.abort_all();
        while state.tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WebhookMsg::Poll => send_due(&myself, state).await,
            WebhookMsg::Settled(seq) => {
                state.in_flight.remove(&seq);
                // Reap finished tasks, so the set holds only those still running.
                while state.tasks.try_join_next().is_some() {}
                send_due(&myself, state).await;
            }
        }
        Ok(())
    }
}

/// Starts a delivery task for each due row, up to the concurrency limit.
async fn send_due(myself: &ActorRef<WebhookMsg>, state: &mut WebhookState) {
    let room = state
        .services
        .config
        .webhooks
        .concurrency
        .saturating_sub(state.in_flight.len());
    if room == 0 {
        return;
    }
    let store = state.services.store.clone();
    let in_flight = state.in_flight.keys().copied().collect();
    // A read transaction over the outbox: off the executor.
    let due = state
        .services
        .blocking(move || store.outbox_due(OffsetDateTime::now_utc(), &in_flight, room))
        .await;
    let due = match due {
        Ok(Ok(due)) => due,
        Ok(Err(e)) => return error!(error = %e, "cannot read the webhook outbox"),
        Err(e) => return error!(error = %e, "webhook outbox read failed"),
    };
    for (seq, delivery) in due {
        let task = DeliveryTask {
            services: state.services.clone(),
            clients: state.clients.clone(),
            myself: myself.clone(),
        };
        let handle = state.tasks.spawn(task.run(seq, delivery));
        state.in_flight.insert(seq, handle);
    }
}

/// What one delivery needs, moved into its task.
struct DeliveryTask {
    services: Arc<Services>,
    clients: Clients,
    myself: ActorRef<WebhookMsg>,
}

impl DeliveryTask {
    /// Tries one delivery, writes the outcome to the outbox, then tells the actor.
    async fn run(self, seq: u64, delivery: Delivery) {
        let settlement = self.attempt(&delivery).await;
        let store = self.services.store.clone();
        // A durable commit: off the executor.
        match self
            .services
            .blocking(move || store.outbox_settle(seq, settlement))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(seq, error = %e, "cannot settle a webhook delivery"),
            Err(e) => error!(seq, error = %e, "webhook settlement failed"),
        }
        let _ = self.myself.cast(WebhookMsg::Settled(seq));
    }

    async fn attempt(&self, delivery: &Delivery) -> Settlement {
        let record = &delivery.record;
        let event = event_type(delivery);
        let Some((url, secret)) = self.resolve(delivery) else {
            warn!(upload = %record.id, event, endpoint = ?delivery.endpoint, "webhook endpoint no longer configured; event dropped");
            return Settlement::Done;
        };
        let guarded = matches!(delivery.endpoint, Endpoint::Callback { .. })
            && !self.services.config.webhooks.allow_private_callback_urls;
        // Addresses written in the URL are never resolved: checked here.
        if guarded {
            if let Err(e) = crate::webhook::guard::check_callback_host(&url) {
                warn!(upload = %record.id, event, error = %e, "callback_url refused; event dropped");
                return Settlement::Done;
            }
        }
        let body = self.body(delivery);
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let client = match &delivery.endpoint {
            Endpoint::Callback { .. } => &self.clients.callbacks,
            _ => &self.clients.configured,
        };
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .header(
                SIGNATURE_HEADER,
                signature_header(&secret, timestamp, &body),
            )
            .header(EVENT_ID_HEADER, delivery.event_id.to_string())
            .header(EVENT_TYPE_HEADER, event)
            .body(body)
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().is_success() => {
                info!(upload = %record.id, event, endpoint = ?delivery.endpoint, attempts = delivery.attempts + 1, "webhook delivered");
                return Settlement::Done;
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) => e.to_string(),
        };
        let config = &self.services.config.webhooks;
        let at = OffsetDateTime::now_utc() + config.backoff(delivery.attempts + 1);
        let give_up_at = record.updated_at + Duration::from_secs(config.max_age_secs);
        if at > give_up_at {
            error!(upload = %record.id, event, endpoint = ?delivery.endpoint, attempts = delivery.attempts + 1, error, "webhook delivery given up");
            return Settlement::Done;
        }
        debug!(upload = %record.id, event, attempts = delivery.attempts + 1, error, "webhook delivery failed; will retry");
        Settlement::Retry { at, error }
    }

    /// The URL and signing secret of the delivery's endpoint, as configured now.
    fn resolve(&self, delivery: &Delivery) -> Option<(String, String)> {
        let config = &self.services.config.webhooks;
        if delivery.endpoint == Endpoint::Global {
            let (url, secret) = config.global()?;
            return Some((url.to_string(), secret.to_string()));
        }
        let webhook = self.services.keys.tenant_webhook(&delivery.record.tenant)?;
        let secret = webhook.secret?;
        match &delivery.endpoint {
            Endpoint::Tenant => Some((webhook.url?, secret)),
            Endpoint::Callback { url } => Some((url.clone(), secret)),
            Endpoint::Global => None,
        }
    }

    /// The JSON body: the event's id, type and time, and the upload as the API shows it.
    fn body(&self, delivery: &Delivery) -> Vec<u8> {
        let services = &self.services;
        let record = &delivery.record;
        let view = UploadView::snapshot(record, services.storage.as_ref(), &services.base_url);
        let created_at = record
            .updated_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let event = json!({
            "id": delivery.event_id,
            "type": event_type(delivery),
            "created_at": created_at,
            "data": view,
        });
        event.to_string().into_bytes()
    }
}
