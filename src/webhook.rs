//! Signed webhooks: who hears about an upload's status changes, what they
//! receive and how it is signed.
//!
//! Every status transition writes one outbox row per endpoint in the same
//! redb transaction as the transition ([`crate::store::outbox`]), so an event
//! is never lost or invented; the delivery actor
//! ([`crate::actors::webhooks`]) posts them at least once, in order per
//! upload and endpoint, retrying with exponential backoff.
//!
//! Endpoints: the global one (`[webhooks] url`), the tenant's (stored with its
//! API key) and the upload's own `callback_url`, which is signed with the
//! tenant's secret. Each request carries
//! `vidpipe-signature: t={unix seconds},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`
//! and `vidpipe-event-id`, the same for every attempt and endpoint of one event.

pub mod guard;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::backoff::Backoff;
use crate::store::keys::KeyCache;
use crate::store::outbox::{Delivery, Endpoint, EndpointRouter};
use crate::store::record::{Status, UploadRecord};

/// Header with the timestamp and signature of a delivery.
pub const SIGNATURE_HEADER: &str = "vidpipe-signature";
/// Header with the event id, for de-duplication by the receiver.
pub const EVENT_ID_HEADER: &str = "vidpipe-event-id";
/// Header with the event type, e.g. `upload.completed`.
pub const EVENT_TYPE_HEADER: &str = "vidpipe-event-type";

/// The `[webhooks]` table of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoint that receives the events of every upload. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Signing secret of `url`. Default: the environment variable
    /// `VIDPIPE_WEBHOOK_SECRET`; required when `url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Time one delivery request may take, in seconds. Default 10.
    pub timeout_secs: u64,
    /// Wait before the first retry of a failed delivery, in milliseconds; it
    /// doubles with each retry. Default 1000.
    pub initial_backoff_ms: u64,
    /// Longest wait between two tries, in seconds. Default 3600.
    pub max_backoff_secs: u64,
    /// Time after the event at which a delivery that still fails is given up, in seconds. Default 86400 (24 h).
    pub max_age_secs: u64,
    /// Deliveries in flight at once (to all endpoints together). Default 8.
    pub concurrency: usize,
    /// How often the outbox is checked for retries that are due, in milliseconds. Default 1000.
    pub poll_interval_ms: u64,
    /// Longest `callback_url` accepted on an upload, in bytes. Default 2048.
    pub max_callback_url_bytes: usize,
    /// Lets `callback_url` point to loopback, private and link-local
    /// addresses (for a receiver on the same host or network). Default false:
    /// such URLs are refused at upload and such addresses never dialled.
    pub allow_private_callback_urls: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: None,
            timeout_secs: 10,
            initial_backoff_ms: 1000,
            max_backoff_secs: 3600,
            max_age_secs: 24 * 3600,
            concurrency: 8,
            poll_interval_ms: 1000,
            max_callback_url_bytes: 2048,
            allow_private_callback_urls: false,
        }
    }
}

impl WebhookConfig {
    /// Fills a missing secret from `VIDPIPE_WEBHOOK_SECRET`.
    pub fn with_env_secret(mut self) -> WebhookConfig {
        if self.secret.is_none() {
            self.secret = std::env::var("VIDPIPE_WEBHOOK_SECRET")
                .ok()
                .filter(|s| !s.is_empty());
        }
        self
    }

    /// The same settings with the secret hidden, for `config show`.
    pub fn redacted(&self) -> WebhookConfig {
        WebhookConfig {
            secret: self.secret.as_ref().map(|_| "<redacted>".to_string()),
            ..self.clone()
        }
    }

    /// The global endpoint and its secret, when configured.
    pub fn global(&self) -> Option<(&str, &str)> {
        Some((self.url.as_deref()?, self.secret.as_deref()?))
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn backoff(&self, retry: u32) -> Duration {
        Backoff {
            first: Duration::from_millis(self.initial_backoff_ms),
            max: Duration::from_secs(self.max_backoff_secs),
        }
        .before_retry(retry)
    }

    /// Checks the values types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            check_endpoint_url(url, usize::MAX).map_err(|e| format!("webhooks.url: {e}"))?;
            if self.secret.as_deref().is_none_or(str::is_empty) {
                return Err(
                    "webhooks.secret (or VIDPIPE_WEBHOOK_SECRET) is required with webhooks.url"
                        .into(),
                );
            }
        }
        let at_least_one = [
            ("webhooks.timeout_secs", self.timeout_secs),
            ("webhooks.initial_backoff_ms", self.initial_backoff_ms),
            ("webhooks.max_backoff_secs", self.max_backoff_secs),
            ("webhooks.max_age_secs", self.max_age_secs),
            ("webhooks.concurrency", self.concurrency as u64),
            ("webhooks.poll_interval_ms", self.poll_interval_ms),
            (
                "webhooks.max_callback_url_bytes",
                self.max_callback_url_bytes as u64,
            ),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        Ok(())
    }
}

