//! Workers: state (draining, recycling, recycled, offline, stuck, breaker), load,
//! generation, heartbeat age.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::Ctx;
use crate::app::Screen;
use crate::model::worker_status;
use crate::text::time::relative;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let wide = Ctx::wide(area);
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(22),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Fill(2),
        Constraint::Fill(if wide { 2 } else { 0 }),
    ];
    let header = [
        "ID",
        "STATE",
        "BUSY",
        "GEN",
        "HEARTBEAT",
        "QUEUES",
        if wide { "HOST" } else { "" },
    ];
    ctx.list(
        Screen::Workers,
        "Workers",
        &header,
        &widths,
        "no workers: start one with `opsdeckd worker --queue Q`",
    )
    .render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|id| ctx.data.workers.get(id))
            .map(|w| {
                let status = worker_status(ctx.data, w, ctx.now);
                // An online worker whose breaker is open takes no new work:
                // that is its state (`opsdeck workers` says why).
                let mut state = if w.breaker.is_empty() || status.word != "online" {
                    vec![Span::styled(status.word.clone(), t.state(&status.word))]
                } else {
                    vec![Span::styled(
                        format!("breaker {}", w.breaker.replace('_', "-")),
                        t.alert(),
                    )]
                };
                if let Some(note) = status.note {
                    state.push(Span::styled(format!(" {note}"), t.dim()));
                }
                if status.stuck {
                    state.push(Span::raw(" "));
                    state.push(Span::styled("STUCK", t.alert()));
                }
                let host = if w.pid > 0 {
                    format!("{} pid {}", w.host, w.pid)
                } else {
                    w.host.clone()
                };
                Row::new([
                    Cell::from(w.id.clone()),
                    Cell::from(Line::from(state)),
                    Cell::from(format!("{}/{}", w.lease_ids.len(), w.slots)),
                    Cell::from(w.generation.to_string()),
                    Cell::from(relative(w.last_heartbeat_at_ms, ctx.now)),
                    Cell::from(w.queues.join(",")),
                    Cell::from(Span::styled(host, t.dim())),
                ])
            })
            .collect()
    });
}
