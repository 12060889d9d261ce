//! Approvals: pending first (oldest ask first), their age, and the
//! deadline, highlighted once it has passed; then recent decisions.

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::ApprovalState;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::Ctx;
use crate::app::{Screen, age};
use crate::model::overdue;
use crate::text::step_number;
use crate::text::time::relative;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let wide = Ctx::wide(area);
    let id_width = Ctx::id_width(area);
    let widths = [
        Constraint::Length(id_width),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Fill(3),
    ];
    let header = [
        "ID", "RUN", "STEP", "STATE", "VOTES", "BY", "ASKED", "DEADLINE",
    ];
    ctx.list(
        Screen::Approvals,
        "Approvals",
        &header,
        &widths,
        "no approvals: a run asks for one at an approval step",
    )
    .render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|id| ctx.data.approvals.get(id))
            .map(|a| {
                let state = word_of::<ApprovalState>(a.state);
                let votes = a.decisions.iter().filter(|d| d.approve).count();
                let pending = a.state() == ApprovalState::Pending;
                let deadline = if overdue(a, ctx.now) {
                    let mut text = format!("OVERDUE {}", age(a.deadline_at_ms, ctx.now));
                    if wide && !a.on_timeout.is_empty() {
                        text.push_str(&format!(" → {}", a.on_timeout));
                    }
                    Span::styled(text, t.alert())
                } else if pending && a.deadline_at_ms > 0 && wide {
                    Span::raw(format!(
                        "{} → {}",
                        relative(a.deadline_at_ms, ctx.now),
                        a.on_timeout
                    ))
                } else if pending && a.deadline_at_ms > 0 {
                    Span::raw(relative(a.deadline_at_ms, ctx.now))
                } else if !pending {
                    let by = a
                        .decisions
                        .last()
                        .map(|d| d.actor.clone())
                        .unwrap_or_default();
                    Span::styled(
                        format!("decided {} {by}", relative(a.decided_at_ms, ctx.now)),
                        t.dim(),
                    )
                } else {
                    Span::styled("none", t.dim())
                };
                Row::new([
                    ctx.id_cell(Screen::Approvals, &a.id, id_width),
                    Cell::from(a.run_name.clone()),
                    Cell::from(if wide {
                        format!("{} {}", step_number(a.step_index), a.step_name)
                    } else {
                        a.step_name.clone()
                    }),
                    Cell::from(Span::styled(state.clone(), t.state(&state))),
                    Cell::from(format!("{votes}/{}", a.required.max(1))),
                    Cell::from(a.submitted_by.clone()),
                    Cell::from(age(a.requested_at_ms, ctx.now)),
                    Cell::from(deadline),
                ])
            })
            .collect()
    });
}
