//! Live leases: stuck ones first (the engine gave up waiting for their
//! worker to stop the step: someone has to deal with the process, then
//! force-release), then stale ones (their holder is gone, so they only
//! wait to expire), then the soonest to expire. A lease the console sees
//! past its step's timeout, before the engine calls it stuck, is marked
//! overdue.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::Ctx;
use crate::app::Screen;
use crate::model::{Holder, holder, lease_overdue, lease_stuck};
use crate::text::step_number;
use crate::text::time::relative;
use crate::widgets::short_id;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let id_width = Ctx::id_width(area);
    let widths = [
        Constraint::Length(id_width),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(12),
        Constraint::Length(3),
        Constraint::Length(14),
    ];
    let header = ["ID", "RUN", "STEP", "WORKER", "HOLDER", "ATT", "EXPIRES"];
    let stuck = ctx.data.leases.values().filter(|l| lease_stuck(l)).count();
    let mut list = ctx.list(
        Screen::Leases,
        "Leases",
        &header,
        &widths,
        "no live leases: no step is being run",
    );
    if stuck > 0 {
        list.alert = Some(format!("({stuck} STUCK)"));
    }
    list.render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|id| ctx.data.leases.get(id))
            .map(|l| {
                let holder_cell = match holder(ctx.data, l) {
                    Holder::Ok => {
                        let word = ctx
                            .data
                            .workers
                            .get(&l.worker_id)
                            .map(|w| {
                                opsdeck_proto::names::word_of::<opsdeck_proto::v1::WorkerState>(
                                    w.state,
                                )
                            })
                            .unwrap_or_default();
                        Span::styled(word.clone(), t.state(&word))
                    }
                    Holder::Gone => {
                        use opsdeck_proto::v1::WorkerState;
                        let word = ctx.data.workers.get(&l.worker_id).map_or("gone", |w| {
                            match w.state() {
                                WorkerState::Offline => "offline",
                                WorkerState::Stopped => "stopped",
                                _ => "disconnected",
                            }
                        });
                        Span::styled(word, t.alert())
                    }
                    Holder::Unknown => Span::styled("unknown", t.warn()),
                };
                // A stuck lease's expiry says nothing: its worker renews it.
                let expires = if lease_stuck(l) {
                    Span::styled("STUCK", t.alert())
                } else if lease_overdue(ctx.data, l, ctx.now) {
                    Span::styled("overdue", t.warn())
                } else {
                    Span::raw(relative(l.expires_at_ms, ctx.now))
                };
                Row::new([
                    Cell::from(Span::styled(
                        short_id(&l.id, usize::from(id_width)),
                        t.dim(),
                    )),
                    Cell::from(l.run_name.clone()),
                    Cell::from(format!("{} {}", step_number(l.step_index), l.step_name)),
                    Cell::from(l.worker_id.clone()),
                    Cell::from(holder_cell),
                    Cell::from(l.attempt.to_string()),
                    Cell::from(expires),
                ])
            })
            .collect()
    });
}
