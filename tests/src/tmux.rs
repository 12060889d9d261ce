//! The real console in a real terminal: a tmux server of its own per test.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A tmux server of its own (`-L`), so that the test neither sees nor
/// disturbs anyone else's sessions; killed on drop.
pub struct Tmux {
    server: String,
}

const SESSION: &str = "console";

impl Tmux {
    /// Starts `program args` in a detached `width`×`height` session. The
    /// pane stays after the program ends, with its exit status, so that a
    /// crash shows on the screen instead of the pane vanishing.
    pub fn start(program: &Path, args: &[&str], width: u16, height: u16) -> Self {
        static SERVERS: AtomicU32 = AtomicU32::new(0);
        let server = format!(
            "opsdeck-e2e-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Self { server };
        let mut line = vec![shell_quote(&program.display().to_string())];
        line.extend(args.iter().map(|a| shell_quote(a)));
        let script = format!(
            "{}; echo \"[console exited: $?]\"; sleep 600",
            line.join(" ")
        );
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "sh",
            "-c",
            &script,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// The server starts with the first command, in this environment: no
    /// `OPSDECK_*` from the caller's (a token would go to the engine).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.server, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPSDECK_") {
                cmd.env_remove(&name);
            }
        }
        cmd.output()
            .expect("run tmux (is it installed? apt-get install tmux)")
    }

    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", SESSION]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys as tmux names them (`Tab`, `Enter`, `Escape`, or a character).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend(keys);
        assert!(self.run(&args).status.success(), "send-keys {keys:?}");
    }

    /// Text typed literally.
    pub fn text(&self, text: &str) {
        assert!(
            self.run(&["send-keys", "-t", SESSION, "-l", text])
                .status
                .success()
        );
    }

    pub fn resize(&self, width: u16, height: u16) {
        let out = self.run(&[
            "resize-window",
            "-t",
            SESSION,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        assert!(
            out.status.success(),
            "resize-window: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls the screen until `pred` holds; fails with the last screen (and
    /// the engine's logs) when `timeout` passes first.
    pub async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                !screen.contains("[console exited"),
                "the console exited while waiting for {what}:\n{screen}"
            );
            if Instant::now() > deadline {
                panic!("the console did not show {what} within {timeout:?}; the screen:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- the console's last screen -----\n{}", self.screen());
        }
        let _ = self.run(&["kill-server"]);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
