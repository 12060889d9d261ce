//! Queues: depth (ready, delayed, running), the age of the oldest ready
//! step, rates per minute, paused, and a depth sparkline.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::{Ctx, count};
use crate::app::Screen;
use crate::text::time::duration_or_dash;
use crate::widgets::sparkline::{spark, top};

/// Columns before the sparkline: what it may not take.
const FIXED: u16 = 6 + 5 + 5 + 4 + 6 + 4 + 6 + 3 + 9;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Fill(1),
    ];
    let spark_width = usize::from(area.width.saturating_sub(FIXED + 12) / 2).max(1);
    // One scale for every queue, named in the column's title.
    let max = top(ctx.data.depth.values(), spark_width);
    let spark_title = if max == 0 {
        "READY, LAST MINUTES".to_owned()
    } else {
        format!("READY, MAX {max}")
    };
    let header = [
        "QUEUE",
        "STATE",
        "READY",
        "DELAY",
        "RUN",
        "OLDEST",
        "IN/m",
        "DONE/m",
        "WKR",
        &spark_title,
    ];
    ctx.list(
        Screen::Queues,
        "Queues",
        &header,
        &widths,
        "no queues yet: a queue is made when a step first names it",
    )
    .render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|name| ctx.data.queues.get(name))
            .map(|seen| {
                let q = &seen.queue;
                let state = if q.paused { "paused" } else { "active" };
                let samples = ctx.data.depth.get(&q.name);
                let line = samples.map_or_else(String::new, |s| spark(s.iter(), spark_width, max));
                let workers = if q.workers == 0 && q.ready > 0 {
                    Span::styled("0", t.alert())
                } else {
                    Span::raw(q.workers.to_string())
                };
                Row::new([
                    Cell::from(q.name.clone()),
                    Cell::from(Span::styled(state, t.state(state))),
                    Cell::from(count(q.ready)),
                    Cell::from(count(q.delayed)),
                    Cell::from(count(q.running)),
                    Cell::from(duration_or_dash(seen.oldest_ready_age_ms(ctx.now))),
                    Cell::from(count(q.enqueued_last_minute)),
                    Cell::from(count(q.completed_last_minute)),
                    Cell::from(workers),
                    Cell::from(Span::styled(line, t.tone(crate::cli::table::Tone::Busy))),
                ])
            })
            .collect()
    });
}
