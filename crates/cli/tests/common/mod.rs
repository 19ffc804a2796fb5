//! Test harness for Tasklane's black-box HTTP suite.
//!
//! `Server::start()` spawns the real `tasklane` binary on a loopback port with a private database and
//! waits for its one start-up line. `Api` is a tiny JSON client; `Server` derefs to it. Every call
//! checks the invariants that hold for every response (no 500, no raw `claim_token`, error bodies have
//! `error` and `code`), so individual tests only assert what they are about.
//!
//! Backend choice lives in exactly one place: [`database_url`]. By default each server gets an SQLite
//! file inside its temporary directory; with `TASKLANE_TEST_DATABASE_URL` set to a PostgreSQL URL,
//! each server gets a fresh database on that PostgreSQL server, dropped when the server is.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use reqwest::{Method, StatusCode};
pub use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Backend selection (the only place that knows which database a test server uses).
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL server the suite runs against, if `TASKLANE_TEST_DATABASE_URL` names one (any
/// database on it: the harness connects there only to create and drop the servers' databases).
fn postgres_admin_url() -> Option<String> {
    std::env::var("TASKLANE_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Whether the suite runs against PostgreSQL.
pub fn on_postgres() -> bool {
    postgres_admin_url().is_some()
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Runs each statement on the test PostgreSQL server, one at a time (`CREATE DATABASE` refuses
/// to run in the implicit transaction of a multi-statement query). On a thread of its own: the
/// blocking client cannot run inside the async tests' runtime.
fn admin_execute(url: &str, statements: Vec<String>) -> Result<(), String> {
    let url = url.to_string();
    let text = |e: postgres::Error| match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(text)?;
        for sql in &statements {
            client.batch_execute(sql).map_err(text)?;
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err("admin connection panicked".to_string()))
}

/// The `--database` URL for a fresh server whose scratch directory is `dir`: a new SQLite file
/// in it, or a new PostgreSQL database named after it.
pub fn database_url(dir: &Path) -> String {
    let Some(admin) = postgres_admin_url() else {
        return format!("sqlite://{}", dir.join("tasklane.db").display());
    };
    let db = postgres_database_name(dir);
    admin_execute(
        &admin,
        vec![
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ],
    )
    .unwrap_or_else(|e| panic!("cannot create test database {db}: {e}"));
    with_database(&admin, &db)
}

fn postgres_database_name(dir: &Path) -> String {
    let unique = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        .to_ascii_lowercase();
    format!("tl_{unique}")
}

/// Drops the PostgreSQL database of the server whose scratch directory is `dir` (SQLite: its
/// file goes with the directory).
fn drop_database(dir: &Path) {
    if let Some(admin) = postgres_admin_url() {
        let db = postgres_database_name(dir);
        let _ = admin_execute(
            &admin,
            vec![format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const LISTEN_PREFIX: &str = "tasklane listening on ";

pub struct Server {
    pub api: Api,
    dir: tempfile::TempDir,
    db_url: String,
    child: Option<Child>,
    stdout_thread: Option<JoinHandle<()>>,
    extra_stdout: Arc<Mutex<Vec<String>>>,
    /// The start-up line as printed.
    pub listen_line: String,
    extra_env: Vec<(String, String)>,
    /// Soft and hard open-file limit of the server process, when set.
    fd_limit: Option<u64>,
    /// The server's database is dropped with it (false for the further nodes of a cluster).
    owns_database: bool,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    /// Starts a server on a fresh database.
    pub fn start() -> Server {
        Self::start_with_env(&[])
    }

    /// Starts a server on a fresh database with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Self::start_with(env, None)
    }

    /// As `start_with_env`, with the server's open-file limit (soft and hard) set to `fd_limit`.
    pub fn start_with(env: &[(&str, &str)], fd_limit: Option<u64>) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("tasklane-test-")
            .tempdir()
            .expect("create temp dir");
        let db_url = database_url(dir.path());
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut srv = Server {
            api: Api::new(String::new()),
            dir,
            db_url,
            child: None,
            stdout_thread: None,
            extra_stdout: Arc::new(Mutex::new(Vec::new())),
            listen_line: String::new(),
            extra_env,
            fd_limit,
            owns_database: true,
        };
        srv.spawn();
        srv
    }

    /// Starts another server on this server's database (PostgreSQL: a second node of one
    /// service), with the same environment.
    pub fn another_node(&self) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("tasklane-test-node-")
            .tempdir()
            .expect("create temp dir");
        let mut srv = Server {
            api: Api::new(String::new()),
            dir,
            db_url: self.db_url.clone(),
            child: None,
            stdout_thread: None,
            extra_stdout: Arc::new(Mutex::new(Vec::new())),
            listen_line: String::new(),
            extra_env: self.extra_env.clone(),
            fd_limit: None,
            owns_database: false,
        };
        srv.spawn();
        srv
    }

    pub fn base_url(&self) -> &str {
        &self.api.base
    }

    pub fn database(&self) -> &str {
        &self.db_url
    }

    /// PostgreSQL: ends every connection to this server's database, as a database restart or a
    /// network failure would (the test's own admin connection goes to another database).
    pub fn drop_database_connections(&self) {
        let admin = postgres_admin_url().expect("only on PostgreSQL");
        let db = self
            .db_url
            .rsplit('/')
            .next()
            .and_then(|tail| tail.split('?').next())
            .expect("a database name")
            .to_string();
        admin_execute(
            &admin,
            vec![format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            )],
        )
        .unwrap_or_else(|e| panic!("cannot end the connections to {db}: {e}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's stderr so far (all incarnations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("server is not running").id() as i32
    }

    /// Lines the server printed on stdout after its start-up line (current incarnation).
    pub fn extra_stdout_lines(&self) -> Vec<String> {
        self.extra_stdout.lock().unwrap().clone()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasklane"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(&self.db_url)
            .env(
                "RUST_LOG",
                std::env::var("TASKLANE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("TASKLANE_TEST_CLOCK")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            let fd_limit = self.fd_limit;
            // If the test process dies, take the server with it.
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(n) = fd_limit {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn tasklane binary");
        let stdout = child.stdout.take().expect("child stdout");

        let (tx, rx) = mpsc::channel::<Result<String, String>>();
        let extra = Arc::new(Mutex::new(Vec::new()));
        self.extra_stdout = extra.clone();
        let handle = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            match reader.read_line(&mut first) {
                Ok(0) => {
                    let _ = tx.send(Err("server closed stdout before its start-up line".into()));
                    return;
                }
                Ok(_) => {
                    let _ = tx.send(Ok(first.trim_end_matches(['\r', '\n']).to_string()));
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("reading server stdout: {e}")));
                    return;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            let mut buf = String::new();
            loop {
                buf.clear();
                match reader.read_line(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => extra
                        .lock()
                        .unwrap()
                        .push(buf.trim_end_matches(['\r', '\n']).to_string()),
                }
            }
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        });

        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!("{e} (exit status {status:?}); server log:\n{}", self.log());
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server printed no start-up line within {STARTUP_TIMEOUT:?}; server log:\n{}",
                    self.log()
                );
            }
        };
        let base = line
            .strip_prefix(LISTEN_PREFIX)
            .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"))
            .trim()
            .trim_end_matches('/')
            .to_string();
        assert!(
            base.starts_with("http://127.0.0.1:"),
            "start-up line must name the loopback address: {line:?}"
        );
        let port: u16 = base["http://127.0.0.1:".len()..]
            .parse()
            .unwrap_or_else(|_| panic!("bad port in start-up line {line:?}"));
        assert_ne!(port, 0, "server must print the port it actually bound");
        self.listen_line = line;
        self.api = Api::new(base);
        self.child = Some(child);
        self.stdout_thread = Some(handle);
    }

    /// SIGKILL the server (no chance to clean up) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if let Some(h) = self.stdout_thread.take() {
            let _ = h.join();
        }
    }

    /// SIGTERM the server and wait (bounded) for it to exit; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match child.try_wait().expect("wait for server") {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "server did not exit within 30 s of SIGTERM; log:\n{}",
                        self.log()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if let Some(h) = self.stdout_thread.take() {
            let _ = h.join();
        }
        status
    }

    /// Kills the server if it is still running (SIGKILL) and starts a new one on the same database.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if self.owns_database {
            drop_database(self.dir.path());
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = if log.len() > 6000 {
                let mut start = log.len() - 6000;
                while !log.is_char_boundary(start) {
                    start += 1;
                }
                log[start..].to_string()
            } else {
                log
            };
            if !tail.trim().is_empty() {
                eprintln!(
                    "---- tasklane server log (tail) ----\n{tail}\n---- end of server log ----"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

/// Headers that make the caller the agent session `sid`.
pub fn agent(sid: &str) -> Vec<(&'static str, String)> {
    vec![("X-AGH-Session-ID", sid.to_string())]
}

pub fn no_headers() -> Vec<(&'static str, String)> {
    Vec::new()
}

impl Api {
    pub fn new(base: String) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build http client");
        Api { base, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends one request; `body` None sends no body at all. Returns the status and the JSON body
    /// (`Null` for an empty body, a JSON string holding the text for a non-JSON body).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut req = self.client.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        Ok((status, parse_body(&bytes)))
    }

    /// As `try_call`, but panics on transport errors and checks the universal invariants.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let what = format!("{method} {path}");
        let (status, value) = self
            .try_call(method, path, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{what}: transport error: {e}"));
        check_invariants(&what, status, &value);
        (status, value)
    }

    /// Sends raw bytes with an optional content type.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let what = format!("{method} {path} (raw body, {} bytes)", body.len());
        let mut req = self.client.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: transport error: {e}"));
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
        let value = parse_body(&bytes);
        check_invariants(&what, status, &value);
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// POST with no body at all (no content type either), like `curl -X POST`.
    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, None, &[]).await
    }

    pub async fn post_as(&self, sid: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body), &agent(sid)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None, &[]).await
    }

    // ---- domain helpers (each asserts the success status) -------------------------------

    /// `POST /api/tasks`; returns the `task` object.
    pub async fn create_task(&self, body: Value) -> Value {
        let (s, v) = self.post("/api/tasks", body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "create task {body}: {v}");
        v["task"].clone()
    }

    /// Creates a ready global task and returns its id.
    pub async fn task(&self, title: &str) -> String {
        id(&self
            .create_task(json!({"scope": "global", "title": title}))
            .await)
    }

    /// Creates a global task with extra fields merged into the body; returns the task.
    pub async fn task_with(&self, title: &str, extra: Value) -> Value {
        let mut body = json!({"scope": "global", "title": title});
        merge(&mut body, extra);
        self.create_task(body).await
    }

    pub async fn create_child(&self, parent: &str, body: Value) -> Value {
        let (s, v) = self
            .post(&format!("/api/tasks/{parent}/children"), body.clone())
            .await;
        assert_eq!(
            s,
            StatusCode::CREATED,
            "create child of {parent} {body}: {v}"
        );
        v["task"].clone()
    }

    pub async fn child(&self, parent: &str, title: &str) -> String {
        id(&self
            .create_child(parent, json!({"scope": "global", "title": title}))
            .await)
    }

    /// `GET /api/tasks/{id}`; returns the detail object (`{summary, task, ...}`).
    pub async fn detail(&self, task_id: &str) -> Value {
        let (s, v) = self.get(&format!("/api/tasks/{task_id}")).await;
        assert_eq!(s, StatusCode::OK, "get task {task_id}: {v}");
        v["task"].clone()
    }

    /// The task payload of the detail view.
    pub async fn get_task(&self, task_id: &str) -> Value {
        self.detail(task_id).await["task"].clone()
    }

    pub async fn status_of(&self, task_id: &str) -> String {
        str_of(&self.get_task(task_id).await, "status")
    }

    /// `GET /api/tasks?<query>`; returns the `tasks` array.
    pub async fn list(&self, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            "/api/tasks".to_string()
        } else {
            format!("/api/tasks?{query}")
        };
        let (s, v) = self.get(&path).await;
        assert_eq!(s, StatusCode::OK, "list {path}: {v}");
        v["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("list {path}: `tasks` must be an array: {v}"))
            .clone()
    }

    pub async fn list_ids(&self, query: &str) -> Vec<String> {
        self.list(query).await.iter().map(id).collect()
    }

    /// Every page of a list: follows `next_cursor` from `path` (which may carry its own query)
    /// until the last page; returns each page's items under `key`.
    pub async fn pages(&self, path: &str, key: &str) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_string(),
            };
            let (s, v) = self.get(&url).await;
            assert_eq!(s, StatusCode::OK, "{url}: {v}");
            pages.push(v[key].as_array().cloned().unwrap_or_default());
            match v.get("next_cursor") {
                None => return pages,
                Some(c) => cursor = Some(c.as_str().expect("next_cursor is a string").to_string()),
            }
            assert!(pages.len() < 100_000, "{path}: the walk does not end");
        }
    }

    /// The ids of every task of `GET /api/tasks?<query>`, across all pages.
    pub async fn list_all_ids(&self, query: &str) -> Vec<String> {
        let pages = self.pages(&format!("/api/tasks?{query}"), "tasks").await;
        pages.concat().iter().map(id).collect()
    }

    /// `POST /api/tasks/{id}/runs`; returns the run.
    pub async fn enqueue(&self, task_id: &str) -> Value {
        let (s, v) = self
            .post(&format!("/api/tasks/{task_id}/runs"), json!({}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "enqueue run of {task_id}: {v}");
        v["run"].clone()
    }

    pub async fn claim(&self, run_id: &str) -> Value {
        let (s, v) = self
            .post(&format!("/api/task-runs/{run_id}/claim"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "claim {run_id}: {v}");
        v["run"].clone()
    }

    pub async fn start_run(&self, run_id: &str) -> Value {
        let (s, v) = self
            .post(&format!("/api/task-runs/{run_id}/start"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "start run {run_id}: {v}");
        v["run"].clone()
    }

    pub async fn complete_run(&self, run_id: &str, result: Option<Value>) -> Value {
        let body = match result {
            Some(r) => json!({ "result": r }),
            None => json!({}),
        };
        let (s, v) = self
            .post(&format!("/api/task-runs/{run_id}/complete"), body)
            .await;
        assert_eq!(s, StatusCode::OK, "complete run {run_id}: {v}");
        v["run"].clone()
    }

    pub async fn fail_run(&self, run_id: &str, error: &str) -> Value {
        let (s, v) = self
            .post(
                &format!("/api/task-runs/{run_id}/fail"),
                json!({ "error": error }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "fail run {run_id}: {v}");
        v["run"].clone()
    }

    pub async fn cancel_run(&self, run_id: &str) -> Value {
        let (s, v) = self
            .post(&format!("/api/task-runs/{run_id}/cancel"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "cancel run {run_id}: {v}");
        v["run"].clone()
    }

    /// Enqueue + claim + start: returns the id of a `running` run.
    pub async fn running_run(&self, task_id: &str) -> String {
        let run = self.enqueue(task_id).await;
        let rid = id(&run);
        self.claim(&rid).await;
        let r = self.start_run(&rid).await;
        assert_eq!(r["status"], "running", "start run: {r}");
        rid
    }

    /// Runs the task to completion through the operator path; returns the run id.
    pub async fn complete_task(&self, task_id: &str) -> String {
        let rid = self.running_run(task_id).await;
        self.complete_run(&rid, None).await;
        rid
    }

    /// Runs the task and fails the run; returns the run id.
    pub async fn fail_task_once(&self, task_id: &str, error: &str) -> String {
        let rid = self.running_run(task_id).await;
        self.fail_run(&rid, error).await;
        rid
    }

    pub async fn get_run(&self, run_id: &str) -> Value {
        let (s, v) = self.get(&format!("/api/task-runs/{run_id}")).await;
        assert_eq!(s, StatusCode::OK, "get run {run_id}: {v}");
        v["run"]["run"].clone()
    }

    pub async fn runs(&self, task_id: &str, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            format!("/api/tasks/{task_id}/runs")
        } else {
            format!("/api/tasks/{task_id}/runs?{query}")
        };
        let (s, v) = self.get(&path).await;
        assert_eq!(s, StatusCode::OK, "list runs {path}: {v}");
        v["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: `runs` must be an array: {v}"))
            .clone()
    }

    /// `POST /api/tasks/{id}/dependencies`; returns the detail.
    pub async fn add_dep(&self, task_id: &str, blocker: &str) -> Value {
        let (s, v) = self
            .post(
                &format!("/api/tasks/{task_id}/dependencies"),
                json!({ "depends_on_task_id": blocker }),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "add dependency {task_id} -> {blocker}: {v}"
        );
        v["task"].clone()
    }

    /// The task's events from the detail view, as served (newest first).
    pub async fn events_newest_first(&self, task_id: &str) -> Vec<Value> {
        self.detail(task_id).await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The task's events oldest first (the detail view reversed).
    pub async fn events(&self, task_id: &str) -> Vec<Value> {
        let mut e = self.events_newest_first(task_id).await;
        e.reverse();
        e
    }

    /// `GET /api/tasks/{id}/timeline?<query>`; returns the items.
    pub async fn timeline(&self, task_id: &str, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            format!("/api/tasks/{task_id}/timeline")
        } else {
            format!("/api/tasks/{task_id}/timeline?{query}")
        };
        let (s, v) = self.get(&path).await;
        assert_eq!(s, StatusCode::OK, "timeline {path}: {v}");
        v["timeline"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: `timeline` must be an array: {v}"))
            .clone()
    }

    /// The event types of the task, oldest first (from the detail view, which lists events newest
    /// first in sequence order).
    pub async fn event_types(&self, task_id: &str) -> Vec<String> {
        self.events(task_id)
            .await
            .iter()
            .map(|e| str_of(e, "event_type"))
            .collect()
    }

    /// The task's `latest_event_seq` (from the detail view).
    pub async fn latest_seq(&self, task_id: &str) -> i64 {
        self.get_task(task_id).await["latest_event_seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("task {task_id} has no integer latest_event_seq"))
    }
}

// ---------------------------------------------------------------------------------------------
// Invariants and small JSON helpers
// ---------------------------------------------------------------------------------------------

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Checks that hold for every response of the API.
pub fn check_invariants(what: &str, status: StatusCode, body: &Value) {
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{what}: server error {status}: {body}"
    );
    if let Some(path) = find_key(body, "claim_token", "") {
        panic!("{what}: response contains a raw claim_token at {path}: {body}");
    }
    if status.is_client_error() {
        assert_error_shape(what, status, body);
    }
}

fn assert_error_shape(what: &str, status: StatusCode, body: &Value) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {status} body must be a JSON object: {body}"));
    let msg = obj.get("error").and_then(Value::as_str);
    assert!(
        msg.is_some_and(|m| !m.trim().is_empty()),
        "{what}: {status} body needs a non-empty `error` string: {body}"
    );
    let code = obj.get("code").and_then(Value::as_str);
    assert!(
        code.is_some_and(|c| !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')),
        "{what}: {status} body needs a snake_case `code`: {body}"
    );
}

/// Path of the first object key equal to `key` (case-insensitive), at any depth.
pub fn find_key(v: &Value, key: &str, path: &str) -> Option<String> {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{path}.{k}");
                if k.eq_ignore_ascii_case(key) {
                    return Some(p);
                }
                if let Some(found) = find_key(child, key, &p) {
                    return Some(found);
                }
            }
            None
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, child)| find_key(child, key, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Asserts an error response: status and machine code.
#[track_caller]
pub fn assert_err(resp: &(StatusCode, Value), status: u16, code: &str) {
    let (s, v) = resp;
    assert_eq!(s.as_u16(), status, "expected {status} {code}, got {s}: {v}");
    assert_eq!(
        v["code"], code,
        "expected code {code} (status {status}), got {v}"
    );
}

#[track_caller]
pub fn assert_status(resp: &(StatusCode, Value), status: u16) {
    let (s, v) = resp;
    assert_eq!(s.as_u16(), status, "expected {status}, got {s}: {v}");
}

pub fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("object has no string id: {v}"))
        .to_string()
}

#[track_caller]
pub fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` must be a string in {v}"))
        .to_string()
}

/// Asserts that `key` is omitted from the object (not even `null`).
#[track_caller]
pub fn assert_absent(v: &Value, key: &str) {
    assert!(
        v.as_object().is_some_and(|m| !m.contains_key(key)),
        "`{key}` must be omitted from {v}"
    );
}

#[track_caller]
pub fn assert_present(v: &Value, key: &str) {
    assert!(
        v.get(key).is_some_and(|x| !x.is_null()),
        "`{key}` must be present in {v}"
    );
}

/// Merges the keys of `extra` (an object) into `base` (an object).
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// Finds the only event of the given type; panics if there is not exactly one.
#[track_caller]
pub fn only_event<'a>(events: &'a [Value], event_type: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {event_type} event, found {}: {}",
        found.len(),
        Value::Array(events.to_vec())
    );
    found[0]
}

pub fn count_events(events: &[Value], event_type: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .count()
}

/// True for `YYYY-MM-DDTHH:MM:SS.ffffffZ` (RFC 3339 UTC with microseconds) or the zero time.
pub fn is_micros_utc(s: &str) -> bool {
    if s == "0001-01-01T00:00:00Z" {
        return true;
    }
    let b = s.as_bytes();
    if b.len() != 27 {
        return false;
    }
    let pattern = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    b.iter().zip(pattern.iter()).all(|(c, p)| match p {
        b'd' => c.is_ascii_digit(),
        other => c == other,
    })
}

/// A JSON string of roughly `n` bytes.
pub fn blob(n: usize) -> String {
    "x".repeat(n)
}

pub fn owner(kind: &str, r: &str) -> Value {
    json!({"kind": kind, "ref": r})
}

pub fn human() -> Value {
    owner("human", "local-user")
}

pub fn http_origin(action: &str) -> Value {
    json!({"kind": "http", "ref": format!("tasks.{action}")})
}
