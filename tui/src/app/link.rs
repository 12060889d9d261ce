//! The link to the engine: its state as the header shows it, who the
//! console is connected as, and what each word from the connection does
//! to the model.

use opsdeck_proto::v1::WhoamiResponse;

use super::run_view::{merge_timeline, want_output, want_run};
use super::{App, BACKFILL, Cmd, StatusKind};
use crate::conn::Update;

/// The state of the watch connection, as the header shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting {
        attempt: u32,
    },
    /// Connected, reading a snapshot.
    Loading,
    Live,
    /// Broken; the next try is at `retry_at_ms`.
    Retrying {
        retry_at_ms: i64,
        attempt: u32,
        why: String,
    },
}

/// Who and what the console is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The address, as given or found.
    pub engine: String,
    pub link: Link,
    pub identity: String,
    /// The caller's roles, as `Whoami` said them; empty when the engine
    /// does not report roles (then everything is offered).
    pub roles: Vec<String>,
    pub transport: String,
    pub engine_version: String,
    pub engine_id: String,
    /// Since when what is shown may be out of date: the last word heard
    /// before the link broke.
    pub stale_since_ms: Option<i64>,
    /// When the engine last said something: a watch message, or the
    /// answer to connecting. The engine says something at least every
    /// [`QUIET_MS`] on a working link.
    pub heard_at_ms: Option<i64>,
    /// Whether the console has ever connected: until then the header
    /// says "never connected".
    pub connected_once: bool,
    /// Why the last try to connect, or the link, failed.
    pub last_error: Option<String>,
    /// When the engine said it is shutting down (a graceful stop); until
    /// the next connect, failing retries are not news.
    pub shutdown_at_ms: Option<i64>,
    /// The leader's epoch at the last connect (0 from a single engine).
    pub leader_epoch: Option<u64>,
    /// When a reconnect found another leader than before (its epoch
    /// changed). The header says so until the next key press, so that an
    /// operator away from the keyboard still sees it on coming back.
    pub leader_changed_at_ms: Option<i64>,
}

