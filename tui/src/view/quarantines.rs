//! Quarantined run names, the latest first: since when, how many stuck
//! leases tripped it, the runs of the name not ended (their queued steps
//! wait), and the engine's why.
//! `U` clears one (admin), enter lists the runs of the name.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::{Ctx, count};
use crate::app::{Screen, active_runs};
use crate::text::time::relative;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Fill(4),
    ];
    let header = ["RUN NAME", "SINCE", "STUCK", "ACTIVE", "WHY"];
    ctx.list(
        Screen::Quarantines,
        "Quarantines",
        &header,
        &widths,
        "no quarantined run names: every name's runs are taken",
    )
    .render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|name| ctx.data.quarantines.get(name))
            .map(|q| {
                let active = u64::try_from(active_runs(ctx.data, &q.name)).unwrap_or(u64::MAX);
                Row::new([
                    Cell::from(Span::styled(q.name.clone(), t.bad())),
                    Cell::from(relative(q.since_ms, ctx.now)),
                    Cell::from(q.stuck_count.to_string()),
                    Cell::from(count(active)),
                    Cell::from(Span::styled(q.message.clone(), t.dim())),
                ])
            })
            .collect()
    });
}
