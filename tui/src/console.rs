//! The console's main loop: one `select!` over key presses, the watch
//! connection, the results of engine calls and a one-second tick; the app
//! is updated with each, and the frame is drawn only when something
//! changed — at most [`FRAME_RATE`] times a second, so that a burst of
//! events costs one frame, not one each.
//!
//! Engine calls run as tasks; their results come back as messages. The
//! terminal is restored on every way out: a `Drop` guard for returns and
//! unwinding, a panic hook for the message to land on a sane terminal.

use std::io::{self, BufWriter, IsTerminal, Stdout, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use futures::{FutureExt, StreamExt};
use opsdeck_proto::v1::{
    FollowOutputRequest, GetOutputRequest, GetRunRequest, ListEventsRequest, ListLeasesRequest,
    ListQueuesRequest, ListWorkersRequest,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::app::{self, App, Cmd, LOG_TAIL_BYTES, Msg, Options, Palette, Refreshed, change};
use crate::cli::CALL_TIMEOUT;
use crate::client::{Auth, Engine, Target};
use crate::conn::{Conn, Update, status_words};
use crate::text::time::now_ms;
use crate::view::Console;

/// Frames a second at most, when things change faster than that.
pub const FRAME_RATE: u32 = 30;
/// Messages applied before a frame at most, when more keep coming.
const MAX_BATCH: usize = 256;

/// Why the console could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "the console needs a terminal: stdin and stdout must be one (for scripts, use the subcommands: opsdeck --help)"
    )]
    NotATerminal,
    #[error("the terminal failed: {0}")]
    Terminal(#[from] io::Error),
}

/// Counts the bytes written to the terminal, for `OPSDECK_CONSOLE_STATS`.
pub struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Backend = CrosstermBackend<Counting<BufWriter<Stdout>>>;

/// Restores the terminal when dropped.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

fn setup(count: Arc<AtomicU64>) -> Result<(Terminal<Backend>, TerminalGuard), ConsoleError> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(ConsoleError::NotATerminal);
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Restore first, or the message lands on a raw alternate screen
        // that is about to vanish.
        restore();
        previous(info);
    }));
    terminal::enable_raw_mode()?;
    let guard = TerminalGuard;
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
    let writer = Counting {
        inner: BufWriter::with_capacity(64 * 1024, io::stdout()),
        count,
    };
    let terminal = Terminal::new(CrosstermBackend::new(writer))?;
    Ok((terminal, guard))
}

/// Runs the console against `target` until the operator quits.
pub async fn run(target: Target, auth: Auth, readonly: bool) -> Result<(), ConsoleError> {
    let bytes = Arc::new(AtomicU64::new(0));
    let (mut terminal, _guard) = setup(bytes.clone())?;
    let options = Options {
        engine: target.addr.to_string(),
        readonly,
        palette: Palette::from_env(),
    };
    let mut app = App::new(options, now_ms());
    let size = terminal.size()?;
    app.size = (size.width, size.height);
    let mut conn = Conn::new(target, auth);
    let (results, mut results_rx) = mpsc::unbounded_channel::<Msg>();
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut stats = Stats::from_env(bytes);
    let frame = Duration::from_secs(1) / FRAME_RATE;
    let mut dirty = true;
    let mut drawn_at = Instant::now() - frame;
    // The task following the Run screen's output, if any.
    let mut following: Option<tokio::task::JoinHandle<()>> = None;

    loop {
        if dirty && drawn_at.elapsed() >= frame {
            app.sync();
            let started = std::time::Instant::now();
            terminal.draw(|f| f.render_widget(Console(&app), f.area()))?;
            drawn_at = Instant::now();
            dirty = false;
            if let Some(stats) = &mut stats {
                stats.drawn(started.elapsed());
            }
        }
        let msg = tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) if key.kind == KeyEventKind::Press => Msg::Key(key),
                Some(Ok(TermEvent::Resize(width, height))) => Msg::Resize { width, height },
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                // The terminal is gone.
                None => return Ok(()),
            },
            update = conn.next() => {
                if let (Some(stats), Update::Event(e)) = (&mut stats, &update) {
                    stats.event(e.at_ms);
                }
                Msg::Conn(update)
            }
            Some(msg) = results_rx.recv() => msg,
            _ = tick.tick() => Msg::Tick,
            _ = tokio::time::sleep_until(drawn_at + frame), if dirty => continue,
        };
        // Whatever else is ready goes into the same frame: the events of
        // one engine transaction arrive together, and drawing after the
        // first would show the rest a frame late.
        let mut batch = vec![msg];
        while batch.len() < MAX_BATCH {
            if let Some(update) = conn.next().now_or_never() {
                if let (Some(stats), Update::Event(e)) = (&mut stats, &update) {
                    stats.event(e.at_ms);
                }
                batch.push(Msg::Conn(update));
            } else if let Ok(msg) = results_rx.try_recv() {
                batch.push(msg);
            } else {
                break;
            }
        }
        for msg in batch {
            if let (Some(stats), Msg::Tick) = (&mut stats, &msg) {
                stats.tick();
            }
            app.now_ms = now_ms();
            for cmd in app::update(&mut app, msg) {
                match cmd {
                    Cmd::Quit => return Ok(()),
                    Cmd::Resync => conn.resync(),
                    Cmd::FollowOutput { run_id, from } => {
                        // One run's output at a time: the newest asked for.
                        if let Some(task) = following.take() {
                            task.abort();
                        }
                        let engine = conn.engine().cloned();
                        following = Some(tokio::spawn(follow_output(
                            engine,
                            run_id,
                            from,
                            results.clone(),
                        )));
                    }
                    Cmd::StopOutput => {
                        if let Some(task) = following.take() {
                            task.abort();
                        }
                    }
                    Cmd::Copy { text } => {
                        // The terminal does the copying: over SSH, the
                        // clipboard of the operator's machine.
                        let backend = terminal.backend_mut();
                        backend.write_all(app::osc52(&text).as_bytes())?;
                        backend.flush()?;
                    }
                    cmd => {
                        let engine = conn.engine().cloned();
                        let results = results.clone();
                        tokio::spawn(async move {
                            if let Some(msg) = carry_out(engine, cmd).await {
                                // The loop may be gone; then nobody waits for it.
                                let _ = results.send(msg);
                            }
                        });
                    }
                }
            }
        }
        dirty = true;
    }
}

