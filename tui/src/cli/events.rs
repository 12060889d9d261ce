//! The event log: `events`, `events --follow`, filtered by run, kind and
//! actor on the engine's side.

use clap::Args;
use opsdeck_proto::v1::{Event, IdKind, ListEventsRequest};

use super::Ctx;
use super::error::CliError;
use super::output::note;
use super::table::{Cell, StreamTable, Table};
use crate::client::{EventFollower, Followed};
use crate::text::subject;
use crate::text::time::{Clock, TimeStyle, span};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen, across engine restarts (JSON
    /// Lines with --output json)
    #[arg(long, short)]
    pub follow: bool,
    /// Show a range from this sequence number on instead of the newest
    /// events; if retention pruned it, say so and start at the first kept
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Only this run's events (its id, or a unique prefix or suffix of it)
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Only events of this kind: exact (`run.submitted`) or a family (`run`,
    /// `run.` or `run.*` for every run.* kind); repeat for several
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Only events by this actor, as events name it (`alice`, `worker:w1`,
    /// `opsdeckd` for the engine itself)
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// At most this many events: the newest N [default: 50], or with
    /// --from the first N from there [default: 1000]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// How many of the newest events `events` shows, as `tail` does.
const DEFAULT_TAIL: u32 = 50;

/// The engine's default `limit` from a `--from`, asked for explicitly when
/// filtering.
const DEFAULT_LIMIT: u32 = 1000;

/// The columns, the second named for how times are written.
fn columns(ctx: &Ctx) -> [&'static str; 6] {
    let time = match ctx.printer.clock().style {
        TimeStyle::Relative => "AGE",
        TimeStyle::Absolute => "TIME",
    };
    ["SEQ", time, "KIND", "ACTOR", "SUBJECT", "MESSAGE"]
}

/// An RFC 3339 time to the second, in UTC.
const ABSOLUTE_WIDTH: usize = 20;

/// Widths the cells of a followed stream fit in, so that its columns stay
/// put: a seq, an age ("12m30s ago", or a time of 20 characters with
/// --time absolute), kinds up to `worker.recycle_requested` (only
/// `run_name.quarantine_cleared` is longer), actors like `worker:HOST`
/// (cut on a terminal), a run's ULID (26 characters) with a step number.
const STREAM_WIDTHS: [usize; 6] = [6, 10, 24, 14, 30, 0];

/// `events`: like `tail`, the newest events (then, with --follow, new ones
/// as they come); with --from, a range from that seq.
pub async fn run(ctx: &mut Ctx, args: EventsArgs) -> Result<(), CliError> {
    // `--from` names the first event to show; the API takes the one before.
    let after_seq = args.from.map_or(0, |seq| seq.saturating_sub(1));
    // An id nothing matches goes as typed: the events of a run that
    // retention pruned outlive it.
    let run_id = match args.run {
        Some(text) => ctx.resolve(IdKind::Run, &text).await?,
        None => String::new(),
    };
    let actor = args.actor.unwrap_or_default();
    let mut client = ctx.engine().await?.events();
    let mut request = ListEventsRequest {
        after_seq,
        limit: args.limit.unwrap_or(0),
        run_id: run_id.clone(),
        kinds: args.kinds.clone(),
        actor: actor.clone(),
        newest: args.from.is_none(),
    };
    if request.newest && request.limit == 0 {
        request.limit = DEFAULT_TAIL;
    }
    let filtered = !request.kinds.is_empty() || !request.actor.is_empty();
    if filtered && request.limit == 0 {
        request.limit = DEFAULT_LIMIT;
    }
    let limit = request.limit as usize;
    let mut events = Vec::new();
    let mut first = true;
    let (head, more) = loop {
        let answer = ctx.call(client.list_events(request.clone())).await?;
        if std::mem::take(&mut first)
            && args.from.is_some()
            && let Some(words) = pruned(after_seq, answer.first_kept_seq)
        {
            note(&words);
        }
        let head = answer.scanned_seq;
        events.extend(answer.events);
        // A filtered answer from --from may stop short after a bounded
        // scan: go on from where it got to until the limit is met or the
        // log ends.
        if request.newest
            || !filtered
            || events.len() >= limit
            || answer.scanned_seq <= request.after_seq
        {
            break (head, answer.more);
        }
        request.after_seq = answer.scanned_seq;
        request.limit = u32::try_from(limit - events.len()).unwrap_or(u32::MAX);
    };
    if more {
        note(&cut_note(request.newest, &events, limit));
    }
    if args.follow {
        let mut widths = STREAM_WIDTHS;
        if ctx.printer.clock().style == TimeStyle::Absolute {
            widths[1] = ABSOLUTE_WIDTH;
        }
        let columns: Vec<(&str, usize)> = columns(ctx).into_iter().zip(widths).collect();
        // Followed, the ages are mostly "now": the first to go on a
        // narrow terminal, then the actor.
        let (mut table, header) = StreamTable::new(
            &columns,
            &["ACTOR"],
            &[columns[1].0, "ACTOR"],
            ctx.printer.width(),
            ctx.printer.color(),
        );
        if !ctx.printer.json() {
            ctx.printer.text(&header)?;
        }
        for event in &events {
            print_followed(ctx, &mut table, event)?;
        }
        let from = events
            .last()
            .map_or(head.max(after_seq), |e| e.seq.max(head));
        return follow(ctx, table, run_id, args.kinds, actor, from).await;
    }
    ctx.printer.list(&events, "no events", |events| {
        let clock = ctx.printer.clock();
        let columns = columns(ctx);
        let mut table = Table::new(&columns)
            .flexible(&["ACTOR", "MESSAGE"])
            .optional(&["ACTOR", columns[1]]);
        for event in events {
            table.row(event_row(event, clock));
        }
        table
    })
}

/// What to say when a listing was cut at its limit.
fn cut_note(newest: bool, events: &[Event], limit: usize) -> String {
    match (newest, events.first(), events.last()) {
        (true, Some(oldest), _) => format!(
            "showing the newest {limit} events; older ones: --from SEQ (these start at seq {}) or a larger --limit",
            oldest.seq
        ),
        (false, _, Some(last)) => {
            format!("cut at {limit} events; go on with --from {}", last.seq + 1)
        }
        _ => format!("cut at {limit} events"),
    }
}

/// What to say when events from `after_seq + 1` were asked for and
/// retention has pruned some of them: the answer starts later than asked,
/// which must not pass for "nothing happened".
pub fn pruned(after_seq: u64, first_kept_seq: u64) -> Option<String> {
    (first_kept_seq > after_seq.saturating_add(1)).then(|| {
        format!(
            "events before seq {first_kept_seq} were pruned by retention ([retention] in the \
             engine config); showing from {first_kept_seq}"
        )
    })
}

/// One followed event: a JSON line, or a line of the stream's table.
fn print_followed(ctx: &mut Ctx, table: &mut StreamTable, event: &Event) -> Result<(), CliError> {
    if ctx.printer.json() {
        ctx.printer.record(event)?;
    } else {
        ctx.printer
            .text(&table.line(&event_row(event, ctx.printer.clock())))?;
    }
    Ok(())
}

/// Prints events after `after_seq` until interrupted. Only errors that
/// waiting cannot fix end it: a restarting engine is waited for, with a
/// note on stderr.
async fn follow(
    ctx: &mut Ctx,
    mut table: StreamTable,
    run_id: String,
    kinds: Vec<String>,
    actor: String,
    after_seq: u64,
) -> Result<(), CliError> {
    let engine = ctx.engine().await?.clone();
    let mut follower = EventFollower::new(&engine, run_id, after_seq).with_filter(kinds, actor);
    loop {
        match follower.next().await {
            Ok(Followed::Event(event)) => print_followed(ctx, &mut table, &event)?,
            Ok(Followed::Reconnecting { after, why }) => note(&format!(
                "lost the event stream from {} ({why}); following again in {}",
                engine.target().addr,
                span(after)
            )),
            Err(status) => return Err(ctx.refused(status)),
        }
    }
}

fn event_row(event: &Event, clock: Clock) -> Vec<Cell> {
    let mut message = event.message.clone();
    if !event.reason.is_empty() {
        message.push_str(&format!(" (reason: {})", event.reason));
    }
    vec![
        Cell::new(event.seq.to_string()),
        Cell::new(clock.at(event.at_ms)),
        Cell::new(&event.kind),
        Cell::new(&event.actor),
        Cell::new(subject(event)),
        Cell::new(message),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        Event {
            seq: 41,
            at_ms: 1_700_000_000_000 - 12_000,
            kind: kind.into(),
            actor: "ann".into(),
            run_id: "01HRUN".into(),
            step_index: 1,
            worker_id: "w-1".into(),
            message: "step 2 (deploy) failed".into(),
            reason: "flaky".into(),
            ..Event::default()
        }
    }

    #[test]
    fn a_start_before_the_first_kept_event_is_said_to_be_pruned() {
        let words = pruned(9, 120).unwrap();
        assert!(
            words.starts_with("events before seq 120 were pruned by retention"),
            "{words}"
        );
        assert!(words.contains("[retention]"), "{words}");
        assert!(words.ends_with("showing from 120"), "{words}");
        assert_eq!(pruned(119, 120), None, "from 120 is where the log starts");
        assert_eq!(pruned(500, 120), None);
        assert_eq!(pruned(9, 0), None, "an engine that keeps no events");
    }

    #[test]
    fn the_subject_is_what_the_kind_names() {
        assert_eq!(subject(&event("step.failed")), "01HRUN #2");
        assert_eq!(subject(&event("run.submitted")), "01HRUN");
        assert_eq!(subject(&event("worker.drain")), "w-1");
        assert_eq!(subject(&event("lease.expired")), "01HRUN");
        assert_eq!(subject(&Event::default()), "");
    }

    #[test]
    fn an_event_row_has_age_and_reason() {
        let row = event_row(&event("step.failed"), Clock::relative(1_700_000_000_000));
        let texts: Vec<&str> = row.iter().map(Cell::text).collect();
        assert_eq!(
            texts,
            [
                "41",
                "12s ago",
                "step.failed",
                "ann",
                "01HRUN #2",
                "step 2 (deploy) failed (reason: flaky)"
            ]
        );
    }

    #[test]
    fn events_json_lines_have_state_words_and_one_line_per_event() {
        let line = serde_json::to_string(&event("step.failed")).unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["seq"], 41);
        assert_eq!(value["kind"], "step.failed");
    }
}