pub(super) fn on_conn(app: &mut App, update: Update) -> Vec<Cmd> {
    let now = app.now_ms;
    if matches!(
        update,
        Update::Connected { .. }
            | Update::Snapshot(_)
            | Update::Event(_)
            | Update::Heartbeat { .. }
            | Update::Resync { .. }
    ) {
        app.conn.heard_at_ms = Some(now);
    }
    match update {
        Update::Connecting { attempt } => {
            if !matches!(app.conn.link, Link::Loading) {
                app.conn.link = Link::Connecting { attempt };
            }
            Vec::new()
        }
        Update::Connected {
            whoami,
            resumed_after,
        } => {
            let was_down = app.conn.stale_since_ms.is_some();
            // Another leader, not merely the same engine restarted (its
            // host:pid changes then too, so engine_id cannot tell).
            let leader_changed = app
                .conn
                .leader_epoch
                .is_some_and(|epoch| epoch != whoami.leader_epoch);
            set_identity(&mut app.conn, whoami);
            app.conn.connected_once = true;
            app.conn.shutdown_at_ms = None;
            if leader_changed {
                app.conn.leader_changed_at_ms = Some(now);
            }
            if resumed_after == 0 {
                app.conn.link = Link::Loading;
            } else {
                app.conn.link = Link::Live;
                app.conn.stale_since_ms = None;
            }
            if leader_changed {
                app.say(
                    StatusKind::Info,
                    format!(
                        "leader changed: engine {} leads now (epoch {}); resumed after seq {resumed_after}",
                        app.conn.engine_id,
                        app.conn.leader_epoch.unwrap_or(0)
                    ),
                );
            } else if was_down && resumed_after > 0 {
                app.say(
                    StatusKind::Info,
                    format!("reconnected; resumed after seq {resumed_after}"),
                );
            }
            Vec::new()
        }
        Update::Disconnected {
            retry_in,
            attempt,
            why,
            shutting_down,
        } => {
            // What is shown was last confirmed by the last word heard, not
            // when the break was noticed (seconds later, for a silent one).
            if app.conn.stale_since_ms.is_none() && app.data.loaded {
                app.conn.stale_since_ms = Some(app.conn.heard_at_ms.unwrap_or(now).min(now));
            }
            if shutting_down && app.conn.shutdown_at_ms.is_none() {
                app.conn.shutdown_at_ms = Some(now);
            }
            let retry_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX);
            let text = if app.conn.shutdown_at_ms.is_some() {
                // The retries fail until it is back, each with a socket
                // error that says nothing new.
                format!(
                    "the engine is shutting down (a graceful stop); retrying (attempt {})",
                    attempt + 1
                )
            } else {
                format!(
                    "no connection to the engine: {why}; retrying (attempt {})",
                    attempt + 1
                )
            };
            app.say(StatusKind::Refused, text);
            app.conn.last_error = Some(why.clone());
            app.conn.link = Link::Retrying {
                retry_at_ms: now.saturating_add(retry_ms),
                attempt,
                why,
            };
            app.refreshing = false;
            Vec::new()
        }
        Update::Snapshot(snapshot) => {
            let seq = snapshot.seq;
            app.data.apply_snapshot(*snapshot, now);
            app.conn.link = Link::Live;
            app.conn.stale_since_ms = None;
            let newest = app.data.events.back().map_or(0, |e| e.seq);
            let mut cmds = vec![Cmd::FetchEvents {
                after_seq: newest.max(seq.saturating_sub(BACKFILL)),
            }];
            if !app.run.run_id.is_empty() {
                cmds.push(Cmd::FetchTimeline {
                    run_id: app.run.run_id.clone(),
                });
                cmds.extend(want_output(app));
                cmds.extend(want_run(app));
            }
            cmds
        }
        Update::Event(event) => {
            let ours = !app.run.run_id.is_empty() && event.run_id == app.run.run_id;
            let applied = app.data.apply_event(*event, now).clone();
            if ours {
                let before = app.run.timeline.len();
                merge_timeline(&mut app.run.timeline, vec![applied]);
                // A timeline scrolled back stays on what is being read.
                if app.run.timeline_back > 0 {
                    app.run.timeline_back += app.run.timeline.len() - before;
                }
                let mut cmds = want_output(app);
                // A change to a run we do not hold was not applied: read
                // it whole instead.
                cmds.extend(want_run(app));
                return cmds;
            }
            Vec::new()
        }
        Update::Resync { reason } => {
            app.conn.link = Link::Loading;
            app.say(
                StatusKind::Info,
                format!("reading everything again: {reason}"),
            );
            Vec::new()
        }
        Update::Heartbeat { .. } => Vec::new(),
    }
}

fn set_identity(conn: &mut Connection, whoami: WhoamiResponse) {
    conn.identity = whoami.identity;
    conn.roles = whoami.roles;
    conn.leader_epoch = Some(whoami.leader_epoch);
    conn.transport = whoami.transport;
    conn.engine_version = whoami.engine_version;
    conn.engine_id = whoami.engine_id;
}

/// The connection state in words: "live", "reconnecting in 3s", "never
/// connected, retry in 3s", "engine shutting down", "no word for 20s", ….
pub fn link_words(app: &App) -> String {
    let conn = &app.conn;
    let shut_down = conn.shutdown_at_ms.is_some();
    let never = !conn.connected_once;
    match &conn.link {
        Link::Live => match app.quiet_since() {
            Some(heard) => format!("no word for {}s", (app.now_ms - heard) / 1000),
            None => "live".to_owned(),
        },
        Link::Loading => "loading".to_owned(),
        Link::Connecting { .. } if shut_down => "engine shut down, connecting".to_owned(),
        Link::Connecting { attempt } if never && *attempt > 0 => {
            "never connected, connecting".to_owned()
        }
        Link::Connecting { .. } => "connecting".to_owned(),
        Link::Retrying {
            retry_at_ms,
            attempt,
            ..
        } => {
            let secs = ((retry_at_ms - app.now_ms).max(0) + 999) / 1000;
            if shut_down && *attempt == 0 {
                // The word itself, until the first try to come back.
                "engine shutting down".to_owned()
            } else if shut_down {
                format!("engine shut down, retry in {secs}s")
            } else if never {
                format!("never connected, retry in {secs}s")
            } else {
                format!("reconnecting in {secs}s")
            }
        }
    }
}
