//! The SQLite file as the operator sees it: one server per database (the lock file beside it),
//! while the `tasklane token` CLI still works on a served database.
mod common;
mod support_agent;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support_agent::*;

/// Starts `tasklane serve` on `database` and waits for it to exit: (status, stdout, stderr).
fn second_server(database: &str) -> (std::process::ExitStatus, String, String) {
    let mut second = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
        .env("RUST_LOG", "warn")
        .env_remove("TASKLANE_DATABASE_URL")
        .env_remove("TASKLANE_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a second server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server on the same database kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    second
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
}

#[tokio::test]
async fn a_second_server_on_a_served_database_refuses_to_start() {
    if on_postgres() {
        return; // servers sharing a PostgreSQL database are one service (tests/cluster.rs)
    }
    let srv = Server::start();
    let id = srv.task("served").await;

    let (status, stdout, stderr) = second_server(srv.database());
    assert!(!status.success(), "exit status {status:?}");
    assert!(!stdout.contains("listening"), "it must not serve: {stdout}");
    let lock = srv.dir().join("tasklane.db.lock");
    assert!(
        stderr.contains(&lock.display().to_string()) && stderr.contains("already served"),
        "the refusal names the lock file: {stderr}"
    );

    // The first server is unaffected, and the token CLI still manages the served database.
    assert_eq!(srv.get(&format!("/api/tasks/{id}")).await.0, StatusCode::OK);
    let out = token_cli(srv.database(), &["list"]);
    assert!(
        out.status.success(),
        "token list on a served database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    create_token(srv.database(), "viewer", "while-served");

    // Another name for the same file is the same database.
    let link = srv.dir().join("another-name.db");
    std::os::unix::fs::symlink(srv.dir().join("tasklane.db"), &link).unwrap();
    let (status, stdout, stderr) = second_server(link.to_str().unwrap());
    assert!(!status.success(), "through a symlink: {status:?}");
    assert!(!stdout.contains("listening"), "it must not serve: {stdout}");
    assert!(stderr.contains("already served"), "{stderr}");
}
