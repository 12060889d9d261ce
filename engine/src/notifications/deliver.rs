//! The leader's delivery task: takes due notifications from the outbox,
//! delivers each (a webhook POST or a command's stdin), and records the
//! attempt. A failed attempt is tried again after a backoff that doubles
//! with jitter; one still undelivered `give_up_after` after its event is
//! given up on, in the commit of a `notification.failed` event. It never
//! runs inside the core or a commit, so a slow receiver holds up nothing
//! but its own deliveries.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use super::{NotificationsSection, NotifierEntry};
use crate::core::CoreHandle;
use crate::domain::{Millis, now_ms};
use crate::secrets::{SECRET_VAR_PREFIX, Secrets};
use crate::store::{Attempt, Notification, Store};

/// Due notifications taken from the outbox at a time.
const BATCH: u32 = 64;

/// Header carrying the idempotency id: the same for every attempt.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`, when the
/// notifier has a secret.
pub const SIGNATURE_HEADER: &str = "X-Opsdeck-Signature";

enum Target {
    Webhook(reqwest::Url),
    Exec(Vec<String>),
}

struct Notifier {
    target: Target,
    /// The HMAC key, from `[secrets]`.
    key: Option<String>,
    timeout: Duration,
}

/// What delivers: the notifiers by name, the retry settings, one HTTP
/// client for all.
pub struct Delivery {
    notifiers: HashMap<String, Notifier>,
    settings: NotificationsSection,
    client: reqwest::Client,
}

impl std::fmt::Debug for Delivery {
    /// The notifiers' names only: never a signing key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.notifiers.keys()).finish()
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|e| format!("the signing secret cannot be an HMAC key: {e}"))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

