//! Running the `tasklane` client as a subprocess: one-shot commands with a bounded run time,
//! a long-running `task watch` read line by line with deadlines, and a server on a fixed port
//! that can be restarted under a connected client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const TEST_CLOCK: &[(&str, &str)] = &[("TASKLANE_TEST_CLOCK", "1")];

/// How long one command may take before the test fails (generous: 2 cores, many builders).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long a watched event may take to appear.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

const BIN: &str = env!("CARGO_BIN_EXE_tasklane");

/// A client command that ran to its end.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The client binary pointed at one server, with no credentials or settings from the
/// environment the tests run in.
fn command(url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("TASKLANE_URL", url)
        .env("NO_COLOR", "1")
        .env_remove("TASKLANE_TOKEN")
        .env_remove("TASKLANE_SESSION_ID")
        .env_remove("TASKLANE_DATABASE_URL")
        .env_remove("TASKLANE_TEST_CLOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        // If the test process dies, take the client with it.
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

pub struct Cli {
    url: String,
}

impl Cli {
    pub fn new(url: &str) -> Cli {
        Cli {
            url: url.to_string(),
        }
    }

    pub async fn run<S: AsRef<str>>(&self, args: &[S]) -> Ran {
        self.run_env(args, &[]).await
    }

    pub async fn run_env<S: AsRef<str>>(&self, args: &[S], env: &[(&str, &str)]) -> Ran {
        let mut cmd = command(&self.url);
        cmd.args(args.iter().map(|a| a.as_ref()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let what: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        tokio::task::spawn_blocking(move || run_bounded(cmd, &what))
            .await
            .expect("command thread")
    }

    /// Runs a command that must succeed.
    pub async fn ok<S: AsRef<str>>(&self, args: &[S]) -> Ran {
        let out = self.run(args).await;
        let what: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
        assert_eq!(out.code, 0, "tasklane {what:?}: {out:?}");
        out
    }
}

fn run_bounded(mut cmd: Command, what: &[String]) -> Ran {
    let mut child = cmd.spawn().expect("spawn tasklane");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let pid = child.id() as i32;
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = match exited.recv_timeout(COMMAND_DEADLINE) {
        Ok(status) => status.expect("wait for tasklane"),
        Err(_) => {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            panic!("tasklane {what:?} did not finish within {COMMAND_DEADLINE:?}");
        }
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// `GET` a path and return the body exactly as sent.
pub async fn raw_get(base: &str, path: &str) -> String {
    let response = reqwest::get(format!("{base}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.text().await.expect("body")
}

/// A loopback URL nothing listens on (the port was just free).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The sequence number at the start of a `task watch` line (`#12 …`).
pub fn sequence_of(line: &str) -> i64 {
    line.strip_prefix('#')
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an event line: {line:?}"))
}

/// A client that keeps running (`task watch`), its stdout read line by line as it is printed.
pub struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
}

impl Watch {
    pub fn spawn(url: &str, args: &[&str]) -> Watch {
        let mut child = command(url).args(args).spawn().expect("spawn tasklane");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Watch {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The next line printed, waiting at most `LINE_DEADLINE` for it.
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(LINE_DEADLINE) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(_) => panic!(
                "no line within {LINE_DEADLINE:?}; so far: {:?}; stderr: {}",
                self.seen,
                self.stderr()
            ),
        }
    }

    /// Lines up to and including the first that contains `needle`.
    pub fn lines_until(&mut self, needle: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.next_line();
            let found = line.contains(needle);
            lines.push(line);
            if found {
                return lines;
            }
        }
    }

    pub fn line_containing(&mut self, needle: &str) -> String {
        self.lines_until(needle).pop().expect("one line at least")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait for watch").is_none()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on a port chosen once, so that a client can reconnect to it after a restart.
pub struct FixedPortServer {
    pub base_url: String,
    listen: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl FixedPortServer {
    pub fn start() -> FixedPortServer {
        let dir = tempfile::Builder::new()
            .prefix("tasklane-cli-test-")
            .tempdir()
            .expect("temp dir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let listen = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut srv = FixedPortServer {
            base_url: format!("http://{listen}"),
            listen,
            dir,
            child: None,
        };
        srv.spawn();
        srv
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--database")
            .arg(format!(
                "sqlite://{}",
                self.dir.path().join("tasklane.db").display()
            ))
            .env("RUST_LOG", "warn")
            .env_remove("TASKLANE_TEST_CLOCK")
            .env_remove("TASKLANE_AUTH")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn tasklane serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(LINE_DEADLINE)
            .expect("server start-up line");
        assert!(
            line.starts_with("tasklane listening on "),
            "server did not start: {line:?}"
        );
        self.child = Some(child);
    }

    /// SIGKILL, then a new server on the same address and database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FixedPortServer {
    fn drop(&mut self) {
        self.kill();
    }
}
