//! Runs, newest first: state, the step in hand, who, when.

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::RunState;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::Ctx;
use crate::app::Screen;
use crate::text::step_number;
use crate::text::time::relative;

/// Where a filter that matches nothing here may still find runs.
pub const OLDER_RUNS: &str = "older finished runs: `opsdeck runs --name PATTERN --since 7d`";

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let wide = Ctx::wide(area);
    let id_width = Ctx::id_width(area);
    let widths = [
        Constraint::Length(id_width),
        Constraint::Fill(2),
        Constraint::Length(16),
        Constraint::Fill(2),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Fill(if wide { 3 } else { 0 }),
    ];
    let header = [
        "ID",
        "NAME",
        "STATE",
        "STEP",
        "BY",
        "CREATED",
        if wide { "MESSAGE" } else { "" },
    ];
    let mut list = ctx.list(
        Screen::Runs,
        "Runs",
        &header,
        &widths,
        "no runs yet: submit one with `opsdeck submit SPEC`",
    );
    // The console holds the live runs and the most recently finished
    // ones; the rest of the history is the engine's to search.
    list.elsewhere = Some(OLDER_RUNS);
    list.render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|id| ctx.data.runs.get(id))
            .map(|r| {
                let state = word_of::<RunState>(r.state);
                let step = r
                    .steps
                    .get(r.current_step as usize)
                    .map(|s| format!("{}/{} {}", step_number(s.index), r.steps.len(), s.name))
                    .unwrap_or_default();
                Row::new([
                    ctx.id_cell(Screen::Runs, &r.id, id_width),
                    Cell::from(r.name.clone()),
                    Cell::from(Span::styled(state.clone(), t.state(&state))),
                    Cell::from(step),
                    Cell::from(r.submitted_by.clone()),
                    Cell::from(relative(r.created_at_ms, ctx.now)),
                    Cell::from(Span::styled(r.message.clone(), t.dim())),
                ])
            })
            .collect()
    });
}
