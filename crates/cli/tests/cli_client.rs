//! The command-line client, run as a subprocess against a real server: every command group,
//! `-o json` equal to the API's body, exit codes, live `task watch`, shell completions.
mod cli_support;
mod common;

use cli_support::*;
use common::*;

fn task_id(out: &Ran) -> String {
    out.json()["task"]["id"]
        .as_str()
        .expect("answer has task.id")
        .to_string()
}

fn run_id(out: &Ran) -> String {
    out.json()["run"]["id"]
        .as_str()
        .expect("answer has run.id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_life_through_the_cli() {
    let srv = Server::start_with_env(TEST_CLOCK);
    let cli = Cli::new(srv.base_url());

    let created = cli
        .ok(&[
            "task",
            "create",
            "--title",
            "Summarise the incident",
            "--priority",
            "high",
            "-o",
            "json",
        ])
        .await;
    let task = task_id(&created);
    assert_eq!(created.json()["task"]["status"], "ready");
    assert_eq!(created.json()["task"]["priority"], "high");

    let listed = cli.ok(&["task", "list"]).await;
    assert!(listed.stdout.starts_with("ID"), "{}", listed.stdout);
    assert!(listed.stdout.contains(&task), "{}", listed.stdout);
    assert!(listed.stdout.contains("just now"), "{}", listed.stdout);
    assert!(!listed.stdout.contains('\x1b'), "no colour off a terminal");

    let updated = cli
        .ok(&[
            "task",
            "update",
            &task,
            "--description",
            "disk",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(updated.json()["task"]["description"], "disk");

    let started = cli.ok(&["task", "start", &task, "-o", "json"]).await;
    let run = run_id(&started);
    assert_eq!(started.json()["run"]["status"], "queued");

    cli.ok(&["run", "claim", &run]).await;
    cli.ok(&["run", "attach", &run, "session-7"]).await;
    cli.ok(&["run", "start", &run]).await;
    let shown = cli.ok(&["run", "show", &run, "-o", "json"]).await;
    assert_eq!(shown.json()["run"]["run"]["status"], "running");
    assert_eq!(shown.json()["run"]["run"]["session_id"], "session-7");
    let human = cli.ok(&["run", "show", &run]).await;
    assert!(
        human.stdout.contains("running") && human.stdout.contains("Summarise the incident"),
        "{}",
        human.stdout
    );
    let done = cli
        .ok(&[
            "run",
            "complete",
            &run,
            "--result",
            r#"{"summary":"disk filled up"}"#,
        ])
        .await;
    assert!(done.stdout.contains("completed"), "{}", done.stdout);

    let detail = cli.ok(&["task", "show", &task, "-o", "json"]).await;
    assert_eq!(detail.json()["task"]["task"]["status"], "completed");
    let human = cli.ok(&["task", "show", &task]).await;
    for expected in [
        "Summarise the incident",
        "completed",
        "runs",
        &run,
        "task.run_completed",
    ] {
        assert!(
            human.stdout.contains(expected),
            "{expected}: {}",
            human.stdout
        );
    }

    let runs = cli.ok(&["task", "runs", &task, "-o", "json"]).await;
    assert_eq!(
        runs.json()["runs"][0]["result"],
        json!({"summary": "disk filled up"})
    );
    let timeline = cli.ok(&["task", "timeline", &task]).await;
    assert!(
        timeline.stdout.contains("task.created") && timeline.stdout.contains("task.run_completed"),
        "{}",
        timeline.stdout
    );

    // Retry, fail and cancel on a second task; a child, a dependency, a tree.
    let second = task_id(
        &cli.ok(&["task", "create", "--title", "second", "-o", "json"])
            .await,
    );
    let attempt = run_id(&cli.ok(&["task", "start", &second, "-o", "json"]).await);
    cli.ok(&["run", "claim", &attempt]).await;
    cli.ok(&["run", "start", &attempt]).await;
    cli.ok(&["run", "fail", &attempt, "--error", "boom"]).await;
    let retry = cli.ok(&["task", "retry", &second, "-o", "json"]).await;
    assert_eq!(retry.json()["run"]["attempt"], 2);
    cli.ok(&["run", "cancel", &run_id(&retry), "--reason", "enough"])
        .await;

    let child = task_id(
        &cli.ok(&[
            "task", "create", "--title", "child", "--parent", &task, "-o", "json",
        ])
        .await,
    );
    let children = cli.ok(&["task", "children", &task, "-o", "json"]).await;
    assert_eq!(children.json()["tasks"][0]["id"], child.as_str());
    let tree = cli.ok(&["task", "tree", &task]).await;
    assert!(
        tree.stdout.contains(&format!("  {child}")),
        "{}",
        tree.stdout
    );

    let blocker = task_id(
        &cli.ok(&["task", "create", "--title", "first", "-o", "json"])
            .await,
    );
    let blocked = task_id(
        &cli.ok(&["task", "create", "--title", "after", "-o", "json"])
            .await,
    );
    let dep = cli
        .ok(&["task", "deps", "add", &blocked, &blocker, "-o", "json"])
        .await;
    assert_eq!(
        dep.json()["task"]["task"]["status"],
        "blocked",
        "{}",
        dep.stdout
    );
    let undep = cli
        .ok(&["task", "deps", "rm", &blocked, &blocker, "-o", "json"])
        .await;
    assert_eq!(
        undep.json()["task"]["task"]["status"],
        "ready",
        "{}",
        undep.stdout
    );
    let human = cli.ok(&["task", "deps", "add", &blocked, &blocker]).await;
    assert!(
        human.stdout.contains("depends on") && human.stdout.contains("first"),
        "{}",
        human.stdout
    );
    let canceled = cli
        .ok(&[
            "task",
            "cancel",
            &blocked,
            "--reason",
            "no longer needed",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(canceled.json()["task"]["status"], "canceled");

    // Drafts and approvals.
    let draft = task_id(
        &cli.ok(&["task", "create", "--title", "d", "--draft", "-o", "json"])
            .await,
    );
    let published = cli.ok(&["task", "publish", &draft, "-o", "json"]).await;
    assert_eq!(published.json()["task"]["status"], "ready");
    let gated = task_id(
        &cli.ok(&[
            "task",
            "create",
            "--title",
            "g",
            "--manual-approval",
            "-o",
            "json",
        ])
        .await,
    );
    let approved = cli.ok(&["task", "approve", &gated, "-o", "json"]).await;
    assert_eq!(approved.json()["task"]["approval_state"], "approved");
    let refused = task_id(
        &cli.ok(&[
            "task",
            "create",
            "--title",
            "r",
            "--manual-approval",
            "-o",
            "json",
        ])
        .await,
    );
    let rejected = cli
        .ok(&[
            "task", "reject", &refused, "--reason", "not now", "-o", "json",
        ])
        .await;
    assert_eq!(rejected.json()["task"]["approval_state"], "rejected");
    let events = srv.events(&refused).await;
    assert_eq!(
        only_event(&events, "task.rejected")["payload"]["reason"],
        "not now"
    );

    // Observe and triage.
    let dashboard = cli.ok(&["dashboard"]).await;
    assert!(dashboard.stdout.contains("health"), "{}", dashboard.stdout);
    let inbox = cli.ok(&["inbox"]).await;
    assert!(inbox.stdout.contains("approvals"), "{}", inbox.stdout);
    for mark in ["read", "dismiss", "archive"] {
        cli.ok(&["triage", mark, &task]).await;
    }
    let triage = cli.ok(&["triage", "read", &task, "-o", "json"]).await;
    assert_eq!(triage.json()["triage"]["archived"], true);

    let doomed = task_id(
        &cli.ok(&["task", "create", "--title", "doomed", "-o", "json"])
            .await,
    );
    let deleted = cli.ok(&["task", "delete", &doomed]).await;
    assert!(deleted.stdout.contains(&doomed));
    let (status, _) = srv.get(&format!("/api/tasks/{doomed}")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_is_exactly_the_api_body() {
    let srv = Server::start_with_env(TEST_CLOCK);
    let cli = Cli::new(srv.base_url());
    let task = srv.task("compare me").await;
    let run = id(&srv.enqueue(&task).await);
    let child = srv.child(&task, "kid").await;
    for path in [
        "tasks".to_string(),
        format!("tasks/{task}"),
        format!("tasks/{task}/runs"),
        format!("tasks/{task}/timeline"),
        format!("tasks/{task}/tree"),
        format!("tasks?parent_task_id={task}"),
        format!("task-runs/{run}"),
        "observe/tasks/dashboard".to_string(),
        "observe/tasks/inbox".to_string(),
    ] {
        let args: Vec<&str> = match path.as_str() {
            "tasks" => vec!["task", "list"],
            "observe/tasks/dashboard" => vec!["dashboard"],
            "observe/tasks/inbox" => vec!["inbox"],
            p if p.starts_with("task-runs/") => vec!["run", "show", &run],
            p if p.ends_with("/runs") => vec!["task", "runs", &task],
            p if p.ends_with("/timeline") => vec!["task", "timeline", &task],
            p if p.ends_with("/tree") => vec!["task", "tree", &task],
            p if p.contains("parent_task_id") => vec!["task", "children", &task],
            _ => vec!["task", "show", &task],
        };
        let mut args = args;
        args.extend(["-o", "json"]);
        let out = cli.ok(&args).await;
        let api = raw_get(srv.base_url(), &format!("/api/{path}")).await;
        assert_eq!(
            out.stdout.trim_end(),
            api,
            "tasklane {args:?} vs GET /api/{path}"
        );
    }
    // A write's answer too: the CLI prints the body the server sent.
    let out = cli
        .ok(&[
            "task",
            "create",
            "--title",
            "w",
            "--id",
            "task-fixed",
            "-o",
            "json",
        ])
        .await;
    let api = raw_get(srv.base_url(), "/api/tasks/task-fixed").await;
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(out.json()["task"]["id"], api["task"]["task"]["id"]);
    let _ = child;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_commands_claim_heartbeat_and_finish() {
    let srv = Server::start_with_env(TEST_CLOCK);
    let cli = Cli::new(srv.base_url());
    let agent = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["agent".to_string(), "--session".into(), "worker-1".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };

    let empty = cli.run(&agent(&["next"])).await;
    assert_eq!(empty.code, 4, "no work: exit 4; {empty:?}");
    assert!(empty.stdout.is_empty());

    let rusty = srv
        .task_with("needs rust", json!({"required_capabilities": ["rust"]}))
        .await;
    let rusty = id(&rusty);
    srv.enqueue(&rusty).await;
    let without = cli.run(&agent(&["next"])).await;
    assert_eq!(
        without.code, 4,
        "a capability it does not offer: {without:?}"
    );

    let claim = cli
        .run(&agent(&["next", "--capability", "rust", "-o", "json"]))
        .await;
    assert_eq!(claim.code, 0, "{claim:?}");
    let run = claim.json()["claim"]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(claim.json()["claim"]["task"]["id"], rusty.as_str());

    let beat = cli
        .run(&agent(&["heartbeat", &run, "--lease-seconds", "600"]))
        .await;
    assert_eq!(beat.code, 0, "{beat:?}");
    assert!(beat.stdout.contains("lease until"), "{}", beat.stdout);
    let done = cli
        .run(&agent(&["complete", &run, "--result", "{\"ok\":true}"]))
        .await;
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(srv.get_run(&run).await["status"], "completed");

    // Another session's run is not this one's to finish: the server's code comes through.
    let other = srv.task("t2").await;
    srv.enqueue(&other).await;
    let claim = cli.run(&agent(&["next", "-o", "json"])).await;
    let run = claim.json()["claim"]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut foreign = vec!["agent", "--session", "worker-2", "complete", &run];
    foreign.push("-o");
    foreign.push("json");
    let refused = cli.run(&foreign).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("no_active_lease"),
        "{}",
        refused.stderr
    );

    let released = cli
        .run(&agent(&["release", &run, "--reason", "later"]))
        .await;
    assert_eq!(released.code, 0, "{released:?}");
    let again = cli.run(&agent(&["next", "-o", "json"])).await;
    let run = again.json()["claim"]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = cli
        .run(&agent(&["fail", &run, "--error", "it broke"]))
        .await;
    assert_eq!(failed.code, 0, "{failed:?}");
    assert_eq!(srv.get_run(&run).await["status"], "failed");

    // Without a session the server says what is missing.
    let anonymous = cli.run(&["agent", "next"]).await;
    assert_eq!(anonymous.code, 1, "{anonymous:?}");
    assert!(
        anonymous.stderr.contains("identity_required"),
        "{}",
        anonymous.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_scripts_what_happened() {
    let srv = Server::start_with_env(TEST_CLOCK);
    let cli = Cli::new(srv.base_url());

    let missing = cli.run(&["task", "show", "task-missing"]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("task_not_found") && missing.stderr.contains("404"),
        "{}",
        missing.stderr
    );
    assert!(missing.stdout.is_empty());

    let task = srv.task("t").await;
    srv.enqueue(&task).await;
    let twice = cli.run(&["task", "start", &task, "-o", "json"]).await;
    assert_eq!(twice.code, 1, "{twice:?}");
    assert!(
        twice.stderr.contains("open_run_exists") && twice.stderr.contains("409"),
        "{}",
        twice.stderr
    );

    for usage in [
        vec!["task", "frobnicate"],
        vec!["task", "show"],
        vec!["task", "list", "-o", "yaml"],
        vec!["task", "create", "--title", "x", "--metadata", "{not json"],
        vec!["task", "create", "--title", "x", "--owner", "nobody"],
        vec!["task", "list", "--url", "not a url"],
    ] {
        let out = cli.run(&usage).await;
        assert_eq!(out.code, 2, "{usage:?}: {out:?}");
    }

    let closed = closed_port_url();
    let refused = Cli::new(&closed).run(&["task", "list"]).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("cannot connect"),
        "{}",
        refused.stderr
    );
    let refused = Cli::new(&closed)
        .run(&["agent", "--session", "s", "next"])
        .await;
    assert_eq!(refused.code, 3, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn help_documents_the_exit_codes() {
    let out = Cli::new("http://127.0.0.1:9").run(&["--help"]).await;
    assert_eq!(out.code, 0);
    for line in ["2  usage error", "3  cannot connect", "4  `agent next`"] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_generate_for_each_shell() {
    let cli = Cli::new("http://127.0.0.1:9");
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.run(&["completions", shell]).await;
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        assert!(out.stdout.contains("tasklane"), "{shell}");
        assert!(
            out.stdout.contains("watch"),
            "{shell}: subcommands are completed"
        );
    }
    let out = cli.run(&["completions", "tcsh"]).await;
    assert_eq!(out.code, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_events_as_they_happen() {
    let srv = Server::start_with_env(TEST_CLOCK);
    let task = srv.task("watched").await;
    let mut watch = Watch::spawn(srv.base_url(), &["task", "watch", &task]);
    let first = watch.next_line();
    assert!(
        first.starts_with("#1 ") && first.contains("task.created"),
        "{first}"
    );

    // Each event appears while the stream is open, not at its end.
    let child = srv.child(&task, "sub").await;
    let line = watch.line_containing("task.child_created");
    assert!(line.contains(&task), "{line}");
    let run = id(&srv.enqueue(&child).await);
    let line = watch.line_containing("task.run_enqueued");
    assert!(line.contains(&run) && line.contains("queued"), "{line}");
    assert!(watch.is_running(), "watch follows until interrupted");

    let mut json = Watch::spawn(
        srv.base_url(),
        &["task", "watch", &task, "--after", "1", "-o", "json"],
    );
    let frame: Value = serde_json::from_str(&json.next_line()).expect("one frame per line");
    assert_eq!(frame["sequence"], 2);
    assert!(frame["timeline"]["event_type"].is_string(), "{frame}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_on_a_missing_task_exits_with_the_server_code() {
    let srv = Server::start_with_env(TEST_CLOCK);
    let out = Cli::new(srv.base_url())
        .run(&["task", "watch", "task-nope"])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("task_not_found"), "{}", out.stderr);
    let out = Cli::new(&closed_port_url())
        .run(&["task", "watch", "task-nope"])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumes_after_the_connection_drops() {
    let mut srv = FixedPortServer::start();
    let api = Api::new(srv.base_url.clone());
    let task = api.task("survives restarts").await;
    let mut watch = Watch::spawn(&srv.base_url, &["task", "watch", &task]);
    assert!(watch.next_line().starts_with("#1 "));
    api.child(&task, "before").await;
    let before = watch.line_containing("task.child_created");

    // The server goes away mid-stream and comes back on the same address and database.
    srv.restart();
    let api = Api::new(srv.base_url.clone());
    api.child(&task, "after").await;
    let lines = watch.lines_until("task.child_created");
    assert!(
        !lines.iter().any(|l| l == &before),
        "an event shown before the drop is not shown again: {lines:?}"
    );
    let sequences: Vec<i64> = std::iter::once(&before)
        .chain(lines.iter())
        .map(|l| sequence_of(l))
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "resumed in order, without gaps or repeats: {sequences:?}"
    );
    // Everything the task's stream holds after `before` was shown, once.
    let events = api.events(&task).await;
    let after_before: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .filter(|s| *s > sequence_of(&before))
        .collect();
    assert_eq!(
        sequences[1..]
            .iter()
            .filter(|s| after_before.contains(s))
            .count(),
        after_before.len(),
        "{sequences:?} vs {after_before:?}"
    );
    assert!(
        watch.stderr().contains("resuming after event"),
        "{}",
        watch.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mode_uses_the_token_option() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token"), ("TASKLANE_TEST_CLOCK", "1")]);
    let cli = Cli::new(srv.base_url());
    let made = cli
        .run(&[
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            "reader",
            "--database",
            srv.database(),
        ])
        .await;
    assert_eq!(made.code, 0, "{made:?}");
    let token = made.stdout.trim().to_string();

    let anonymous = cli.run(&["task", "list"]).await;
    assert_eq!(anonymous.code, 1);
    assert!(
        anonymous.stderr.contains("credentials_required"),
        "{}",
        anonymous.stderr
    );
    let listed = cli.run(&["task", "list", "--token", &token]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let from_env = cli
        .run_env(&["task", "list"], &[("TASKLANE_TOKEN", &token)])
        .await;
    assert_eq!(from_env.code, 0, "{from_env:?}");
    let write = cli
        .run(&["task", "create", "--title", "x", "--token", &token])
        .await;
    assert_eq!(write.code, 1, "a viewer may not write: {write:?}");
    assert!(write.stderr.contains("forbidden_role"), "{}", write.stderr);
}
