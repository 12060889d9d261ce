//! The top bar: the engine, who we are (and our roles), the connection
//! state and the badges that must not be missed (pending approvals,
//! quarantined run names, frozen, leader changed, read-only). The right side keeps what matters most when the
//! terminal is narrow; the engine's address gives way first.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::{App, Link, link_words};
use crate::roles;
use crate::view::theme::Theme;

use super::fit;

/// A wall-clock time of day, local: "14:03:07".
pub fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    // time_t is 64 bits wide on every platform this runs on.
    let t = secs as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on this
    // stack frame; it is the re-entrant form, safe beside other threads.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return "??:??:??".to_owned();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// The header's pieces on the right, most important first.
fn badges(app: &App, theme: &Theme) -> Vec<Span<'static>> {
    let (data, _) = app.shown();
    let mut out = Vec::new();
    let live = app.conn.link == Link::Live && app.quiet_since().is_none();
    let state = match &app.conn.link {
        Link::Loading if !data.loaded => " loading ".to_owned(),
        Link::Loading => " resyncing ".to_owned(),
        _ => format!(" {} ", link_words(app)),
    };
    out.push(Span::styled(state, theme.link(live)));
    if let Some(since) = app.stale_since() {
        out.push(Span::styled(
            format!(" stale since {} ", clock(since)),
            theme.link(false),
        ));
    }
    let pending = data.pending_approvals();
    if pending > 0 {
        let word = if pending == 1 {
            "approval"
        } else {
            "approvals"
        };
        out.push(Span::styled(
            format!(" {pending} {word} pending "),
            theme.badge(),
        ));
    }
    let quarantined = data.quarantines.len();
    if quarantined > 0 {
        out.push(Span::styled(
            format!(" {quarantined} quarantined "),
            theme.alarm(),
        ));
    }
    if app.frozen.is_some() {
        out.push(Span::styled(" FROZEN ", theme.focus()));
    }
    if app.conn.leader_changed_at_ms.is_some() {
        out.push(Span::styled(" leader changed ", theme.badge()));
    }
    if app.readonly {
        out.push(Span::styled(" read-only ", theme.focus()));
    }
    out
}

pub fn render(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    buf.set_style(area, theme.bar());
    let width = usize::from(area.width);
    let mut right = badges(app, theme);
    // Drop from the end (least important) until the right side fits with
    // at least the name on the left.
    while right.len() > 1 && right.iter().map(Span::width).sum::<usize>() + 9 > width {
        right.pop();
    }
    let right_width: usize = right.iter().map(Span::width).sum::<usize>().min(width);
    let mut left = vec![Span::styled(" opsdeck ", theme.heading())];
    let mut room = width.saturating_sub(right_width + 9);
    let who = match (app.conn.identity.is_empty(), app.conn.roles.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!("as {} ", app.conn.identity),
        (false, false) => format!(
            "as {} ({}) ",
            app.conn.identity,
            roles::shown(&app.conn.roles).join(",")
        ),
    };
    if room > who.chars().count() + 4 {
        room -= who.chars().count();
        left.push(Span::raw(format!(
            "{} ",
            fit(&app.conn.engine, room.saturating_sub(1))
        )));
        left.push(Span::raw(who));
    } else if room > 4 {
        left.push(Span::raw(fit(&who, room)));
    }
    let left_area = Rect {
        width: area
            .width
            .saturating_sub(u16::try_from(right_width).unwrap_or(u16::MAX)),
        ..area
    };
    Paragraph::new(Line::from(left))
        .style(theme.bar())
        .render(left_area, buf);
    let right_area = Rect {
        x: left_area.x + left_area.width,
        width: area.width - left_area.width,
        ..area
    };
    Paragraph::new(Line::from(right))
        .style(Style::new())
        .render(right_area, buf);
}
