//! A `tasklane serve` child process on loopback: start, SIGKILL, restart on the same address, and
//! its CPU time and peak memory read from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Served {
    child: Child,
    bin: String,
    database: String,
    /// `127.0.0.1:port`, kept across restarts so clients keep their base URL.
    pub listen: String,
    pub url: String,
}

impl Served {
    /// Starts `bin serve` on `database` (a `sqlite://` or `postgres://` URL) at `listen`
    /// (`127.0.0.1:0` picks a free port) and waits for its listening line.
    pub fn start(bin: &str, database: &str, listen: &str) -> Served {
        assert!(
            listen.starts_with("127.0.0.1:"),
            "the benchmark only ever targets 127.0.0.1"
        );
        let mut child = Command::new(bin)
            .args(["serve", "--listen", listen, "--database", database])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e} (run cargo build --release first)"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("{bin} did not start: {line:?}"))
            .to_string();
        Served {
            child,
            bin: bin.to_string(),
            database: database.to_string(),
            listen: url.trim_start_matches("http://").to_string(),
            url,
        }
    }

    /// SIGKILL: no drain, no shutdown hooks, as a power cut is to the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same database and address.
    pub fn restart(&mut self) {
        let again = Served::start(&self.bin, &self.database, &self.listen);
        *self = again;
    }

    /// User + system CPU seconds the server has used so far (/proc/<pid>/stat).
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.child.id()).unwrap_or(f64::NAN)
    }

    /// Peak resident set size in MiB (VmHWM from /proc/<pid>/status).
    pub fn peak_rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

/// User + system CPU seconds process `pid` has used so far (/proc/<pid>/stat).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

/// USER_HZ: 100 on every Linux target this runs on; `getconf CLK_TCK` confirms it.
fn clock_ticks_per_second() -> f64 {
    100.0
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill9();
    }
}