/// The event type of an upload's deletion.
pub const DELETED_EVENT: &str = "upload.deleted";

/// The event type of an upload that can be played while it is processed.
pub const PREVIEWABLE_EVENT: &str = "upload.previewable";

/// The event type of a delivery: `upload.deleted`, `upload.previewable`, or
/// that of the transition its record shows.
pub fn event_type(delivery: &Delivery) -> &'static str {
    if delivery.deleted {
        DELETED_EVENT
    } else if delivery.previewable {
        PREVIEWABLE_EVENT
    } else {
        transition_event(delivery.record.status)
    }
}

/// The event type of a transition to `status`.
fn transition_event(status: Status) -> &'static str {
    match status {
        Status::Pending => "upload.pending",
        Status::Processing => "upload.processing",
        Status::Uploading => "upload.uploading",
        Status::Completed => "upload.completed",
        Status::Failed => "upload.failed",
    }
}

/// Hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The value of the `vidpipe-signature` header.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, body))
}

/// An endpoint URL: absolute `http` or `https` with a host and a port other
/// than 0, no credentials, at most `max_bytes`.
pub fn check_endpoint_url(url: &str, max_bytes: usize) -> Result<(), String> {
    if url.len() > max_bytes {
        return Err(format!("must be at most {max_bytes} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    // Nothing can listen on port 0: an endpoint there could never be reached.
    if parsed.port() == Some(0) {
        return Err("must not use port 0".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(())
}

/// Decides, inside the transition's write transaction, which endpoints get its event.
pub struct Routing {
    /// Whether a global endpoint is configured.
    global: bool,
    /// The tenants' endpoints, kept with their keys.
    keys: Arc<KeyCache>,
}

impl Routing {
    /// Routing by the configuration and the key file.
    pub fn new(config: &WebhookConfig, keys: Arc<KeyCache>) -> Routing {
        Routing {
            global: config.global().is_some(),
            keys,
        }
    }
}

impl EndpointRouter for Routing {
    fn endpoints(&self, record: &UploadRecord) -> Vec<Endpoint> {
        let mut endpoints = Vec::new();
        if self.global {
            endpoints.push(Endpoint::Global);
        }
        let tenant = self.keys.tenant_webhook(&record.tenant);
        if tenant.as_ref().is_some_and(|t| t.url.is_some()) {
            endpoints.push(Endpoint::Tenant);
        }
        if let Some(url) = &record.callback_url {
            endpoints.push(Endpoint::Callback { url: url.clone() });
        }
        endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the README, checked with `openssl dgst -sha256 -hmac`.
    #[test]
    fn signature_matches_the_documented_example() {
        let body = br#"{"id":"2f1c0a52-8e8e-4f7c-9f5e-1d6f1b2b3c4d","type":"upload.completed"}"#;
        assert_eq!(
            signature_header("whsec_example", 1767225600, body),
            "t=1767225600,v1=48b7db3afe7d7b8a2bf6022e4568d5e1b60ad8ffa532bb2926363143fa870e4c"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = WebhookConfig {
            initial_backoff_ms: 1000,
            max_backoff_secs: 5,
            ..WebhookConfig::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| config.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn endpoint_urls_are_checked() {
        check_endpoint_url("https://hooks.example.com/vidpipe?x=1", 2048).unwrap();
        check_endpoint_url("http://127.0.0.1:9000/h", 2048).unwrap();
        for bad in [
            "ftp://x/y",
            "not a url",
            "https://user:pw@x.test/",
            "/relative",
            "http://93.184.216.34:0/h",
            "https://hooks.example.com:000/",
        ] {
            assert!(check_endpoint_url(bad, 2048).is_err(), "{bad}");
        }
        assert_eq!(
            check_endpoint_url("http://x.test:0/", 2048),
            Err("must not use port 0".into())
        );
        check_endpoint_url("http://x.test:1/", 2048).unwrap();
        assert!(check_endpoint_url("https://x.test/aaaa", 10).is_err());
    }

    #[test]
    fn a_url_without_a_secret_is_refused() {
        let config = WebhookConfig {
            url: Some("https://hooks.example.com/x".into()),
            ..WebhookConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("secret"));
        let config = WebhookConfig {
            secret: Some("s".into()),
            ..config
        };
        config.validate().unwrap();
    }
}
