//! Schedules, by name: the cron and its zone, the next fire, the last run
//! and how it went, and whether the schedule is paused. Enter lists the
//! runs of its run name.

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{RunState, Schedule};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::Ctx;
use crate::app::Screen;
use crate::model::Data;
use crate::text::time::relative;

pub fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let app = ctx.app;
    let t = &ctx.theme;
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(6),
        Constraint::Fill(2),
        Constraint::Length(14),
        Constraint::Fill(2),
        Constraint::Length(9),
        Constraint::Fill(3),
    ];
    let header = [
        "SCHEDULE", "STATE", "CRON", "ZONE", "RUN", "NEXT", "LAST RUN",
    ];
    ctx.list(
        Screen::Schedules,
        "Schedules",
        &header,
        &widths,
        "no schedules: `opsdeck schedule add NAME FILE --cron EXPR` adds one",
    )
    .render(area, buf, |range| {
        app.rows[range]
            .iter()
            .filter_map(|name| ctx.data.schedules.get(name))
            .map(|s| {
                let (state, style) = if s.paused {
                    ("paused", t.warn())
                } else {
                    ("active", t.good())
                };
                let next = if s.paused {
                    "-".to_owned()
                } else {
                    relative(s.next_fire_at_ms, ctx.now)
                };
                Row::new([
                    Cell::from(s.name.clone()),
                    Cell::from(Span::styled(state, style)),
                    Cell::from(s.cron.clone()),
                    Cell::from(s.timezone.clone()),
                    Cell::from(s.run_name.clone()),
                    Cell::from(next),
                    Cell::from(last_run(ctx.data, s, ctx.now)),
                ])
            })
            .collect()
    });
}

/// The last run's short id, its outcome (as the console knows it now, else
/// as the schedule said) and when it was fired; "-" for none.
pub fn last_run(data: &Data, s: &Schedule, now: i64) -> String {
    if s.last_run_id.is_empty() {
        return "-".to_owned();
    }
    let state = data
        .runs
        .get(&s.last_run_id)
        .map_or(s.last_run_state, |r| r.state);
    let id: String = {
        let n = s.last_run_id.chars().count();
        s.last_run_id.chars().skip(n.saturating_sub(8)).collect()
    };
    let mut text = id;
    if state != RunState::Unspecified as i32 {
        text.push(' ');
        text.push_str(&word_of::<RunState>(state));
    }
    if s.last_fire_at_ms > 0 {
        text.push_str(&format!(" ({})", relative(s.last_fire_at_ms, now)));
    }
    text
}