/// One call, bounded by [`CALL_TIMEOUT`]; its error in words.
pub(crate) async fn call<T>(
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the engine did not answer within {}s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Carries out a command against the engine; its result as a message.
async fn carry_out(engine: Option<Engine>, cmd: Cmd) -> Option<Msg> {
    let Some(engine) = engine else {
        // Changes are refused before they get here while disconnected;
        // a fetch asked for just before a break lands here.
        return failed(
            cmd,
            tonic::Status::unavailable("not connected to the engine"),
        );
    };
    let words = |e: tonic::Status| status_words(&e);
    Some(match cmd {
        Cmd::Change { change, reason } => {
            let result = change::call(engine, change.clone(), reason).await;
            Msg::Done { change, result }
        }
        Cmd::FetchOutput { run_id } => {
            let request = GetOutputRequest {
                run_id: run_id.clone(),
                step_index: None,
                tail_bytes: LOG_TAIL_BYTES,
            };
            let result = call(engine.runs().get_output(request)).await;
            Msg::Output {
                run_id,
                result: result.map(|r| r.chunks).map_err(words),
            }
        }
        Cmd::FetchTimeline { run_id } => {
            let result = list_events(&engine, 0, 1000, run_id.clone()).await;
            Msg::Timeline {
                run_id,
                result: result.map_err(words),
            }
        }
        Cmd::FetchRun { run_id } => {
            let request = GetRunRequest { id: run_id.clone() };
            let result = call(engine.runs().get_run(request)).await;
            Msg::Run {
                result: result.map_err(|e| run_words(&run_id, &e)),
                run_id,
            }
        }
        Cmd::FetchEvents { after_seq } => Msg::Backfill(
            list_events(&engine, after_seq, 500, String::new())
                .await
                .map_err(words),
        ),
        Cmd::Refresh => {
            let mut workers = engine.workers();
            let mut leases = engine.leases();
            let mut queues = engine.queues();
            let (workers, leases, queues) = tokio::join!(
                call(workers.list_workers(ListWorkersRequest {})),
                call(leases.list_leases(ListLeasesRequest { all: false })),
                call(queues.list_queues(ListQueuesRequest {})),
            );
            Msg::Refreshed(match (workers, leases, queues) {
                (Ok(w), Ok(l), Ok(q)) => Ok(Refreshed {
                    workers: w.workers,
                    leases: l.leases,
                    queues: q.queues,
                }),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(words(e)),
            })
        }
        Cmd::Quit | Cmd::Resync | Cmd::Copy { .. } | Cmd::FollowOutput { .. } | Cmd::StopOutput => {
            return None;
        }
    })
}

/// Follows a run's output from `from`, each chunk a message, then one that
/// says how the stream ended.
async fn follow_output(
    engine: Option<Engine>,
    run_id: String,
    from: Option<opsdeck_proto::v1::OutputPosition>,
    results: mpsc::UnboundedSender<Msg>,
) {
    let result = match engine {
        None => Err("not connected to the engine".to_owned()),
        Some(engine) => {
            let request = FollowOutputRequest {
                run_id: run_id.clone(),
                from,
                ..Default::default()
            };
            match call(engine.runs().follow_output(request)).await {
                Err(e) => Err(status_words(&e)),
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(chunk)) => {
                            let msg = Msg::OutputChunk {
                                run_id: run_id.clone(),
                                chunk,
                            };
                            if results.send(msg).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(status_words(&e)),
                    }
                },
            }
        }
    };
    let _ = results.send(Msg::OutputEnded { run_id, result });
}

