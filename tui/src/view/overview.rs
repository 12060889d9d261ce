//! Overview: queue depth over the last minutes, workers by state, pending
//! approvals, live and stuck leases, throughput and failure rate,
//! quarantined run names, the latest failed runs (which, when, the step
//! that failed), and the latest events — what an on-call engineer glances
//! at.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

use super::Ctx;
use super::events::{kind_style, message};
use crate::app::{Kind, age};
use crate::keys::Action;
use crate::model::{Figures, RATE_WINDOW_MS, figures, overdue};
use crate::roles;
use crate::text::step_number;
use crate::widgets::sparkline::{spark, top};
use crate::widgets::{Rows, fit, short_id};

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let f = figures(ctx.data, ctx.now);
    let queues = ctx.data.queues.len();
    let mut rows = Rows::new(area);
    // The Now box grows by its quarantine line when there is one.
    let now_lines = 8 + usize::from(f.quarantines > 0);
    let top_height = u16::try_from(queues.max(now_lines) + 2)
        .unwrap_or(u16::MAX)
        .min(area.height / 2 + 1);
    let top = rows.take(top_height);
    if area.width >= 70 {
        let right_width = (area.width * 3 / 5).min(64);
        let [left, right] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_width)]).areas(top);
        depth(ctx, left, buf);
        now(ctx, &f, right, buf);
    } else {
        now(ctx, &f, top, buf);
    }
    let pending = u16::try_from(f.pending_approvals.min(4)).unwrap_or(4);
    let approvals_height = if pending == 0 { 0 } else { pending + 2 };
    approvals(ctx, rows.take(approvals_height.min(rows.left() / 2)), buf);
    let failed = failed_runs(ctx);
    if !failed.is_empty() && ctx.unknown.is_none() {
        let shown = u16::try_from(failed.len().min(FAILED_SHOWN)).unwrap_or(1);
        let mut height = (shown + 2).min(rows.left());
        // Rather than a box too small to show an event, the failures
        // take the rest.
        if rows.left() - height < 3 {
            height = rows.left();
        }
        failures(ctx, &failed, rows.take(height), buf);
    }
    match &ctx.unknown {
        Some(why) => unknown(ctx, why, rows.rest(), buf),
        None => latest(ctx, rows.rest(), buf),
    }
}

/// In place of the latest events until something is known: why not.
fn unknown(ctx: &Ctx, why: &str, area: Rect, buf: &mut Buffer) {
    if area.height == 0 {
        return;
    }
    let block = block(ctx, "Connection");
    Paragraph::new(why)
        .style(ctx.theme.warn())
        .wrap(Wrap { trim: false })
        .block(block)
        .render(area, buf);
}

fn block<'a>(ctx: &Ctx, title: &'a str) -> Block<'a> {
    let mut block =
        Block::bordered().title(Span::styled(format!(" {title} "), ctx.theme.heading()));
    if ctx.stale().is_some() {
        block = block.border_style(ctx.theme.dim());
    }
    block
}

fn depth(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let name_width = ctx
        .data
        .queues
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .min(16);
    // name, sparkline, figure
    // Room for the name, the figure and "paused".
    let spark_width = usize::from(area.width.saturating_sub(2))
        .saturating_sub(name_width + 13)
        .max(1);
    // One scale for every queue, named in the title.
    let max = top(ctx.data.depth.values(), spark_width);
    let title = if max == 0 {
        "Queue depth (ready)".to_owned()
    } else {
        format!("Queue depth (ready, max {max})")
    };
    let block = block(ctx, &title);
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines = Vec::new();
    for (name, seen) in &ctx.data.queues {
        let q = &seen.queue;
        let samples = ctx.data.depth.get(name);
        let line = samples.map_or_else(
            || " ".repeat(spark_width),
            |s| spark(s.iter(), spark_width, max),
        );
        let mut spans = vec![
            Span::raw(format!("{:<name_width$} ", fit(name, name_width))),
            Span::styled(line, ctx.theme.tone(crate::cli::table::Tone::Busy)),
            Span::raw(format!(" {:>4}", q.ready)),
        ];
        if q.paused {
            spans.push(Span::styled(" paused", ctx.theme.warn()));
        }
        lines.push(Line::from(spans));
    }
    if ctx.unknown.is_some() {
        lines = vec![Line::styled("not known yet", ctx.theme.dim())];
    } else if lines.is_empty() {
        lines.push(Line::styled("no queues yet", ctx.theme.dim()));
    }
    Paragraph::new(lines).render(inner, buf);
}

