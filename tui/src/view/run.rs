//! One run: its fields, its steps with their attempts, the live timeline
//! of its events, and the tail of its output (F follows the newest line).
//! Tab moves the focus between the timeline and the output; the pane in
//! focus has a bright border and, on a narrow terminal, the larger share
//! of the rows. `/` searches the output, `w` wraps its long lines.

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{Run, RunState, StepKind, StepState};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Widget, Wrap};

use super::Ctx;
use super::events::{kind_style, message};
use crate::app::panes::line_matches;
use crate::app::{Kind, Pane, age};
use crate::keys::Action;
use crate::text::step_number;
use crate::text::time::relative;
use crate::widgets::Rows;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let t = &ctx.theme;
    let id = &ctx.run.run_id;
    let Some(run) = ctx.data.runs.get(id) else {
        let text = if id.is_empty() {
            "no run is open: pick one on the Runs screen (2) and press enter".to_owned()
        } else if let Some(why) = &ctx.run.run_error {
            format!("run {id} cannot be read: {why}")
        } else if ctx.run.run_fetching {
            format!("reading run {id} from the engine...")
        } else {
            format!("run {id} is not known here (yet)")
        };
        Paragraph::new(Span::styled(text, t.dim())).render(area, buf);
        return;
    };
    let mut rows = Rows::new(area);
    let head = head_lines(ctx, run);
    let head_height = u16::try_from(head.len()).unwrap_or(u16::MAX);
    Paragraph::new(head).render(rows.take(head_height), buf);
    let steps_height = u16::try_from(run.steps.len() + 3)
        .unwrap_or(u16::MAX)
        .min(rows.left() / 2);
    steps(ctx, run, rows.take(steps_height), buf);
    let rest = rows.rest();
    if rest.height == 0 {
        return;
    }
    if rest.width >= 110 {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(45), Constraint::Fill(1)]).areas(rest);
        timeline(ctx, left, buf);
        log(ctx, right, buf);
    } else {
        let small = (rest.height * 2 / 5).clamp(3.min(rest.height), 12);
        // The pane in focus gets the larger share.
        let timeline_height = match ctx.run.pane {
            Pane::Output => small,
            Pane::Timeline => rest.height.saturating_sub(small.min(rest.height / 2)),
        };
        let mut rows = Rows::new(rest);
        timeline(ctx, rows.take(timeline_height), buf);
        log(ctx, rows.rest(), buf);
    }
}

fn head_lines<'a>(ctx: &Ctx, run: &'a Run) -> Vec<Line<'a>> {
    let t = &ctx.theme;
    let state = word_of::<RunState>(run.state);
    let mut first = vec![
        Span::styled(format!("{} ", run.name), t.heading()),
        Span::styled(state.clone(), t.state(&state)),
        Span::styled(format!("  {}", run.id), t.dim()),
    ];
    if ctx.stale().is_some() {
        first.push(Span::styled(
            format!("  ({})", ctx.stale().unwrap_or_default()),
            t.warn(),
        ));
    }
    let mut second = vec![Span::raw(format!(
        "by {} {}",
        if run.submitted_by.is_empty() {
            "?"
        } else {
            &run.submitted_by
        },
        relative(run.created_at_ms, ctx.now)
    ))];
    if run.finished_at_ms > 0 {
        second.push(Span::raw(format!(
            ", ended {}",
            relative(run.finished_at_ms, ctx.now)
        )));
    }
    if !run.labels.is_empty() {
        let mut labels: Vec<String> = run.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        second.push(Span::styled(format!("  {}", labels.join(" ")), t.dim()));
    }
    let mut lines = vec![Line::from(first), Line::from(second)];
    if let Some(a) = ctx.data.pending_approval_of(&run.id) {
        let mut line = vec![Span::styled(
            format!("waiting for approval {}", a.id),
            t.warn(),
        )];
        // The keys only for whom they would work.
        if ctx.app.offers(Action::Change(Kind::Approve)) {
            line.extend([
                Span::raw(": "),
                Span::styled("a", t.key()),
                Span::raw(" approves, "),
                Span::styled("x", t.key()),
                Span::raw(" rejects"),
            ]);
        }
        lines.push(Line::from(line));
    } else if let Some(step) = run
        .steps
        .get(run.current_step as usize)
        .filter(|s| s.state() == StepState::Queued && !s.waiting_for.is_empty())
    {
        lines.push(Line::styled(
            format!("step {} waits: {}", step.index + 1, step.waiting_for),
            t.warn(),
        ));
    } else if !run.message.is_empty() {
        lines.push(Line::styled(run.message.clone(), t.state(&state)));
    }
    lines
}