/// The message a command's failure makes, without a call.
fn failed(cmd: Cmd, status: tonic::Status) -> Option<Msg> {
    let why = status_words(&status);
    Some(match cmd {
        Cmd::Change { change, .. } => Msg::Done {
            change,
            result: Err(status),
        },
        Cmd::FetchOutput { run_id } => Msg::Output {
            run_id,
            result: Err(why),
        },
        Cmd::FetchTimeline { run_id } => Msg::Timeline {
            run_id,
            result: Err(why),
        },
        Cmd::FetchRun { run_id } => Msg::Run {
            run_id,
            result: Err(why),
        },
        Cmd::FetchEvents { .. } => Msg::Backfill(Err(why)),
        Cmd::Refresh => Msg::Refreshed(Err(why)),
        Cmd::Quit | Cmd::Resync | Cmd::Copy { .. } | Cmd::FollowOutput { .. } | Cmd::StopOutput => {
            return None;
        }
    })
}

/// Why a run could not be read, in words: a run the engine does not know
/// is most likely one its retention pruned.
fn run_words(id: &str, status: &tonic::Status) -> String {
    if status.code() == tonic::Code::NotFound {
        format!("the engine has no run {id} (runs past the engine's [retention] are pruned)")
    } else {
        status_words(status)
    }
}

async fn list_events(
    engine: &Engine,
    after_seq: u64,
    limit: u32,
    run_id: String,
) -> Result<Vec<opsdeck_proto::v1::Event>, tonic::Status> {
    let request = ListEventsRequest {
        after_seq,
        limit,
        run_id,
        ..ListEventsRequest::default()
    };
    call(engine.events().list_events(request))
        .await
        .map(|r| r.events)
}

/// Figures for measuring the console, written every 10 s to the file
/// named by `OPSDECK_CONSOLE_STATS`: frames drawn and their render time,
/// bytes written to the terminal, events applied and the time from an
/// event's commit in the engine to the frame that showed it.
struct Stats {
    file: std::fs::File,
    bytes: Arc<AtomicU64>,
    bytes_at_last: u64,
    since: std::time::Instant,
    frames: u64,
    render_us: Vec<u64>,
    events: u64,
    /// The oldest event not yet drawn: its time in the engine, and when
    /// it arrived here.
    undrawn_since_ms: Option<i64>,
    undrawn_arrived: Option<std::time::Instant>,
    latency_ms: Vec<i64>,
    /// From arrival to frame: the console's own share.
    here_us: Vec<i64>,
    ticks: u64,
}

impl Stats {
    fn from_env(bytes: Arc<AtomicU64>) -> Option<Self> {
        let path = std::env::var_os("OPSDECK_CONSOLE_STATS")?;
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(Self {
            file,
            bytes,
            bytes_at_last: 0,
            since: std::time::Instant::now(),
            frames: 0,
            render_us: Vec::new(),
            events: 0,
            undrawn_since_ms: None,
            undrawn_arrived: None,
            latency_ms: Vec::new(),
            here_us: Vec::new(),
            ticks: 0,
        })
    }

    fn event(&mut self, at_ms: i64) {
        self.events += 1;
        self.undrawn_since_ms.get_or_insert(at_ms);
        self.undrawn_arrived
            .get_or_insert_with(std::time::Instant::now);
    }

    fn drawn(&mut self, took: Duration) {
        self.frames += 1;
        self.render_us
            .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        if let Some(at) = self.undrawn_since_ms.take() {
            self.latency_ms.push(now_ms() - at);
        }
        if let Some(arrived) = self.undrawn_arrived.take() {
            self.here_us
                .push(i64::try_from(arrived.elapsed().as_micros()).unwrap_or(i64::MAX));
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        if !self.ticks.is_multiple_of(10) {
            return;
        }
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let pct = |v: &mut Vec<i64>, p: usize| -> i64 {
            v.sort_unstable();
            v.get(v.len().saturating_sub(1) * p / 100)
                .copied()
                .unwrap_or(0)
        };
        let mut render: Vec<i64> = self
            .render_us
            .iter()
            .map(|v| i64::try_from(*v).unwrap_or(i64::MAX))
            .collect();
        let line = format!(
            "secs={secs:.1} frames={} bytes={} bytes_per_sec={:.0} events={} events_per_sec={:.0} \
             render_us_p50={} render_us_p99={} latency_ms_p50={} latency_ms_p99={} latency_ms_max={} \
             arrival_to_frame_us_p50={} arrival_to_frame_us_p99={}\n",
            self.frames,
            bytes - self.bytes_at_last,
            (bytes - self.bytes_at_last) as f64 / secs,
            self.events,
            self.events as f64 / secs,
            pct(&mut render, 50),
            pct(&mut render, 99),
            pct(&mut self.latency_ms, 50),
            pct(&mut self.latency_ms, 99),
            self.latency_ms.last().copied().unwrap_or(0),
            pct(&mut self.here_us, 50),
            pct(&mut self.here_us, 99),
        );
        let _ = self.file.write_all(line.as_bytes());
        self.bytes_at_last = bytes;
        self.since = std::time::Instant::now();
        self.frames = 0;
        self.render_us.clear();
        self.events = 0;
        self.latency_ms.clear();
        self.here_us.clear();
    }
}