fn figure<'a>(ctx: &Ctx, label: &'a str, parts: Vec<Span<'a>>) -> Line<'a> {
    let mut spans = vec![Span::styled(format!("{label:<11}"), ctx.theme.dim())];
    spans.extend(parts);
    Line::from(spans)
}

fn now(ctx: &Ctx, f: &Figures, area: Rect, buf: &mut Buffer) {
    let t = &ctx.theme;
    let block = block(ctx, "Now");
    let inner = block.inner(area);
    block.render(area, buf);
    if ctx.unknown.is_some() {
        // Not zeros: nothing has been heard, so nothing is known.
        let lines: Vec<Line> = [
            "workers",
            "approvals",
            "leases",
            "steps",
            "per min",
            "runs",
            "failed",
        ]
        .into_iter()
        .map(|label| figure(ctx, label, vec![Span::styled("?", t.warn())]))
        .collect();
        Paragraph::new(lines).render(inner, buf);
        return;
    }
    let warn_if = |n: usize, style: Style| if n > 0 { style } else { t.dim() };
    let mut workers = vec![Span::raw(format!(
        "{} idle, {} busy",
        f.online_idle, f.online_busy
    ))];
    if f.stuck > 0 {
        workers.push(Span::raw(", "));
        workers.push(Span::styled(format!("{} STUCK", f.stuck), t.alert()));
    }
    let mut unwell = Vec::new();
    for (n, word) in [
        (f.draining, "draining"),
        (f.recycling, "recycling"),
        (f.offline, "offline"),
        (f.stopped, "stopped"),
    ] {
        if n > 0 {
            if !unwell.is_empty() {
                unwell.push(Span::raw(", "));
            }
            unwell.push(Span::styled(format!("{n} {word}"), t.state(word)));
        }
    }
    let mut approvals = vec![Span::styled(
        format!("{} pending", f.pending_approvals),
        warn_if(f.pending_approvals, t.warn()),
    )];
    if f.pending_approvals > 0 {
        approvals.push(Span::raw(format!(
            ", oldest {}",
            crate::text::time::duration(f.oldest_pending_ms)
        )));
    }
    if f.overdue_approvals > 0 {
        approvals.push(Span::raw(", "));
        approvals.push(Span::styled(
            format!("{} OVERDUE", f.overdue_approvals),
            t.alert(),
        ));
    }
    let mut leases = vec![Span::raw(format!("{} live", f.live_leases))];
    if f.stale_leases > 0 {
        leases.push(Span::raw(", "));
        leases.push(Span::styled(format!("{} stale", f.stale_leases), t.alert()));
    }
    if f.stuck_leases > 0 {
        leases.push(Span::raw(", "));
        leases.push(Span::styled(format!("{} STUCK", f.stuck_leases), t.alert()));
    }
    let failure = match f.failure_rate() {
        Some(rate) => Span::styled(
            format!("{} of {} ({rate}%)", f.failed_recently, f.finished_recently),
            warn_if(f.failed_recently, t.bad()),
        ),
        None => Span::styled("none ended", t.dim()),
    };
    let mut lines = vec![figure(ctx, "workers", workers)];
    if !unwell.is_empty() {
        lines.push(figure(ctx, "", unwell));
    }
    lines.extend([
        figure(ctx, "approvals", approvals),
        figure(ctx, "leases", leases),
    ]);
    // Next to the stuck leases that caused it.
    lines.extend(quarantined(ctx));
    lines.extend([
        figure(
            ctx,
            "steps",
            vec![Span::raw(format!(
                "{} ready, {} delayed, {} running",
                f.ready, f.delayed, f.running
            ))],
        ),
        figure(
            ctx,
            "per min",
            vec![Span::raw(format!(
                "{} queued, {} done",
                f.enqueued_per_min, f.completed_per_min
            ))],
        ),
        figure(
            ctx,
            "runs",
            vec![Span::raw(format!(
                "{} active, {} ended in {}m",
                f.active_runs,
                f.finished_recently,
                RATE_WINDOW_MS / 60_000
            ))],
        ),
        figure(ctx, "failed", vec![failure]),
    ]);
    Paragraph::new(lines).render(inner, buf);
}