fn steps(ctx: &Ctx, run: &Run, area: Rect, buf: &mut Buffer) {
    let t = &ctx.theme;
    let block = Block::bordered().title(Span::styled(" Steps ", t.heading()));
    let inner = block.inner(area);
    block.render(area, buf);
    let rows: Vec<Row> = run
        .steps
        .iter()
        .map(|s| {
            let state = word_of::<StepState>(s.state);
            let exec = s.kind() == StepKind::Exec;
            let attempt = if exec && s.attempt > 0 {
                crate::text::attempt_text(s)
            } else {
                String::new()
            };
            let exit = if s.has_exit_code {
                s.exit_code.to_string()
            } else {
                String::new()
            };
            let mut note = s.message.clone();
            if s.state() == StepState::RetryWait && s.next_attempt_at_ms > 0 {
                note = format!(
                    "next attempt {}; {note}",
                    relative(s.next_attempt_at_ms, ctx.now)
                );
            }
            let when = if s.finished_at_ms > 0 {
                format!("took {}", age(s.started_at_ms.max(1), s.finished_at_ms))
            } else if s.started_at_ms > 0 {
                format!("for {}", age(s.started_at_ms, ctx.now))
            } else {
                String::new()
            };
            // Still running, but printed nothing for its quiet_timeout.
            let state_span = if s.hung {
                Span::styled("hung", t.alert())
            } else {
                Span::styled(state.clone(), t.state(&state))
            };
            let current = s.index == run.current_step;
            let marker = if current { ">" } else { " " };
            Row::new([
                Cell::from(format!("{marker}{}", step_number(s.index))),
                Cell::from(s.name.clone()),
                Cell::from(state_span),
                Cell::from(attempt),
                Cell::from(s.queue.clone()),
                Cell::from(s.worker_id.clone()),
                Cell::from(exit),
                Cell::from(when),
                Cell::from(Span::styled(note, t.dim())),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(3),
        Constraint::Fill(2),
        Constraint::Length(10),
        Constraint::Length(4),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Fill(1),
    ];
    let header = Row::new([
        "#", "STEP", "STATE", "ATT", "QUEUE", "WORKER", "EXIT", "TIME", "NOTE",
    ])
    .style(t.heading());
    Widget::render(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
        buf,
    );
}

/// A pane's block: its title, bright when in focus.
fn pane_block<'a>(ctx: &Ctx, title: Vec<Span<'a>>, focused: bool) -> Block<'a> {
    let block = Block::bordered().title(Line::from(title));
    if focused {
        block.border_style(ctx.theme.key())
    } else {
        block
    }
}

fn timeline(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.theme;
    let events = &ctx.run.timeline;
    let shown = usize::from(area.height.saturating_sub(2));
    let first = events
        .len()
        .saturating_sub(shown)
        .saturating_sub(ctx.run.timeline_back);
    let focused = ctx.run.pane == Pane::Timeline;
    let mut title = vec![Span::styled(" Timeline ", t.heading())];
    if events.len() > shown {
        title.push(Span::styled(
            format!(
                "{}-{} of {} ",
                first + 1,
                (first + shown).min(events.len()),
                events.len()
            ),
            t.dim(),
        ));
    }
    if !focused {
        title.push(Span::styled("tab to scroll ", t.dim()));
    }
    let block = pane_block(ctx, title, focused);
    let inner = block.inner(area);
    block.render(area, buf);
    let lines: Vec<Line> = events[first..(first + shown).min(events.len())]
        .iter()
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{:>5} ", age(e.at_ms, ctx.now)), t.dim()),
                Span::styled(format!("{} ", e.kind), kind_style(ctx, &e.kind)),
                Span::raw(message(e)),
            ])
        })
        .collect();
    let lines = if lines.is_empty() && !ctx.run.timeline_loaded {
        vec![Line::styled("reading the run's events...", t.dim())]
    } else {
        lines
    };
    Paragraph::new(lines).render(inner, buf);
}

fn log(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.theme;
    let view = ctx.run;
    let wrap = ctx.app.wrap_log;
    let height = usize::from(area.height.saturating_sub(2));
    let width = usize::from(area.width.saturating_sub(2)).max(1);
    let max = if wrap {
        // Wrapped, the newest lines take more rows: as many from the end
        // as fill the pane.
        let mut rows = 0;
        let mut first = view.log.len();
        for l in view.log.iter().rev() {
            rows += shown_text(l).chars().count().div_ceil(width).max(1);
            if rows > height {
                break;
            }
            first -= 1;
        }
        first.min(view.log.len().saturating_sub(1))
    } else {
        view.log.len().saturating_sub(height)
    };
    let first = if view.follow {
        max
    } else if wrap {
        view.scroll.min(view.log.len().saturating_sub(1))
    } else {
        view.scroll.min(max)
    };
    let mut title = vec![Span::styled(" Output ", t.heading())];
    if view.follow {
        title.push(Span::styled("following ", t.good()));
    } else if !view.log.is_empty() {
        title.push(Span::styled(
            format!(
                "lines {}-{} of {}, F follows ",
                first + 1,
                (first + height).min(view.log.len()),
                view.log.len()
            ),
            t.dim(),
        ));
    }
    if wrap {
        title.push(Span::styled("wrapped ", t.dim()));
    }
    if !view.search.is_empty() {
        title.push(Span::styled(format!("/{} ", view.search), t.key()));
    }
    let block = pane_block(ctx, title, view.pane == Pane::Output);
    let inner = block.inner(area);
    block.render(area, buf);
    if let Some(error) = &view.log_error {
        Paragraph::new(Span::styled(
            format!("the output cannot be read: {error}"),
            t.bad(),
        ))
        .render(inner, buf);
        return;
    }
    if view.log.is_empty() {
        let text = if view.log_fetching {
            "reading the output..."
        } else {
            "no output yet"
        };
        Paragraph::new(Span::styled(text, t.dim())).render(inner, buf);
        return;
    }
    let end = (first + height).min(view.log.len());
    let lines: Vec<Line> = view.log[first..end]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let style = if view.hit == Some(first + i) {
                t.selected()
            } else if line_matches(l, &view.search) {
                t.key()
            } else if l.heading {
                t.dim()
            } else if l.stderr {
                t.warn()
            } else {
                ratatui::style::Style::new()
            };
            Line::styled(shown_text(l), style)
        })
        .collect();
    let mut paragraph = Paragraph::new(lines);
    if wrap {
        paragraph = paragraph.wrap(Wrap { trim: false });
    }
    paragraph.render(inner, buf);
}

/// A log line as the pane shows it: headings marked.
fn shown_text(l: &crate::app::LogLine) -> String {
    if l.heading {
        format!("--- {}", l.text)
    } else {
        l.text.clone()
    }
}