impl Delivery {
    /// From the checked config; a secret that did not load is named.
    pub fn new(
        entries: &[NotifierEntry],
        settings: NotificationsSection,
        secrets: &Secrets,
    ) -> Result<Self, String> {
        let mut notifiers = HashMap::new();
        for e in entries {
            let target = match (&e.url, &e.exec) {
                (Some(url), None) => Target::Webhook(
                    reqwest::Url::parse(url)
                        .map_err(|err| format!("[[notify]] {:?}: url: {err}", e.name))?,
                ),
                (None, Some(cmd)) if !cmd.is_empty() => Target::Exec(cmd.clone()),
                _ => {
                    return Err(format!(
                        "[[notify]] {:?}: give exactly one of url or exec",
                        e.name
                    ));
                }
            };
            let key = match &e.secret {
                Some(name) => Some(secrets.get(name).map(str::to_owned).ok_or_else(|| {
                    format!(
                        "[[notify]] {:?}: secret {name:?} is not in [secrets]",
                        e.name
                    )
                })?),
                None => None,
            };
            notifiers.insert(
                e.name.clone(),
                Notifier {
                    target,
                    key,
                    timeout: e.timeout,
                },
            );
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("opsdeckd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client for notifications: {e}"))?;
        Ok(Self {
            notifiers,
            settings,
            client,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    /// The wait before the attempt after `attempts` failed ones.
    fn backoff(&self, attempts: u32) -> Duration {
        let ceiling = self
            .settings
            .retry_min
            .saturating_mul(1 << attempts.saturating_sub(1).min(20))
            .min(self.settings.retry_max);
        crate::agent::backoff::jittered(ceiling, rand::random::<f64>())
    }

    /// One attempt; the error says what went wrong, for the operator.
    async fn attempt(&self, n: &Notification) -> Result<(), String> {
        let Some(notifier) = self.notifiers.get(&n.notifier) else {
            return Err(format!(
                "no [[notify]] is named {:?} any more; it cannot be delivered",
                n.notifier
            ));
        };
        match &notifier.target {
            Target::Webhook(url) => self.post(notifier, url, n).await,
            Target::Exec(cmd) => exec(cmd, notifier.timeout, n).await,
        }
    }

    async fn post(
        &self,
        notifier: &Notifier,
        url: &reqwest::Url,
        n: &Notification,
    ) -> Result<(), String> {
        let mut req = self
            .client
            .post(url.clone())
            .timeout(notifier.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, &n.id)
            .header("X-Opsdeck-Event", &n.event_kind);
        if let Some(key) = &notifier.key {
            req = req.header(
                SIGNATURE_HEADER,
                signature(key.as_bytes(), n.payload.as_bytes())?,
            );
        }
        let answer = req
            .body(n.payload.clone())
            .send()
            .await
            // The URL may carry a token: it stays out of the error.
            .map_err(|e| e.without_url().to_string())?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered HTTP {status}"))
        }
    }

    /// Delivers what is due once; returns how many were tried.
    pub async fn pass(
        &self,
        store: &dyn Store,
        core: &CoreHandle,
    ) -> Result<usize, crate::store::StoreError> {
        let now = now_ms();
        let due = store.due_notifications(now, BATCH).await?;
        let tries = due
            .iter()
            .map(|n| async move { (n, self.attempt(n).await) });
        let results = futures::future::join_all(tries).await;
        for (n, result) in &results {
            let at = now_ms();
            match result {
                Ok(()) => {
                    store
                        .notification_attempted(&n.id, &Attempt { at, retry: None })
                        .await?;
                    crate::metrics::observe_notification(&n.notifier, "delivered");
                    tracing::info!(id = %n.id, kind = %n.event_kind, "notification delivered");
                }
                Err(error) => {
                    let attempts = n.attempts.saturating_add(1);
                    let next_at = at + ms(self.backoff(attempts));
                    store
                        .notification_attempted(
                            &n.id,
                            &Attempt {
                                at,
                                retry: Some((error.clone(), next_at)),
                            },
                        )
                        .await?;
                    let unknown = !self.notifiers.contains_key(&n.notifier);
                    if unknown || at - n.created_at >= ms(self.settings.give_up_after) {
                        crate::metrics::observe_notification(&n.notifier, "failed");
                        give_up(core, n, attempts, error.clone()).await;
                    } else {
                        crate::metrics::observe_notification(&n.notifier, "retry");
                        tracing::warn!(id = %n.id, attempts, %error, "notification not delivered; trying again later");
                    }
                }
            }
        }
        Ok(results.len())
    }
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Marks `n` failed in the commit of the event that says so.
async fn give_up(core: &CoreHandle, n: &Notification, attempts: u32, error: String) {
    let (id, notifier, kind, seq) = (
        n.id.clone(),
        n.notifier.clone(),
        n.event_kind.clone(),
        n.event_seq,
    );
    let result = core
        .call(move |state, tx| {
            state.notification_given_up(tx, &id, &notifier, &kind, seq, attempts, &error);
            Ok(())
        })
        .await;
    match result {
        Ok(()) => tracing::error!(id = %n.id, attempts, "notification given up on"),
        Err(e) => {
            tracing::warn!(id = %n.id, error = %e, "could not record giving up on a notification; trying again")
        }
    }
}

/// Runs `cmd` with the payload on its stdin; exit 0 within `timeout` is
/// delivered. The engine's `OPSDECK_SECRET_*` variables are not passed on.
async fn exec(cmd: &[String], timeout: Duration, n: &Notification) -> Result<(), String> {
    let Some((program, args)) = cmd.split_first() else {
        return Err("exec is empty".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("OPSDECK_NOTIFICATION_ID", &n.id)
        .env("OPSDECK_EVENT_KIND", &n.event_kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with(SECRET_VAR_PREFIX) {
            command.env_remove(var);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin may still succeed.
            let _ = stdin.write_all(n.payload.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| {
            format!(
                "{program:?} did not finish within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{program:?} failed: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(200)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(match out.status.code() {
        Some(code) => format!("{program:?} exited {code}: {tail}"),
        None => format!("{program:?} was killed by a signal: {tail}"),
    })
}

/// Delivers due notifications every `poll_interval` until `stop`.
pub fn spawn(
    delivery: Arc<Delivery>,
    store: Arc<dyn Store>,
    core: CoreHandle,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(delivery.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let passed = tokio::select! {
                _ = stop.cancelled() => break,
                p = delivery.pass(store.as_ref(), &core) => p,
            };
            if let Err(e) = passed {
                tracing::warn!(error = %e, "delivering notifications failed; trying again");
            }
            match store.pending_notifications().await {
                Ok(n) => crate::metrics::observe_notifications_pending(n),
                Err(e) => tracing::debug!(error = %e, "could not count pending notifications"),
            }
        }
    })
}
