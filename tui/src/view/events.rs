//! The global live tail, newest first: F (or g) keeps the newest selected.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::Ctx;
use crate::app::{Screen, age};
use crate::text::clean;
use crate::text::subject;

/// An event's sentence, with its reason when it has one.
pub fn message(e: &opsdeck_proto::v1::Event) -> String {
    let mut text = clean(&e.message, ' ');
    if !e.reason.is_empty() {
        text.push_str(&format!(" (reason: {})", clean(&e.reason, ' ')));
    }
    text
}

/// The style of an event kind: failures stand out.
pub fn kind_style(ctx: &Ctx, kind: &str) -> ratatui::style::Style {
    let last = kind.rsplit('.').next().unwrap_or(kind);
    match last {
        "failed" | "dead" | "rejected" | "expired" | "offline" | "force_released" | "cancelled"
        | "stuck" | "quarantined" => ctx.theme.bad(),
        "requested" | "draining" | "recycle_requested" | "paused" | "retry_scheduled" => {
            ctx.theme.warn()
        }
        "succeeded" | "approved" | "registered" | "recycled" | "resumed" | "undrained"
        | "quarantine_cleared" => ctx.theme.good(),
        _ => ratatui::style::Style::new(),
    }
}

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let wide = Ctx::wide(area);
    let widths = [
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(21),
        Constraint::Length(if wide { 14 } else { 10 }),
        Constraint::Fill(if wide { 2 } else { 0 }),
        Constraint::Fill(5),
    ];
    let header = [
        "SEQ",
        "AGE",
        "KIND",
        "ACTOR",
        if wide { "SUBJECT" } else { "" },
        "MESSAGE",
    ];
    let title = if app.events_follow {
        "Events (following)"
    } else {
        "Events"
    };
    ctx.list(Screen::Events, title, &header, &widths, "no events yet")
        .render(area, buf, |range| {
            app.rows[range]
                .iter()
                .filter_map(|seq| seq.parse().ok().and_then(|s| ctx.data.event(s)))
                .map(|e| {
                    Row::new([
                        Cell::from(Span::styled(e.seq.to_string(), t.dim())),
                        Cell::from(age(e.at_ms, ctx.now)),
                        Cell::from(Span::styled(e.kind.clone(), kind_style(ctx, &e.kind))),
                        Cell::from(e.actor.clone()),
                        Cell::from(Span::styled(subject(e), t.dim())),
                        Cell::from(Line::raw(message(e))),
                    ])
                })
                .collect()
        });
}