/// "quarantine  nightly-report (3 stuck, 4m ago) +1 more", the latest
/// first; `None` when no run name is quarantined.
fn quarantined<'a>(ctx: &Ctx) -> Option<Line<'a>> {
    let t = &ctx.theme;
    let mut list: Vec<_> = ctx.data.quarantines.values().collect();
    list.sort_by_key(|q| (std::cmp::Reverse(q.since_ms), q.name.clone()));
    let latest = list.first()?;
    let mut parts = vec![
        Span::styled(latest.name.clone(), t.alert()),
        Span::raw(format!(
            " ({} stuck, {} ago)",
            latest.stuck_count,
            age(latest.since_ms, ctx.now)
        )),
    ];
    if list.len() > 1 {
        parts.push(Span::raw(format!(" +{} more", list.len() - 1)));
    }
    Some(figure(ctx, "quarantine", parts))
}

fn approvals(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    if area.height == 0 {
        return;
    }
    let t = &ctx.theme;
    let title = if roles::allows(&ctx.app.conn.roles, Action::Change(Kind::Approve)) {
        "Pending approvals (6 lists them, a approves there)"
    } else {
        "Pending approvals (6 lists them)"
    };
    let block = block(ctx, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let mut pending: Vec<_> = ctx
        .data
        .approvals
        .values()
        .filter(|a| a.state() == opsdeck_proto::v1::ApprovalState::Pending)
        .collect();
    pending.sort_by_key(|a| a.requested_at_ms);
    let lines: Vec<Line> = pending
        .iter()
        .take(usize::from(inner.height))
        .map(|a| {
            let mut spans = vec![
                Span::raw(format!("{} ", a.run_name)),
                Span::styled(
                    format!("step {} {} ", step_number(a.step_index), a.step_name),
                    t.dim(),
                ),
                Span::raw(format!(
                    "asked by {} {} ago",
                    a.submitted_by,
                    age(a.requested_at_ms, ctx.now)
                )),
            ];
            if overdue(a, ctx.now) {
                spans.push(Span::raw(" "));
                spans.push(Span::styled("OVERDUE", t.alert()));
            }
            Line::from(spans)
        })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}

/// Failed runs the Overview lists at most.
const FAILED_SHOWN: usize = 3;

/// The failed runs the console holds, the latest to end first.
fn failed_runs<'a>(ctx: &Ctx<'a>) -> Vec<&'a opsdeck_proto::v1::Run> {
    let mut failed: Vec<_> = ctx
        .data
        .runs
        .values()
        .filter(|r| r.state() == opsdeck_proto::v1::RunState::Failed)
        .collect();
    failed.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.finished_at_ms.max(r.updated_at_ms)),
            r.id.clone(),
        )
    });
    failed
}

/// "backup-logs …00BACKUP 2m ago  step 1 backup: exit 28", one a line.
fn failures(ctx: &Ctx, failed: &[&opsdeck_proto::v1::Run], area: Rect, buf: &mut Buffer) {
    if area.height < 3 {
        return;
    }
    let t = &ctx.theme;
    let title = if failed.len() > FAILED_SHOWN {
        format!(
            "Failed runs, latest first ({} held; 2 lists them)",
            failed.len()
        )
    } else {
        "Failed runs, latest first (2 lists them)".to_owned()
    };
    let block = block(ctx, &title);
    let inner = block.inner(area);
    block.render(area, buf);
    let lines: Vec<Line> = failed
        .iter()
        .take(usize::from(inner.height))
        .map(|r| {
            let ended = if r.finished_at_ms > 0 {
                r.finished_at_ms
            } else {
                r.updated_at_ms
            };
            let step = r.steps.get(r.current_step as usize);
            let mut why = step.map_or(String::new(), |s| {
                format!("step {} {}", step_number(s.index), s.name)
            });
            if let Some(message) = step.map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
                why.push_str(&format!(": {message}"));
            }
            Line::from(vec![
                Span::styled(format!("{} ", r.name), t.bad()),
                Span::styled(format!("{} ", short_id(&r.id, 9)), t.dim()),
                Span::raw(format!("{:>4} ago  ", age(ended, ctx.now))),
                Span::raw(why),
            ])
        })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}

fn latest(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    if area.height < 3 {
        return;
    }
    let t = &ctx.theme;
    let block = block(ctx, "Latest events (8 for all)");
    let inner = block.inner(area);
    block.render(area, buf);
    let lines: Vec<Line> = ctx
        .data
        .events
        .iter()
        .rev()
        .take(usize::from(inner.height))
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{:>5} ", age(e.at_ms, ctx.now)), t.dim()),
                Span::styled(format!("{:<20} ", e.kind), kind_style(ctx, &e.kind)),
                Span::raw(message(e)),
            ])
        })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}
