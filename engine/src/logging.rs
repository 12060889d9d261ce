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
        Format::Plain => base.boxed(),
        Format::Json => base
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
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
