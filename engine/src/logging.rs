//! The process's log: `tracing` lines on stderr (for journald), plain or
//! JSON, and optionally daily rolling files written off the hot path.
//! `RUST_LOG` filters both.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

/// The filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,hyper=warn";

/// Log files are named `opsdeckd.YYYY-MM-DD.log` (UTC dates).
pub const FILE_PREFIX: &str = "opsdeckd";
pub const FILE_SUFFIX: &str = "log";

/// Daily files kept in the log dir; older ones are removed as days roll.
pub const KEEP_FILES: usize = 30;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Plain,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "{other:?} is not a log format; use \"plain\" or \"json\""
            )),
        }
    }
}

/// Where the log goes.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub format: Format,
    /// Daily rolling files here, besides stderr.
    pub dir: Option<PathBuf>,
}

/// Keeps the file writer flushing; hold it until the process ends, so the
/// last lines reach the file.
#[must_use = "the log file writer stops when this is dropped"]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn layer<W>(format: Format, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = fmt::layer().with_writer(writer).with_ansi(ansi);
    match format {
        Format::Plain => base.fmt_fields(EscapedFields::default()).boxed(),
        Format::Json => base
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
}

/// The plain format's fields (the message among them), with every control
/// character escaped: log lines carry strings that clients chose — worker
/// ids, identities, queue names, reasons, error messages — and a "\n" in
/// one must not start a forged line, nor an ESC or a C1 control (U+009B)
/// drive the terminal of whoever reads the log. `tracing-subscriber` quotes
/// plain string fields, but writes the message and `%` (Display) fields as
/// they are; this escapes them all, once every field is written.
///
/// The JSON format needs none of this: serde escapes control characters
/// in strings.
#[derive(Debug, Default)]
pub struct EscapedFields(fmt::format::DefaultFields);

impl<'w> fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut raw = String::new();
        self.0
            .format_fields(fmt::format::Writer::new(&mut raw), fields)?;
        writer.write_str(&escape_controls(&raw))
    }
}

/// `text` with control characters (C0, DEL, C1) and the Unicode line and
/// paragraph separators written as escapes: `\n`, `\r`, `\t`, else `\u{9b}`.
/// A backslash stays as it is: the escapes are for reading, not to be undone.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let escape = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(escape) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.into()
}

/// The rolling file appender for `dir`.
pub fn appender(dir: &Path) -> anyhow::Result<RollingFileAppender> {
    crate::private::create_dir_all(dir)
        .with_context(|| format!("cannot create the log dir {}", dir.display()))?;
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(FILE_PREFIX)
        .filename_suffix(FILE_SUFFIX)
        .max_log_files(KEEP_FILES)
        .build(dir)
        .with_context(|| format!("cannot open a log file in {}", dir.display()))
}

/// Installs the global subscriber.
pub fn init(opts: &LogOptions) -> anyhow::Result<LogGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let mut layers: Vec<BoxedLayer> = vec![layer(opts.format, std::io::stderr, false)];
    let mut guard = None;
    if let Some(dir) = &opts.dir {
        let (writer, g) = tracing_appender::non_blocking(appender(dir)?);
        layers.push(layer(opts.format, writer, false));
        guard = Some(g);
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .context("cannot install the logger")?;
    Ok(LogGuard(guard))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log destination the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    fn logged(format: Format, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(layer(format, buffer.clone(), false));
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// What a client might send as its worker id, identity, queue or reason:
    /// a new line that looks like one of ours, a C1 CSI and an ESC sequence.
    const FORGED: &str =
        "w1\n2026-01-01T00:00:00.000000Z  INFO opsdeck_engine: worker admitted\r\u{9b}31m\x1b[2J";

    #[test]
    fn client_strings_in_plain_logs_cannot_forge_a_line_or_drive_a_terminal() {
        let text = logged(Format::Plain, || {
            let span = tracing::info_span!("session", worker_id = %FORGED);
            let _entered = span.enter();
            tracing::info!(
                worker_id = %FORGED,
                identity = FORGED,
                queue = %FORGED,
                reason = ?FORGED,
                "worker {FORGED} said hello"
            );
        });
        assert_eq!(text.lines().count(), 1, "one event, one line: {text}");
        assert!(
            !text.contains(['\r', '\u{9b}', '\x1b']),
            "a raw control character: {text:?}"
        );
        // Each place a client string went, escaped and still readable.
        assert!(text.contains(r"worker w1\n2026-01-01"), "message: {text}");
        assert!(
            text.contains(r"session{worker_id=w1\n2026-01-01"),
            "span: {text}"
        );
        assert!(text.contains(r"queue=w1\n2026-01-01"), "% field: {text}");
        assert!(text.contains(r"\r\u{9b}31m"), "C1 control: {text}");
    }

    #[test]
    fn json_logs_keep_one_event_per_line() {
        let text = logged(Format::Json, || {
            tracing::info!(worker_id = %FORGED, "worker {FORGED} said hello");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(event["fields"]["worker_id"], FORGED);
    }

    #[test]
    fn escaping_leaves_ordinary_text_as_it_is() {
        let plain = "worker w-1 (queue build.eu) — naïve «ok» \\ done";
        assert!(matches!(
            escape_controls(plain),
            std::borrow::Cow::Borrowed(p) if p == plain
        ));
        assert_eq!(
            escape_controls("a\tb\u{7f}c\u{2028}d"),
            r"a\tb\u{7f}c\u{2028}d"
        );
    }
}
