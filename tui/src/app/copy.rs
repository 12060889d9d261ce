//! `y`: the selected item's full id to the clipboard. Lists show ids cut
//! to their tail; the clipboard gets the whole of one, for the CLI. The
//! terminal does the copying (OSC 52), so it works over SSH and in tmux
//! (with `set-clipboard on`) without a clipboard program on the host.

use super::{App, Cmd, Screen, StatusKind};

/// The full id `y` copies here: the selected item's (an event's run,
/// worker or lease, else its seq), or the open run's.
pub(super) fn copied_id(app: &App) -> Option<String> {
    if app.screen == Screen::Run {
        let id = &app.shown().1.run_id;
        return (!id.is_empty()).then(|| id.clone());
    }
    let key = app.selected_key()?;
    if app.screen == Screen::Events {
        let e = key.parse().ok().and_then(|seq| app.shown().0.event(seq))?;
        let id = [&e.run_id, &e.worker_id, &e.lease_id]
            .into_iter()
            .find(|id| !id.is_empty())
            .cloned();
        return Some(id.unwrap_or_else(|| key.to_owned()));
    }
    Some(key.to_owned())
}

pub(super) fn copy(app: &mut App, text: String) -> Vec<Cmd> {
    app.say(
        StatusKind::Done,
        format!("copied {text} to the clipboard (via the terminal, OSC 52)"),
    );
    vec![Cmd::Copy { text }]
}

/// The escape sequence that asks the terminal to put `text` on the
/// clipboard: OSC 52, the "c" selection, base64, ended by BEL.
pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", base64(text.as_bytes()))
}

/// Standard base64 with padding: a few lines, not a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let at = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[at as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_standard_one_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn osc52_asks_for_the_clipboard_selection() {
        assert_eq!(
            osc52("01HRUN0000000000000000DEPLOY"),
            "\x1b]52;c;MDFIUlVOMDAwMDAwMDAwMDAwMDAwMERFUExPWQ==\x07"
        );
    }
}
