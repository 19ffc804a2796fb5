//! The backend-neutral store tests: each uses only the primitives of `tasklane_core::store`
//! through [`Store`], and runs on every backend (see [`for_every_backend!`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use tasklane_core::model::{
    ApprovalState, Event, IdempotencyRecord, OwnerKind, Priority, Ref, Run, RunStatus, Scope, Task,
    TaskStatus,
};
use tasklane_core::page::TaskKey;
use tasklane_core::store::{
    LeaseView, Neighbourhood, ReadStore, RunFilter, TaskFilter, WriteStore,
};
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::fixtures::{blocks, class_run, event, full_task, paging_tasks, run, task};
use super::{
    assert_counters_match_a_recount, close, for_every_backend, get_task, heads, hold_writer,
    insert, insert_result, insert_runs, list, reopen, rows, second_server, wait_queued,
};
use crate::Store;

for_every_backend! {
    records_round_trip => sqlite_records_round_trip, postgres_records_round_trip;
    group_commit_rolls_back_failing_and_panicking_commands_alone =>
        sqlite_group_commit_rolls_back_failing_and_panicking_commands_alone,
        postgres_group_commit_rolls_back_failing_and_panicking_commands_alone;
    events_get_increasing_sequences =>
        sqlite_events_get_increasing_sequences, postgres_events_get_increasing_sequences;
    run_writes_raise_task_activity =>
        sqlite_run_writes_raise_task_activity, postgres_run_writes_raise_task_activity;
    a_task_update_and_the_activity_after_it_in_one_command =>
        sqlite_a_task_update_and_the_activity_after_it_in_one_command,
        postgres_a_task_update_and_the_activity_after_it_in_one_command;
    duplicates_are_conflicts => sqlite_duplicates_are_conflicts, postgres_duplicates_are_conflicts;
    delete_cascades_to_everything_of_the_task =>
        sqlite_delete_cascades_to_everything_of_the_task,
        postgres_delete_cascades_to_everything_of_the_task;
    list_tasks_filters_orders_and_escapes =>
        sqlite_list_tasks_filters_orders_and_escapes, postgres_list_tasks_filters_orders_and_escapes;
    long_id_lists_are_chunked => sqlite_long_id_lists_are_chunked, postgres_long_id_lists_are_chunked;
    open_and_active_runs_follow_the_model =>
        sqlite_open_and_active_runs_follow_the_model, postgres_open_and_active_runs_follow_the_model;
    runs_and_dependencies_are_ordered =>
        sqlite_runs_and_dependencies_are_ordered, postgres_runs_and_dependencies_are_ordered;
    lease_and_claim_views_answer_what_their_parts_answer =>
        sqlite_lease_and_claim_views_answer_what_their_parts_answer,
        postgres_lease_and_claim_views_answer_what_their_parts_answer;
    agent_sessions_are_touched =>
        sqlite_agent_sessions_are_touched, postgres_agent_sessions_are_touched;
    sessions_of_different_tokens_are_different_sessions =>
        sqlite_sessions_of_different_tokens_are_different_sessions,
        postgres_sessions_of_different_tokens_are_different_sessions;
    reads_survive_panics_and_run_in_parallel_with_a_busy_writer =>
        sqlite_reads_survive_panics_and_run_in_parallel_with_a_busy_writer,
        postgres_reads_survive_panics_and_run_in_parallel_with_a_busy_writer;
    task_pages_resume_after_their_key =>
        sqlite_task_pages_resume_after_their_key, postgres_task_pages_resume_after_their_key;
    counters_stay_equal_to_a_recount_through_every_kind_of_write =>
        sqlite_counters_stay_equal_to_a_recount_through_every_kind_of_write,
        postgres_counters_stay_equal_to_a_recount_through_every_kind_of_write;
    counters_stay_equal_to_a_recount_after_random_operations =>
        sqlite_counters_stay_equal_to_a_recount_after_random_operations,
        postgres_counters_stay_equal_to_a_recount_after_random_operations;
    a_rolled_back_item_undoes_only_itself_and_publishes_no_sequence_of_it =>
        sqlite_a_rolled_back_item_undoes_only_itself_and_publishes_no_sequence_of_it,
        postgres_a_rolled_back_item_undoes_only_itself_and_publishes_no_sequence_of_it;
    rolled_back_items_leave_no_gap_in_the_sequences =>
        sqlite_rolled_back_items_leave_no_gap_in_the_sequences,
        postgres_rolled_back_items_leave_no_gap_in_the_sequences;
    claim_class_heads_are_the_oldest_run_of_each_class_of_the_audience =>
        sqlite_claim_class_heads_are_the_oldest_run_of_each_class_of_the_audience,
        postgres_claim_class_heads_are_the_oldest_run_of_each_class_of_the_audience;
    claims_are_exclusive_under_concurrent_transactions =>
        sqlite_claims_are_exclusive_under_concurrent_transactions,
        postgres_claims_are_exclusive_under_concurrent_transactions;
    events_are_visible_in_sequence_order =>
        sqlite_events_are_visible_in_sequence_order, postgres_events_are_visible_in_sequence_order;
    a_write_failing_in_the_database_fails_its_command_alone =>
        sqlite_a_write_failing_in_the_database_fails_its_command_alone,
        postgres_a_write_failing_in_the_database_fails_its_command_alone;
    a_repeatable_write_failing_in_the_database_fails_its_command_alone =>
        sqlite_a_repeatable_write_failing_in_the_database_fails_its_command_alone,
        postgres_a_repeatable_write_failing_in_the_database_fails_its_command_alone;
    failing_first_commands_of_a_transaction_are_undone_alone =>
        sqlite_failing_first_commands_of_a_transaction_are_undone_alone,
        postgres_failing_first_commands_of_a_transaction_are_undone_alone;
    repeatable_commands_that_fail_are_undone_alone =>
        sqlite_repeatable_commands_that_fail_are_undone_alone,
        postgres_repeatable_commands_that_fail_are_undone_alone;
    an_item_write_refused_in_a_repeatable_batch_fails_its_command_alone =>
        sqlite_an_item_write_refused_in_a_repeatable_batch_fails_its_command_alone,
        postgres_an_item_write_refused_in_a_repeatable_batch_fails_its_command_alone;
}

async fn records_round_trip(store: Store) {
    let mut minimal = task("task-min", 5);
    minimal.metadata = Some(serde_json::Value::Null);
    let full = full_task("task-full");
    let mut r = run("run-1", "task-full", RunStatus::Running, 1_000);
    r.claimed_by = Some(Ref::new("agent_session", "s1"));
    r.session_id = Some("s1".into());
    r.idempotency_key = Some("k".into());
    r.network_channel = Some("c".into());
    r.coordination_channel_id = Some("coord-run-1".into());
    r.claim_token_hash = Some("sha256:ab".into());
    r.lease_until = Some(Ts(9_000));
    r.heartbeat_at = Some(Ts(1_500));
    r.lease_expirations = 2;
    r.claimed_at = Some(Ts(1_100));
    r.started_at = Some(Ts(1_200));
    r.error = Some("oops".into());
    r.metadata = Some(serde_json::Value::Null);
    r.result = Some(json!({"ok": true}));
    r.required_capabilities = vec!["rust".into()];
    r.preferred_capabilities = vec!["x".into(), "y".into()];
    let bare = run("run-2", "task-min", RunStatus::Queued, 6);
    let (t1, t2, r1, r2) = (minimal.clone(), full.clone(), r.clone(), bare.clone());
    store
        .write(move |w| {
            w.insert_task(&t1)?;
            w.insert_task(&t2)?;
            w.insert_run(&r1)?;
            w.insert_run(&r2)
        })
        .await
        .unwrap();

    let (got_min, got_full, got_r, got_bare) = store
        .read(|r| {
            Ok((
                r.task("task-min")?,
                r.task("task-full")?,
                r.run("run-1")?,
                r.run("run-2")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        got_min,
        Some(Task {
            last_activity_at: Ts(6),
            ..minimal
        })
    );
    // The run's activity (its start at 1_200) raised the task's.
    assert_eq!(
        got_full,
        Some(Task {
            last_activity_at: Ts(1_200),
            ..full
        })
    );
    assert_eq!(got_r, Some(r));
    assert_eq!(got_bare, Some(bare));
    assert_eq!(store.read(|r| r.task("nope")).await.unwrap(), None);
}

/// Runs `write` on a task for each of `ids` (the i-th at time `10 + i`), every write queued
/// behind a held writer so that all of them commit in one batch; their results, in order.
async fn write_each_in_one_batch<R: Send + 'static>(
    store: &Store,
    ids: &[&str],
    write: fn(Task, &mut dyn WriteStore) -> Result<R>,
) -> Vec<Result<R>> {
    write_each_of_one_batch(store, ids, false, write).await
}

/// [`write_each_in_one_batch`], with writes that may run more than once (`write_repeatable`)
/// when `repeatable`.
async fn write_each_of_one_batch<R: Send + 'static>(
    store: &Store,
    ids: &[&str],
    repeatable: bool,
    write: fn(Task, &mut dyn WriteStore) -> Result<R>,
) -> Vec<Result<R>> {
    let (release, blocker) = hold_writer(store).await;
    let mut handles = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let s = store.clone();
        let t = task(id, 10 + i as i64);
        handles.push(tokio::spawn(async move {
            if repeatable {
                s.write_repeatable(0, move |w| write(t.clone(), w)).await
            } else {
                s.write(move |w| write(t, w)).await
            }
        }));
        wait_queued(store, i + 1).await;
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    results
}

async fn group_commit_rolls_back_failing_and_panicking_commands_alone(store: Store) {
    let commits_before = store.commits();
    let results = write_each_in_one_batch(&store, &["a", "b", "c", "d", "e"], |t, w| {
        w.insert_task(&t)?;
        w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
        match t.id.as_str() {
            "b" => Err(Error::conflict("nope", "b fails")),
            "d" => panic!("d panics"),
            _ => Ok(t.id.clone()),
        }
    })
    .await;
    assert_eq!(results[0].as_ref().unwrap(), "a");
    assert!(matches!(
        &results[1],
        Err(Error::Conflict { code: "nope", .. })
    ));
    assert_eq!(results[2].as_ref().unwrap(), "c");
    assert!(matches!(&results[3], Err(Error::Storage(m)) if m == "internal panic"));
    assert_eq!(results[4].as_ref().unwrap(), "e");
    // The blocker's transaction and then one transaction for all five commands.
    assert_eq!(store.commits() - commits_before, 2);

    let ids = list(&store, TaskFilter::default()).await;
    assert_eq!(ids, vec!["e", "c", "a"]);
    // The rolled-back commands' sequences were reused within the batch; none is missing.
    let seqs: Vec<i64> = store
        .read(|r| {
            let mut s = Vec::new();
            for id in ["a", "c", "e"] {
                s.push(r.task(id)?.unwrap().latest_event_seq);
            }
            Ok(s)
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(*store.committed_sequence().borrow(), 3);

    // The writer is healthy afterwards.
    insert(&store, vec![task("f", 1)]).await;
}

/// The first command of a transaction may run without a savepoint of its own (SQLite): when it
/// fails, after writing, as it panics or in the database, what it wrote goes and the commands
/// after it still commit, numbering their events from where the log stood.
async fn failing_first_commands_of_a_transaction_are_undone_alone(store: Store) {
    insert_runs(
        &store,
        vec![(task("t", 1), run("run-taken", "t", RunStatus::Completed, 2))],
    )
    .await;
    // "a" fails first in its batch; then "b" and "c" are each the first of what is left.
    let results = write_each_in_one_batch(&store, &["a", "b", "c", "d"], |t, w| {
        w.insert_task(&t)?;
        w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
        match t.id.as_str() {
            "a" => Err(Error::conflict("nope", "a fails")),
            "b" => panic!("b panics"),
            "c" => w.insert_run(&run("run-taken", &t.id, RunStatus::Queued, 30)),
            _ => Ok(()),
        }
    })
    .await;
    assert!(matches!(
        &results[0],
        Err(Error::Conflict { code: "nope", .. })
    ));
    assert!(matches!(&results[1], Err(Error::Storage(m)) if m == "internal panic"));
    match &results[2] {
        Err(Error::Storage(msg)) => assert!(msg.to_lowercase().contains("unique"), "{msg}"),
        other => panic!("command c: {other:?}"),
    }
    assert!(results[3].is_ok(), "{:?}", results[3]);

    // A failing command alone in its batch, then one that succeeds.
    let alone = store
        .write(|w| {
            w.insert_task(&task("e", 40))?;
            w.append_event(&event("evt-e", "e", 20))?;
            Err::<(), _>(Error::conflict("nope", "e fails"))
        })
        .await;
    assert!(matches!(alone, Err(Error::Conflict { code: "nope", .. })));
    insert(&store, vec![task("f", 50)]).await;
    store
        .write(|w| w.append_event(&event("evt-f", "f", 20)).map(drop))
        .await
        .unwrap();

    assert_eq!(
        list(&store, TaskFilter::default()).await,
        vec!["f", "d", "t"]
    );
    let seqs: Vec<i64> = store
        .read(|r| {
            ["d", "f"]
                .iter()
                .map(|id| Ok(r.task(id)?.unwrap().latest_event_seq))
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(*store.committed_sequence().borrow(), 2);
    assert_counters_match_a_recount(&store).await;
}

/// Repeatable commands may run without a savepoint of their own: one that fails before
/// writing leaves the others as they are; one that fails after writing (returning an error,
/// panicking or in the database) is undone alone, the batch's other commands running again.
/// Either way every other command commits once, with gapless sequences.
async fn repeatable_commands_that_fail_are_undone_alone(store: Store) {
    insert_runs(
        &store,
        vec![(task("t", 1), run("run-taken", "t", RunStatus::Completed, 2))],
    )
    .await;
    let commits_before = store.commits();
    let ids = ["a", "b", "early", "c", "late", "panics", "taken", "d"];
    let results = write_each_of_one_batch(&store, &ids, true, |t, w| {
        if t.id == "early" {
            return Err(Error::conflict("early", "fails before writing"));
        }
        w.insert_task(&t)?;
        w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
        match t.id.as_str() {
            "late" => Err(Error::conflict("late", "fails after writing")),
            "panics" => panic!("panics after writing"),
            "taken" => w.insert_run(&run("run-taken", &t.id, RunStatus::Queued, 30)),
            _ => Ok(()),
        }
    })
    .await;
    for (id, result) in ids.iter().zip(&results) {
        match (*id, result) {
            ("a" | "b" | "c" | "d", Ok(())) => {}
            ("early", Err(Error::Conflict { code: "early", .. }))
            | ("late", Err(Error::Conflict { code: "late", .. })) => {}
            ("panics", Err(Error::Storage(m))) if m == "internal panic" => {}
            ("taken", Err(Error::Storage(m))) if m.to_lowercase().contains("unique") => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // The blocker's transaction and then one for the whole batch.
    assert_eq!(store.commits() - commits_before, 2);
    assert_eq!(
        list(&store, TaskFilter::default()).await,
        vec!["d", "c", "b", "a", "t"]
    );
    let seqs: Vec<i64> = store
        .read(|r| {
            ["a", "b", "c", "d"]
                .iter()
                .map(|id| Ok(r.task(id)?.unwrap().latest_event_seq))
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(*store.committed_sequence().borrow(), 4);
    assert_counters_match_a_recount(&store).await;
}

/// A write the database refuses (here a run id taken twice) fails the command that made it,
/// whether a later statement of the command asks the database something or the write is the
/// command's last, and when the command is the batch's last; with its own error, not that of a
/// statement after it. The other commands of its batch commit. (On PostgreSQL such writes are
/// sent with the next statement that waits, the last command's with the COMMIT.)
async fn a_write_failing_in_the_database_fails_its_command_alone(store: Store) {
    write_failing_in_the_database(store, false).await
}

/// The same with repeatable commands, which PostgreSQL runs without savepoints: the failing
/// writes abort the transaction, which runs again, each command in its own savepoint. Then a
/// batch whose only failure is its last command's write, sent with the COMMIT.
async fn a_repeatable_write_failing_in_the_database_fails_its_command_alone(store: Store) {
    write_failing_in_the_database(store.clone(), true).await;
    let commits_before = store.commits();
    let ids = ["d", "e", "final-2"];
    let results = write_each_of_one_batch(&store, &ids, true, |t, w| {
        w.insert_task(&t)?;
        w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
        if t.id == "final-2" {
            w.insert_run(&run("run-taken", &t.id, RunStatus::Queued, 30))?;
        }
        Ok(())
    })
    .await;
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    match &results[2] {
        Err(Error::Storage(msg)) => assert!(msg.to_lowercase().contains("unique"), "{msg}"),
        other => panic!("final-2: {other:?}"),
    }
    // The blocker's transaction and then one for the batch.
    assert_eq!(store.commits() - commits_before, 2);
    let mut ids = list(&store, TaskFilter::default()).await;
    ids.sort();
    assert_eq!(ids, vec!["a", "b", "c", "d", "e", "t"]);
    assert_eq!(*store.committed_sequence().borrow(), 5);
    assert_counters_match_a_recount(&store).await;
}

/// Repeatable commands whose refused writes are heard of late (on PostgreSQL a command's writes
/// are answered with a later statement): a write refused inside a kept item fails its command
/// alone, even when a later item of the command hears of the refusal and rolls itself back; and
/// so does one heard of only at the COMMIT, the batch's last command having failed without
/// writing. The commands around it commit, with gapless sequences.
async fn an_item_write_refused_in_a_repeatable_batch_fails_its_command_alone(store: Store) {
    insert_runs(
        &store,
        vec![(task("t", 1), run("run-taken", "t", RunStatus::Completed, 2))],
    )
    .await;
    let commits_before = store.commits();
    let ids = ["a", "items", "b"];
    let results = write_each_of_one_batch(&store, &ids, true, |t, w| {
        if t.id != "items" {
            w.insert_task(&t)?;
            w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
            return Ok(());
        }
        w.begin_item()?;
        w.insert_task(&t)?;
        w.end_item(true)?;
        w.begin_item()?;
        w.append_event(&event("evt-items", "items", 20))?;
        w.insert_run(&run("run-taken", "items", RunStatus::Queued, 30))?;
        w.end_item(true)?;
        // An item that reads next, and is rolled back when its read fails: the command would
        // otherwise go on as if nothing had been refused.
        w.begin_item()?;
        w.append_event(&event("evt-items-2", "items", 21))?;
        let read = w.task("t");
        w.end_item(read.is_ok())?;
        Ok(())
    })
    .await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(Error::Storage(msg)) => {
            assert!(!msg.contains("aborted"), "{msg}");
            assert!(msg.to_lowercase().contains("unique"), "{msg}");
        }
        other => panic!("items: {other:?}"),
    }
    // The blocker's transaction and then one for the batch.
    assert_eq!(store.commits() - commits_before, 2);
    assert_eq!(
        list(&store, TaskFilter::default()).await,
        vec!["b", "a", "t"]
    );
    assert_eq!(*store.committed_sequence().borrow(), 2);
    assert_counters_match_a_recount(&store).await;

    // Heard of only at the COMMIT.
    let ids = ["c", "dup", "early"];
    let results = write_each_of_one_batch(&store, &ids, true, |t, w| {
        if t.id == "early" {
            return Err(Error::conflict("early", "fails before writing"));
        }
        w.insert_task(&t)?;
        w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
        if t.id == "dup" {
            w.insert_run(&run("run-taken", "dup", RunStatus::Queued, 30))?;
        }
        Ok(())
    })
    .await;
    assert!(results[0].is_ok(), "{results:?}");
    match &results[1] {
        Err(Error::Storage(msg)) => assert!(msg.to_lowercase().contains("unique"), "{msg}"),
        other => panic!("dup: {other:?}"),
    }
    assert!(
        matches!(&results[2], Err(Error::Conflict { code: "early", .. })),
        "{results:?}"
    );
    let mut ids = list(&store, TaskFilter::default()).await;
    ids.sort();
    assert_eq!(ids, vec!["a", "b", "c", "t"]);
    assert_eq!(*store.committed_sequence().borrow(), 3);
    assert_counters_match_a_recount(&store).await;
}

async fn write_failing_in_the_database(store: Store, repeatable: bool) {
    insert_runs(
        &store,
        vec![(task("t", 1), run("run-taken", "t", RunStatus::Completed, 2))],
    )
    .await;
    // "final" is the batch's last command, whose writes may travel with the COMMIT.
    let ids = ["a", "then-read", "b", "last", "c", "final"];
    let results = write_each_of_one_batch(&store, &ids, repeatable, |t, w| {
        w.insert_task(&t)?;
        w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
        if matches!(t.id.as_str(), "then-read" | "last" | "final") {
            w.insert_run(&run("run-taken", &t.id, RunStatus::Queued, 30))?;
        }
        if t.id == "then-read" {
            w.task("t")?;
        }
        Ok(())
    })
    .await;
    for (i, result) in results.iter().enumerate() {
        match i {
            1 | 3 | 5 => match result {
                Err(Error::Storage(msg)) => {
                    assert!(!msg.contains("aborted"), "{msg}");
                    assert!(msg.to_lowercase().contains("unique"), "{msg}");
                }
                other => panic!("command {i}: {other:?}"),
            },
            _ => assert!(result.is_ok(), "command {i}: {result:?}"),
        }
    }
    let ids = list(&store, TaskFilter::default()).await;
    assert_eq!(ids, vec!["c", "b", "a", "t"]);
    let seqs: Vec<i64> = store
        .read(|r| {
            ["a", "b", "c"]
                .iter()
                .map(|id| Ok(r.task(id)?.unwrap().latest_event_seq))
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(*store.committed_sequence().borrow(), 3);
    assert_counters_match_a_recount(&store).await;
}

async fn events_get_increasing_sequences(store: Store) {
    let mut watch = store.committed_sequence();
    assert_eq!(*watch.borrow_and_update(), 0);
    insert(&store, vec![task("t1", 100), task("t2", 100)]).await;

    let seqs = store
        .write(|w| {
            Ok(vec![
                w.append_event(&event("e1", "t1", 200))?,
                w.append_event(&event("e2", "t2", 150))?,
                w.append_event(&event("e3", "t1", 50))?,
            ])
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), 3);

    // A failing command's events do not move the watch.
    let err = store
        .write(|w| {
            w.append_event(&event("e4", "t2", 300))?;
            Err::<(), _>(Error::validation("no"))
        })
        .await;
    assert!(err.is_err());
    assert!(!watch.has_changed().unwrap());

    let t1 = get_task(&store, "t1").await.unwrap();
    assert_eq!(t1.latest_event_seq, 3);
    // Raised to the newest event, never lowered by the older one appended last.
    assert_eq!(t1.last_activity_at, Ts(200));
    let t2 = get_task(&store, "t2").await.unwrap();
    assert_eq!((t2.latest_event_seq, t2.last_activity_at), (2, Ts(150)));

    let (asc, desc, after, limited) = store
        .read(|r| {
            Ok((
                r.events_of_task("t1", 0, None, false)?,
                r.events_of_task("t1", 0, None, true)?,
                r.events_of_task("t1", 1, Some(0), false)?,
                r.events_of_task("t1", 0, Some(1), true)?,
            ))
        })
        .await
        .unwrap();
    let seq = |v: &Vec<Event>| v.iter().map(|e| e.sequence).collect::<Vec<_>>();
    assert_eq!(seq(&asc), vec![1, 3]);
    assert_eq!(seq(&desc), vec![3, 1]);
    assert_eq!(seq(&after), vec![3]);
    assert_eq!(seq(&limited), vec![3]);
    assert_eq!(asc[0].payload, json!({"n": 200}));
    assert_eq!(asc[0].event_type, "task.created");

    // update_task leaves storage-owned columns alone.
    let mut stale = task("t1", 10);
    stale.title = "renamed".into();
    store.write(move |w| w.update_task(&stale)).await.unwrap();
    let t1 = get_task(&store, "t1").await.unwrap();
    assert_eq!(
        (
            t1.title.as_str(),
            t1.latest_event_seq,
            t1.last_activity_at,
            t1.updated_at
        ),
        ("renamed", 3, Ts(200), Ts(10))
    );

    // A reopened store's watch starts at the end of the log.
    let reopened = reopen(store).await;
    let seen = *reopened.committed_sequence().borrow();
    close(reopened).await;
    assert_eq!(seen, 3);
}

async fn run_writes_raise_task_activity(store: Store) {
    insert(&store, vec![task("t", 100)]).await;
    let mut r = run("r", "t", RunStatus::Queued, 150);
    let r1 = r.clone();
    store.write(move |w| w.insert_run(&r1)).await.unwrap();
    assert_eq!(
        get_task(&store, "t").await.unwrap().last_activity_at,
        Ts(150)
    );
    r.status = RunStatus::Completed;
    r.claimed_at = Some(Ts(160));
    r.ended_at = Some(Ts(400));
    let r2 = r.clone();
    // Within the command the raise (written when the command ends) is already visible, and a
    // list read in it sees the same order every later reader will.
    let (seen, listed) = store
        .write(move |w| {
            w.update_run(&r2)?;
            w.append_event(&event("e1", "t", 390))?;
            let seen = w.task("t")?.unwrap();
            let listed = w.children_of("none")?.len();
            Ok((seen, listed))
        })
        .await
        .unwrap();
    assert_eq!((seen.last_activity_at, seen.latest_event_seq), (Ts(400), 1));
    assert_eq!(listed, 0);
    let stored = get_task(&store, "t").await.unwrap();
    assert_eq!(
        (stored.last_activity_at, stored.latest_event_seq),
        (Ts(400), 1)
    );
    let mut newer = task("t", 300);
    newer.created_at = Ts(100);
    store.write(move |w| w.update_task(&newer)).await.unwrap();
    assert_eq!(
        get_task(&store, "t").await.unwrap().last_activity_at,
        Ts(400)
    );

    let missing = run("ghost", "t", RunStatus::Queued, 1);
    let err = store.write(move |w| w.update_run(&missing)).await;
    assert!(matches!(
        err,
        Err(Error::NotFound {
            code: "run_not_found",
            ..
        })
    ));
    let err = store.write(|w| w.update_task(&task("ghost", 1))).await;
    assert!(matches!(
        err,
        Err(Error::NotFound {
            code: "task_not_found",
            ..
        })
    ));
}

/// A command that updates a task and writes its run and events around the update leaves the
/// task's activity at the latest of them and its latest sequence at its last event, as if each
/// had been written at once: whether the backend writes the raises with the task's UPDATE (as
/// PostgreSQL does while that UPDATE is still unsent) or after it.
async fn a_task_update_and_the_activity_after_it_in_one_command(store: Store) {
    insert(&store, vec![task("t", 100)]).await;
    let mut r = run("r", "t", RunStatus::Queued, 150);
    let r1 = r.clone();
    store.write(move |w| w.insert_run(&r1)).await.unwrap();
    let marks = |t: &Task| (t.last_activity_at, t.latest_event_seq);

    // Like a claim: the run, the task's current run (its `updated_at` unchanged), an event.
    r.status = RunStatus::Claimed;
    r.claimed_at = Some(Ts(200));
    let mut t = get_task(&store, "t").await.unwrap();
    t.current_run_id = Some("r".into());
    let (r2, t2) = (r.clone(), t.clone());
    store
        .write(move |w| {
            w.update_run(&r2)?;
            w.update_task(&t2)?;
            w.append_event(&event("e1", "t", 210))
        })
        .await
        .unwrap();
    let got = get_task(&store, "t").await.unwrap();
    assert_eq!(got.current_run_id.as_deref(), Some("r"));
    assert_eq!(marks(&got), (Ts(210), 1));

    // Like a completion: the task's status and `updated_at` move, and an event comes later.
    r.status = RunStatus::Completed;
    r.ended_at = Some(Ts(300));
    t.status = TaskStatus::Completed;
    t.current_run_id = None;
    t.updated_at = Ts(305);
    t.closed_at = Some(Ts(305));
    let (r3, t3) = (r.clone(), t.clone());
    store
        .write(move |w| {
            w.update_run(&r3)?;
            w.update_task(&t3)?;
            w.append_event(&event("e2", "t", 320))
        })
        .await
        .unwrap();
    let got = get_task(&store, "t").await.unwrap();
    assert_eq!(
        (got.status, got.closed_at),
        (TaskStatus::Completed, Some(Ts(305)))
    );
    assert_eq!(marks(&got), (Ts(320), 2));

    // The task's own `updated_at` later than the command's event.
    t.title = "renamed".into();
    t.updated_at = Ts(500);
    let t4 = t.clone();
    store
        .write(move |w| {
            w.append_event(&event("e3", "t", 400))?;
            w.update_task(&t4)
        })
        .await
        .unwrap();
    assert_eq!(marks(&get_task(&store, "t").await.unwrap()), (Ts(500), 3));

    // The task read back after its update in the same command (so the update has gone to the
    // database), then an event: the read sees the update, the raise still lands.
    t.title = "again".into();
    let t5 = t.clone();
    let seen = store
        .write(move |w| {
            w.update_task(&t5)?;
            let seen = w.task("t")?.unwrap();
            w.append_event(&event("e4", "t", 600))?;
            Ok(seen)
        })
        .await
        .unwrap();
    assert_eq!((seen.title.as_str(), marks(&seen)), ("again", (Ts(500), 3)));
    let got = get_task(&store, "t").await.unwrap();
    assert_eq!((got.title.as_str(), marks(&got)), ("again", (Ts(600), 4)));

    // Two updates of the task in one command, each changing other columns, and reads of
    // several tasks (ordered by activity) after each: every read sees what the command wrote
    // so far, and the task keeps both changes.
    insert(&store, vec![task("u", 650)]).await;
    t.title = "twice".into();
    let t6 = t.clone();
    t.priority = Priority::High;
    t.updated_at = Ts(700);
    let t7 = t.clone();
    let (before, after) = store
        .write(move |w| {
            w.update_task(&t6)?;
            let both = || vec!["t".to_string(), "u".to_string()];
            let before = w.tasks_by_ids(&both())?;
            w.update_task(&t7)?;
            Ok((before, w.tasks_by_ids(&both())?))
        })
        .await
        .unwrap();
    let view = |ts: &[Task]| -> Vec<(String, String, Ts)> {
        ts.iter()
            .map(|t| (t.id.clone(), t.title.clone(), t.last_activity_at))
            .collect()
    };
    let row = |id: &str, title: &str, at: i64| (id.to_string(), title.to_string(), Ts(at));
    assert_eq!(
        view(&before),
        [row("u", "title of u", 650), row("t", "twice", 600)]
    );
    assert_eq!(
        view(&after),
        [row("t", "twice", 700), row("u", "title of u", 650)]
    );
    let got = get_task(&store, "t").await.unwrap();
    assert_eq!(
        (got.title.as_str(), got.priority, marks(&got)),
        ("twice", Priority::High, (Ts(700), 4))
    );
    assert_counters_match_a_recount(&store).await;
}

async fn duplicates_are_conflicts(store: Store) {
    insert(&store, vec![task("a", 1), task("b", 1)]).await;
    match insert_result(&store, task("a", 2)).await {
        Err(Error::Conflict { code, message }) => {
            assert_eq!(code, "duplicate_task");
            assert_eq!(message, "task a already exists");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    store
        .write(|w| w.insert_dependency(&blocks("a", "b", 1)))
        .await
        .unwrap();
    let err = store
        .write(|w| w.insert_dependency(&blocks("a", "b", 2)))
        .await;
    assert!(matches!(
        err,
        Err(Error::Conflict {
            code: "duplicate_dependency",
            ..
        })
    ));
    let removed = store
        .write(|w| {
            Ok((
                w.delete_dependency("a", "b")?,
                w.delete_dependency("a", "b")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(removed, (true, false));

    let record = IdempotencyRecord {
        key: "k".into(),
        origin: Ref::new("http", "tasks.start"),
        task_id: "a".into(),
        run_id: "r".into(),
        created_at: Ts(5),
    };
    let (r1, r2) = (record.clone(), record.clone());
    store
        .write(move |w| w.insert_idempotency_record(&r1))
        .await
        .unwrap();
    let err = store.write(move |w| w.insert_idempotency_record(&r2)).await;
    assert!(matches!(err, Err(Error::Conflict { .. })));
    let origin = record.origin.clone();
    let got = store
        .read(move |r| {
            Ok((
                r.idempotency_record("k", &origin)?,
                r.idempotency_record("k", &Ref::new("http", "tasks.enqueue_run"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(got, (Some(record), None));
}

async fn delete_cascades_to_everything_of_the_task(store: Store) {
    insert(&store, vec![task("x", 1), task("y", 1), task("z", 1)]).await;
    store
        .write(|w| {
            w.insert_run(&run("rx", "x", RunStatus::Completed, 2))?;
            w.insert_run(&run("ry", "y", RunStatus::Queued, 2))?;
            w.insert_dependency(&blocks("x", "y", 3))?;
            w.insert_dependency(&blocks("z", "x", 3))?;
            w.insert_dependency(&blocks("z", "y", 4))?;
            w.append_event(&event("ex1", "x", 5))?;
            w.append_event(&event("ey1", "y", 5))?;
            w.append_event(&event("ex2", "x", 6))?;
            w.insert_idempotency_record(&IdempotencyRecord {
                key: "k".into(),
                origin: Ref::new("http", "tasks.start"),
                task_id: "x".into(),
                run_id: "rx".into(),
                created_at: Ts(2),
            })
        })
        .await
        .unwrap();

    store.write(|w| w.delete_task("x")).await.unwrap();
    // Deleting what is not there is not an error.
    store.write(|w| w.delete_task("x")).await.unwrap();

    let (task_x, run_x, events_x, deps_z, dependents_y, record, run_y, events_y) = store
        .read(|r| {
            Ok((
                r.task("x")?,
                r.run("rx")?,
                r.events_of_task("x", 0, None, false)?,
                r.dependencies_of("z")?,
                r.dependents_of("y")?,
                r.idempotency_record("k", &Ref::new("http", "tasks.start"))?,
                r.run("ry")?,
                r.events_of_task("y", 0, None, false)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(task_x, None);
    assert_eq!(run_x, None);
    assert!(events_x.is_empty());
    assert_eq!(deps_z, vec![blocks("z", "y", 4)]);
    assert_eq!(dependents_y, vec!["z".to_string()]);
    assert_eq!(record, None);
    assert!(run_y.is_some());
    assert_eq!(events_y.len(), 1);

    // Sequences of deleted events are never handed out again.
    let seq = store
        .write(|w| w.append_event(&event("ey2", "y", 7)))
        .await
        .unwrap();
    assert_eq!(seq, 4);
}

async fn list_tasks_filters_orders_and_escapes(store: Store) {
    let mut tasks = Vec::new();
    let mut add = |id: &str, activity: i64, f: &dyn Fn(&mut Task)| {
        let mut t = task(id, activity);
        f(&mut t);
        tasks.push(t);
    };
    add("t-pct", 90, &|t| t.title = "100% DONE".into());
    add("t-plain", 80, &|t| t.title = "100 done".into());
    add("t-under", 70, &|t| t.title = "a_b".into());
    add("t-axb", 60, &|t| t.title = "axb".into());
    add("t-slash", 50, &|t| {
        t.title = "other".into();
        t.identifier = Some(r"back\slash".into());
    });
    add("t-draft", 95, &|t| {
        t.status = TaskStatus::Draft;
        t.title = "draft done".into();
    });
    // Ties on activity are broken by updated_at, then created_at, then id (all descending).
    add("tie-a", 40, &|t| t.updated_at = Ts(30));
    add("tie-b", 40, &|t| {
        t.updated_at = Ts(30);
        t.created_at = Ts(20);
    });
    add("tie-c", 40, &|t| {
        t.updated_at = Ts(30);
        t.created_at = Ts(20);
    });
    add("tie-d", 40, &|t| t.updated_at = Ts(35));
    add("ws", 10, &|t| {
        t.scope = Scope::Workspace;
        t.workspace_id = Some("w1".into());
        t.priority = Priority::High;
        t.approval_state = ApprovalState::Approved;
        t.owner = Some(Ref::new("agent_session", "s1"));
        t.network_channel = Some("net".into());
    });
    add("child", 5, &|t| t.parent_task_id = Some("ws".into()));
    // Parents first, for the foreign key.
    tasks.sort_by_key(|t| t.parent_task_id.is_some());
    insert(&store, tasks).await;

    let all = list(&store, TaskFilter::default()).await;
    assert_eq!(
        all,
        vec![
            "t-pct", "t-plain", "t-under", "t-axb", "t-slash", "tie-d", "tie-a", "tie-c", "tie-b",
            "ws", "child"
        ]
    );
    let with_drafts = list(
        &store,
        TaskFilter {
            include_drafts: true,
            limit: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(with_drafts, vec!["t-draft", "t-pct"]);
    let drafts = list(
        &store,
        TaskFilter {
            status: Some(TaskStatus::Draft),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(drafts, vec!["t-draft"]);
    assert_eq!(
        list(
            &store,
            TaskFilter {
                limit: Some(0),
                ..Default::default()
            }
        )
        .await
        .len(),
        all.len()
    );

    let query = |q: &str| TaskFilter {
        query: Some(q.to_string()),
        ..Default::default()
    };
    assert_eq!(list(&store, query("done")).await, vec!["t-pct", "t-plain"]);
    assert_eq!(list(&store, query("0% d")).await, vec!["t-pct"]);
    assert_eq!(list(&store, query("a_b")).await, vec!["t-under"]);
    assert_eq!(list(&store, query("K\\S")).await, vec!["t-slash"]);
    assert_eq!(list(&store, query("%")).await, vec!["t-pct"]);

    let only_ws = TaskFilter {
        scope: Some(Scope::Workspace),
        workspace_id: Some("w1".into()),
        status: Some(TaskStatus::Ready),
        priority: Some(Priority::High),
        approval_state: Some(ApprovalState::Approved),
        owner_kind: Some(OwnerKind::AgentSession),
        owner_ref: Some("s1".into()),
        network_channel: Some("net".into()),
        query: Some("TITLE OF".into()),
        ..Default::default()
    };
    assert_eq!(list(&store, only_ws.clone()).await, vec!["ws"]);
    let wrong_owner = TaskFilter {
        owner_ref: Some("s2".into()),
        ..only_ws
    };
    assert!(list(&store, wrong_owner).await.is_empty());
    let children = TaskFilter {
        parent_task_id: Some("ws".into()),
        ..Default::default()
    };
    assert_eq!(list(&store, children).await, vec!["child"]);

    let (children, counts) = store
        .read(|r| {
            Ok((
                r.children_of("ws")?,
                r.child_counts(&["ws".to_string(), "child".to_string()])?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(counts.get("ws"), Some(&1));
    assert_eq!(counts.get("child"), None);
}

async fn long_id_lists_are_chunked(store: Store) {
    let parents: Vec<Task> = (0..1_200).map(|i| task(&format!("p{i:04}"), i)).collect();
    insert(&store, parents).await;
    store
        .write(|w| {
            for i in 0..1_200 {
                let mut child = task(&format!("c{i:04}"), 5_000 + i);
                child.parent_task_id = Some(format!("p{i:04}"));
                w.insert_task(&child)?;
                w.insert_run(&run(&format!("r{i:04}"), &child.id, RunStatus::Queued, i))?;
                w.insert_dependency(&blocks(&child.id, &format!("p{i:04}"), 10_000 - i))?;
            }
            Ok(())
        })
        .await
        .unwrap();

    let mut ids: Vec<String> = (0..1_200).map(|i| format!("p{i:04}")).collect();
    ids.push("missing".into());
    ids.push("p0000".into());
    let child_ids: Vec<String> = (0..1_200).map(|i| format!("c{i:04}")).collect();
    let (tasks, counts, runs, deps) = store
        .read(move |r| {
            Ok((
                r.tasks_by_ids(&ids)?,
                r.child_counts(&ids)?,
                r.open_runs_of_tasks(&child_ids)?,
                r.dependencies_of_tasks(&child_ids)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1_200);
    assert_eq!(tasks[0].id, "p1199");
    assert_eq!(tasks[1_199].id, "p0000");
    assert_eq!(counts.len(), 1_200);
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(runs.len(), 1_200);
    assert_eq!(
        (runs[0].id.as_str(), runs[1_199].id.as_str()),
        ("r1199", "r0000")
    );
    assert_eq!(deps.len(), 1_200);
    assert_eq!(
        (deps[0].task_id.as_str(), deps[1_199].task_id.as_str()),
        ("c1199", "c0000")
    );
}

async fn open_and_active_runs_follow_the_model(store: Store) {
    let statuses = RunStatus::ALL.to_vec();
    store
        .write(move |w| {
            for (i, status) in statuses.iter().enumerate() {
                let t = task(&format!("t{i}"), 1);
                w.insert_task(&t)?;
                let mut r = run(&format!("r-{status}"), &t.id, *status, i as i64);
                r.session_id = Some(format!("s-{status}"));
                w.insert_run(&r)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let ids: Vec<String> = (0..RunStatus::ALL.len()).map(|i| format!("t{i}")).collect();
    let (open, active) = store
        .read(move |r| {
            let open = r.open_runs_of_tasks(&ids)?;
            let mut active = Vec::new();
            for status in RunStatus::ALL {
                active.push(
                    r.active_run_of_session(&format!("s-{status}"), None)?
                        .is_some(),
                );
            }
            Ok((open, active))
        })
        .await
        .unwrap();
    let mut open_statuses: Vec<RunStatus> = open.iter().map(|r| r.status).collect();
    open_statuses.reverse();
    let expected: Vec<RunStatus> = RunStatus::ALL
        .iter()
        .copied()
        .filter(|s| s.is_open())
        .collect();
    assert_eq!(open_statuses, expected);
    let expected_active: Vec<bool> = RunStatus::ALL.iter().map(|s| s.is_active()).collect();
    assert_eq!(active, expected_active);

    let filtered = store
        .read(|r| {
            Ok((
                r.list_runs(
                    "t0",
                    &RunFilter {
                        status: Some(RunStatus::Queued),
                        session_id: Some("s-queued".into()),
                        after: None,
                        limit: Some(5),
                    },
                )?,
                r.list_runs(
                    "t0",
                    &RunFilter {
                        status: Some(RunStatus::Running),
                        ..Default::default()
                    },
                )?,
                r.runs_of_task("t0")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(filtered.0.len(), 1);
    assert!(filtered.1.is_empty());
    assert_eq!(filtered.2.len(), 1);
}

async fn runs_and_dependencies_are_ordered(store: Store) {
    insert(
        &store,
        vec![task("t", 1), task("b1", 1), task("b2", 1), task("b3", 1)],
    )
    .await;
    store
        .write(|w| {
            w.insert_run(&run("r-b", "t", RunStatus::Canceled, 10))?;
            w.insert_run(&run("r-a", "t", RunStatus::Canceled, 10))?;
            w.insert_run(&run("r-c", "t", RunStatus::Queued, 20))?;
            w.insert_dependency(&blocks("t", "b3", 1))?;
            w.insert_dependency(&blocks("t", "b2", 2))?;
            w.insert_dependency(&blocks("t", "b1", 2))
        })
        .await
        .unwrap();
    let (runs, limited, deps) = store
        .read(|r| {
            Ok((
                r.runs_of_task("t")?,
                r.list_runs(
                    "t",
                    &RunFilter {
                        limit: Some(1),
                        ..Default::default()
                    },
                )?,
                r.dependencies_of("t")?,
            ))
        })
        .await
        .unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["r-c", "r-b", "r-a"]);
    assert_eq!(limited.len(), 1);
    // Read together, in a reader and in the writer, they are the same.
    let dependents = store.read(|r| r.dependents_of("b1")).await.unwrap();
    assert_eq!(dependents, ["t"]);
    for task_id in ["t", "b1"] {
        let separate = store
            .read(move |r| {
                Ok(Neighbourhood {
                    runs: r.runs_of_task(task_id)?,
                    dependencies: r.dependencies_of(task_id)?,
                    dependents: r.dependents_of(task_id)?,
                })
            })
            .await
            .unwrap();
        let separate = format!("{separate:?}");
        let read = store.read(move |r| r.neighbourhood(task_id)).await.unwrap();
        assert_eq!(format!("{read:?}"), separate);
        let written = store
            .write(move |w| w.neighbourhood(task_id))
            .await
            .unwrap();
        assert_eq!(format!("{written:?}"), separate);
        let task = store.read(move |r| r.task(task_id)).await.unwrap().unwrap();
        for with_task in [
            store
                .read(move |r| r.task_with_neighbourhood(task_id))
                .await,
            store
                .write(move |w| w.task_with_neighbourhood(task_id))
                .await,
        ] {
            let (got, around) = with_task.unwrap().unwrap();
            assert_eq!(got, task);
            assert_eq!(format!("{around:?}"), separate);
        }
    }
    let missing = store.write(|w| w.task_with_neighbourhood("nope")).await;
    assert!(missing.unwrap().is_none());
    let deps: Vec<&str> = deps.iter().map(|d| d.depends_on_task_id.as_str()).collect();
    assert_eq!(deps, vec!["b3", "b1", "b2"]);
}

/// `lease_view` and `claim_view` read together what their parts read one by one, in a reader
/// and in the writer (where PostgreSQL sends them in one round trip).
async fn lease_and_claim_views_answer_what_their_parts_answer(store: Store) {
    use Priority::{Low, Medium};
    let g = Some("g|");
    insert_runs(
        &store,
        vec![
            class_run("q1", g, Medium, &[], 5),
            class_run("q2", g, Low, &["gpu"], 3),
            class_run("q3", Some("g|agent_session:s1"), Medium, &[], 4),
        ],
    )
    .await;
    insert(&store, vec![task("t", 1), task("b", 1), task("d", 1)]).await;
    store
        .write(|w| {
            let leased = Run {
                session_id: Some("s1".into()),
                claim_token_hash: Some("sha256:x".into()),
                lease_until: Some(Ts(1_000)),
                ..run("r-leased", "t", RunStatus::Claimed, 10)
            };
            w.insert_run(&run("r-old", "t", RunStatus::Failed, 5))?;
            w.insert_run(&leased)?;
            w.insert_dependency(&blocks("t", "b", 2))?;
            w.insert_dependency(&blocks("d", "t", 3))
        })
        .await
        .unwrap();
    type Parts = (LeaseView, LeaseView, Vec<Run>);
    fn parts(
        r: &mut dyn ReadStore,
        session: &str,
        run_id: &str,
        audiences: &[String],
    ) -> Result<Parts> {
        let active = r.active_runs_of_session(session, None)?;
        let run = r.run(run_id)?;
        let task = match &run {
            Some(run) => r.task(&run.task_id)?,
            None => None,
        };
        let around = match &task {
            Some(task) => Some(r.neighbourhood(&task.id)?),
            None => None,
        };
        let bare = LeaseView {
            active: active.clone(),
            run: run.clone(),
            task: task.clone(),
            around: None,
        };
        let full = LeaseView {
            active,
            run,
            task,
            around,
        };
        Ok((bare, full, r.claim_class_heads(audiences, Low)?))
    }
    fn views(
        r: &mut dyn ReadStore,
        session: &str,
        run_id: &str,
        audiences: &[String],
    ) -> Result<Parts> {
        let bare = r.lease_view(session, None, run_id, false)?;
        let full = r.lease_view(session, None, run_id, true)?;
        let (claim_active, heads) = r.claim_view(session, None, Some((audiences, Low)))?;
        assert_eq!(claim_active, full.active);
        let (busy, no_heads) = r.claim_view(session, None, None)?;
        assert_eq!(busy, full.active);
        assert!(no_heads.is_empty());
        Ok((bare, full, heads))
    }
    let audiences: Vec<String> = vec!["g|".into(), "g|agent_session:s1".into()];
    // The session's own run, another session's view of it, a queued run, and no run at all.
    for (session, run_id) in [
        ("s1", "r-leased"),
        ("s2", "r-leased"),
        ("s1", "q1"),
        ("s1", "nope"),
    ] {
        let a = audiences.clone();
        let expected = store
            .read(move |r| parts(r, session, run_id, &a))
            .await
            .unwrap();
        let a = audiences.clone();
        let read = store
            .read(move |r| views(r, session, run_id, &a))
            .await
            .unwrap();
        let a = audiences.clone();
        let written = store
            .write(move |w| views(w, session, run_id, &a))
            .await
            .unwrap();
        for got in [&read, &written] {
            assert_eq!(
                format!("{got:?}"),
                format!("{expected:?}"),
                "{session} {run_id}"
            );
        }
        let (_, full, _) = &expected;
        if run_id == "r-leased" {
            assert_eq!(full.task.as_ref().unwrap().id, "t");
            let around = full.around.as_ref().unwrap();
            assert_eq!(around.runs.len(), 2);
            assert_eq!(around.dependents, ["d"]);
            assert_eq!(full.active.len(), usize::from(session == "s1"));
        }
        if run_id == "nope" {
            assert!(full.run.is_none() && full.task.is_none() && full.around.is_none());
        }
        let heads: BTreeSet<&str> = expected.2.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(heads, BTreeSet::from(["q1", "q2", "q3"]));
    }
}

async fn agent_sessions_are_touched(store: Store) {
    store
        .write(|w| w.touch_agent_session("s1", None, Some("claude"), Ts(10)))
        .await
        .unwrap();
    store
        .write(|w| w.touch_agent_session("s1", None, None, Ts(20)))
        .await
        .unwrap();
    let got = store
        .read(|r| r.agent_session("s1", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.agent_name.as_deref(), Some("claude"));
    assert_eq!((got.first_seen_at, got.last_seen_at), (Ts(10), Ts(20)));
    assert_eq!(got.token_name, None);
    assert_eq!(
        store.read(|r| r.agent_session("s2", None)).await.unwrap(),
        None
    );
}

async fn sessions_of_different_tokens_are_different_sessions(store: Store) {
    store
        .write(|w| {
            w.touch_agent_session("s1", Some("pool-a"), Some("a"), Ts(10))?;
            w.touch_agent_session("s1", Some("pool-b"), Some("b"), Ts(20))?;
            let t = task("t", 1);
            w.insert_task(&t)?;
            let mut r = run("r", &t.id, RunStatus::Claimed, 1);
            r.session_id = Some("s1".into());
            r.session_token = Some("pool-a".into());
            w.insert_run(&r)
        })
        .await
        .unwrap();
    let (a, b, none, runs_a, runs_b) = store
        .read(|r| {
            Ok((
                r.agent_session("s1", Some("pool-a"))?.unwrap(),
                r.agent_session("s1", Some("pool-b"))?.unwrap(),
                r.agent_session("s1", None)?,
                r.active_run_of_session("s1", Some("pool-a"))?,
                r.active_runs_of_session("s1", Some("pool-b"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        (a.agent_name.as_deref(), a.first_seen_at),
        (Some("a"), Ts(10))
    );
    assert_eq!(
        (b.agent_name.as_deref(), b.first_seen_at),
        (Some("b"), Ts(20))
    );
    assert_eq!(b.token_name.as_deref(), Some("pool-b"));
    assert_eq!(none, None);
    assert_eq!(runs_a.as_deref(), Some("r"));
    assert!(runs_b.is_empty());
}

async fn reads_survive_panics_and_run_in_parallel_with_a_busy_writer(store: Store) {
    insert(&store, vec![task("t", 1)]).await;
    let err = store
        .read(|_| -> Result<()> { panic!("reader panics") })
        .await;
    assert!(matches!(err, Err(Error::Storage(m)) if m == "internal panic"));

    // The writer holds an open transaction with an uncommitted insert: reads neither wait for it
    // nor see it.
    let (release, blocker) = hold_writer(&store).await;
    let s = store.clone();
    let pending = tokio::spawn(async move { insert_result(&s, task("u", 1)).await });
    wait_queued(&store, 1).await;
    for _ in 0..10 {
        assert!(get_task(&store, "t").await.is_some());
        assert!(get_task(&store, "u").await.is_none());
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    pending.await.unwrap().unwrap();
    assert!(get_task(&store, "u").await.is_some());
}

/// The list read of a page (the index it takes is each backend's plan test).
async fn task_pages_resume_after_their_key(store: Store) {
    insert(&store, paging_tasks()).await;
    let all: Vec<Task> = store
        .read(|r| r.list_tasks(&TaskFilter::default()))
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["p", "e", "d", "b", "a", "c", "f"]);
    // From every position, the rest of the list follows exactly, ties included.
    for (i, t) in all.iter().enumerate() {
        let filter = TaskFilter {
            after: Some(TaskKey::of(t)),
            ..Default::default()
        };
        assert_eq!(
            list(&store, filter).await,
            ids[i + 1..].to_vec(),
            "after {}",
            t.id
        );
        // The children of `p` page the same way.
        let children = TaskFilter {
            after: Some(TaskKey::of(t)),
            parent_task_id: Some("p".into()),
            limit: Some(3),
            ..Default::default()
        };
        let expected: Vec<&str> = ids[i + 1..]
            .iter()
            .copied()
            .filter(|id| *id != "p")
            .take(3)
            .collect();
        assert_eq!(
            list(&store, children).await,
            expected,
            "children after {}",
            t.id
        );
    }
}

async fn counters_stay_equal_to_a_recount_through_every_kind_of_write(store: Store) {
    let b = Task {
        owner: Some(Ref::new("pool", "gpu")),
        ..full_task("b")
    };
    insert(&store, vec![task("a", 1), b, task("c", 1)]).await;
    store
        .write(|w| {
            w.insert_dependency(&blocks("b", "a", 2))?;
            w.insert_dependency(&blocks("c", "a", 2))?;
            w.insert_dependency(&blocks("c", "b", 2))?;
            w.insert_run(&run("a1", "a", RunStatus::Queued, 10))?;
            w.insert_run(&run("b1", "b", RunStatus::Queued, 10))
        })
        .await
        .unwrap();
    assert_counters_match_a_recount(&store).await;
    assert_eq!(
        rows(&store, "SELECT SUM(n) FROM obs_task_counts").await,
        ["3"],
        "the counters were written"
    );

    // A claim, start and completion, and a failure followed by a retry: some in one batch.
    let (release, held) = hold_writer(&store).await;
    let claim = |id: &'static str, task: &'static str, status: RunStatus| {
        let s = store.clone();
        tokio::spawn(async move {
            s.write(move |w| {
                let mut r = w.run(id)?.unwrap();
                r.status = status;
                r.claimed_at = Some(Ts(15));
                if status != RunStatus::Claimed {
                    r.started_at = Some(Ts(18));
                }
                w.update_run(&r)?;
                let mut t = w.task(task)?.unwrap();
                t.status = TaskStatus::InProgress;
                w.update_task(&t)
            })
            .await
        })
    };
    let writes = vec![
        claim("a1", "a", RunStatus::Claimed),
        claim("b1", "b", RunStatus::Failed),
    ];
    // A command that fails after writing: its counter changes go with its savepoint.
    let s = store.clone();
    let failing = tokio::spawn(async move {
        s.write(|w| {
            w.insert_run(&run("lost", "c", RunStatus::Failed, 11))?;
            Err::<(), _>(Error::validation("changed my mind"))
        })
        .await
    });
    wait_queued(&store, 3).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert!(failing.await.unwrap().is_err());
    assert_counters_match_a_recount(&store).await;

    store
        .write(|w| {
            let mut a1 = w.run("a1")?.unwrap();
            a1.status = RunStatus::Completed;
            a1.started_at = Some(Ts(20));
            w.update_run(&a1)?;
            let mut b2 = run("b2", "b", RunStatus::Queued, 30);
            b2.attempt = 2;
            w.insert_run(&b2)?;
            // New dimensions carry the task's runs along.
            let mut b = w.task("b")?.unwrap();
            b.owner = Some(Ref::new("agent_session", "s-1"));
            b.network_channel = None;
            b.approval_state = ApprovalState::Approved;
            w.update_task(&b)
        })
        .await
        .unwrap();
    assert_counters_match_a_recount(&store).await;

    // Removing edges and deleting a blocker with dependents and runs.
    store
        .write(|w| {
            w.delete_dependency("c", "b")?;
            w.delete_task("a")
        })
        .await
        .unwrap();
    assert_counters_match_a_recount(&store).await;
    let kept = rows(&store, "SELECT id, dependency_count FROM tasks").await;
    assert_eq!(kept, vec!["b|0", "c|0"]);
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }
}

const RANDOM_TASKS: usize = 10;

/// One random write through the primitives, keeping the model's invariants storage relies on
/// (at most one open run per task; runs only move forward).
fn random_operation(w: &mut dyn WriteStore, rng: &mut Rng, step: i64) -> Result<()> {
    let id = format!("t{}", rng.below(RANDOM_TASKS));
    let at = 100 + step;
    let owners = [
        None,
        Some(Ref::new("pool", "gpu")),
        Some(Ref::new("agent_session", "s-1")),
        Some(Ref::new("human", "ann")),
    ];
    let channels = [None, Some("net"), Some("Net-2")];
    let Some(mut t) = w.task(&id)? else {
        let mut t = task(&id, at);
        t.owner = rng.pick(&owners);
        t.network_channel = rng.pick(&channels).map(str::to_string);
        if rng.below(2) == 0 {
            t.scope = Scope::Workspace;
            t.workspace_id = Some(format!("ws-{}", rng.below(2)));
        }
        t.status = rng.pick(&[TaskStatus::Ready, TaskStatus::Pending, TaskStatus::Draft]);
        return w.insert_task(&t);
    };
    let open = w.open_runs_of_tasks(std::slice::from_ref(&id))?;
    match rng.below(8) {
        0 => {
            t.owner = rng.pick(&owners);
            t.network_channel = rng.pick(&channels).map(str::to_string);
            t.status = rng.pick(TaskStatus::ALL);
            t.approval_state = rng.pick(ApprovalState::ALL);
            t.updated_at = Ts(at);
            w.update_task(&t)
        }
        1 | 2 if open.is_empty() => {
            let mut r = run(&format!("r-{step}"), &id, RunStatus::Queued, at);
            r.attempt = w.runs_of_task(&id)?.len() as i64 + 1;
            r.network_channel = rng.pick(&channels).map(str::to_string);
            if rng.below(3) == 0 {
                // Failed before it was ever claimed.
                r.status = RunStatus::Failed;
                r.ended_at = Some(Ts(at));
            }
            w.insert_run(&r)
        }
        1..=3 if !open.is_empty() => {
            let mut r = open[0].clone();
            let late = at + rng.below(20) as i64;
            match r.status {
                RunStatus::Queued => {
                    r.status = RunStatus::Claimed;
                    r.claimed_at = Some(Ts(late));
                }
                RunStatus::Claimed => {
                    r.status = RunStatus::Running;
                    r.started_at = Some(Ts(late));
                }
                _ => {
                    r.status =
                        rng.pick(&[RunStatus::Completed, RunStatus::Failed, RunStatus::Canceled]);
                    r.ended_at = Some(Ts(late));
                }
            }
            w.update_run(&r)
        }
        4 | 5 => {
            let on = format!("t{}", rng.below(RANDOM_TASKS));
            let exists = w.task(&on)?.is_some();
            let linked = w
                .dependencies_of(&id)?
                .iter()
                .any(|d| d.depends_on_task_id == on);
            if on == id || !exists {
                Ok(())
            } else if linked {
                w.delete_dependency(&id, &on).map(drop)
            } else {
                w.insert_dependency(&blocks(&id, &on, at))
            }
        }
        6 => w.set_claim_audience(&id, rng.pick(&[None, Some("g|"), Some("w:x|")])),
        7 if rng.below(3) == 0 => w.delete_task(&id),
        _ => w
            .append_event(&event(&format!("e-{step}"), &id, at))
            .map(drop),
    }
}

async fn counters_stay_equal_to_a_recount_after_random_operations(store: Store) {
    let mut seeds = Rng(0x5eed_cafe_f00d);
    let mut step = 0;
    for round in 0..12 {
        // Commands of one round queue behind a held writer and commit as one batch; some fail
        // after writing, some roll back an item.
        let (release, held) = hold_writer(&store).await;
        let mut commands = Vec::new();
        for i in 0..8 {
            let (seed, first) = (seeds.0 | 1, step);
            seeds.below(2);
            step += 10;
            let s = store.clone();
            commands.push(tokio::spawn(async move {
                s.write(move |w| {
                    let mut rng = Rng(seed);
                    for k in 0..5 {
                        random_operation(w, &mut rng, first + k)?;
                    }
                    if i == 3 {
                        w.begin_item()?;
                        for k in 5..8 {
                            random_operation(w, &mut rng, first + k)?;
                        }
                        w.end_item(false)?;
                    }
                    if i == 5 {
                        return Err(Error::validation("changed my mind"));
                    }
                    Ok(())
                })
                .await
            }));
            wait_queued(&store, i + 1).await;
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        for (i, c) in commands.into_iter().enumerate() {
            let result = c.await.unwrap();
            assert_eq!(
                result.is_ok(),
                i != 5,
                "round {round}, command {i}: {result:?}"
            );
        }
        assert_counters_match_a_recount(&store).await;
    }
    let tasks = rows(&store, "SELECT COUNT(*) FROM tasks").await;
    let runs = rows(&store, "SELECT COUNT(*) FROM task_runs").await;
    assert_ne!(tasks, ["0"], "the operations wrote tasks");
    assert_ne!(runs, ["0"], "the operations wrote runs");
}

async fn a_rolled_back_item_undoes_only_itself_and_publishes_no_sequence_of_it(store: Store) {
    insert(&store, vec![task("a", 1), task("b", 1)]).await;
    let kept = store
        .write(|w| {
            w.begin_item()?;
            w.append_event(&event("e-1", "a", 2))?;
            w.end_item(true)?;
            w.begin_item()?;
            w.append_event(&event("e-2", "b", 3))?;
            w.insert_run(&run("r-b", "b", RunStatus::Failed, 3))?;
            w.update_task(&Task {
                title: "renamed".into(),
                ..task("b", 1)
            })?;
            w.end_item(false)?;
            // An item cannot nest, and cannot end twice.
            w.begin_item()?;
            assert!(w.begin_item().is_err());
            w.end_item(true)?;
            assert!(w.end_item(true).is_err());
            Ok(())
        })
        .await;
    kept.unwrap();
    assert_eq!(get_task(&store, "a").await.unwrap().latest_event_seq, 1);
    let b = get_task(&store, "b").await.unwrap();
    assert_eq!((b.latest_event_seq, b.title.as_str()), (0, "title of b"));
    // Its counter changes went with it.
    assert_counters_match_a_recount(&store).await;
    // The rolled-back event's sequence was never published and is the next one used.
    assert_eq!(*store.committed_sequence().borrow(), 1);
    let seq = store
        .write(|w| w.append_event(&event("e-3", "b", 4)))
        .await
        .unwrap();
    assert_eq!(seq, 2);
}

async fn rolled_back_items_leave_no_gap_in_the_sequences(store: Store) {
    insert(&store, vec![task("a", 1)]).await;
    let seqs = store
        .write(|w| {
            // The very first event of the log, rolled back: the log still starts at 1.
            w.begin_item()?;
            w.append_event(&event("x-1", "a", 2))?;
            w.append_event(&event("x-2", "a", 2))?;
            w.end_item(false)?;
            let first = w.append_event(&event("e-1", "a", 3))?;
            w.begin_item()?;
            w.append_event(&event("x-3", "a", 4))?;
            w.end_item(false)?;
            // An item that appended nothing leaves the sequence alone.
            w.begin_item()?;
            w.end_item(false)?;
            let second = w.append_event(&event("e-2", "a", 5))?;
            Ok((first, second))
        })
        .await
        .unwrap();
    assert_eq!(seqs, (1, 2));
    assert_eq!(*store.committed_sequence().borrow(), 2);
    let a = get_task(&store, "a").await.unwrap();
    assert_eq!((a.latest_event_seq, a.last_activity_at), (2, Ts(5)));
}

/// What the heads are, of one audience and of several (the index seek behind them is each
/// backend's plan test).
async fn claim_class_heads_are_the_oldest_run_of_each_class_of_the_audience(store: Store) {
    use Priority::{Low, Medium, Urgent};
    let g = Some("g|");
    insert_runs(
        &store,
        vec![
            class_run("r1", g, Medium, &[], 5),
            class_run("r2", g, Medium, &[], 3),
            // The same set of required capabilities in another order: one class.
            class_run("r3", g, Medium, &["b", "a"], 4),
            class_run("r4", g, Medium, &["a", "b"], 2),
            class_run("r5", g, Urgent, &[], 9),
            class_run("r6", g, Low, &[], 1),
            class_run("r7", Some("w:x|"), Medium, &[], 1),
            class_run("r8", None, Medium, &[], 1),
        ],
    )
    .await;
    store
        .write(|w| {
            let mut claimed = w.run("r5")?.unwrap();
            claimed.status = RunStatus::Claimed;
            w.update_run(&claimed)?;
            // A task has one open run: r9 is another task's, in r5's class.
            w.insert_task(&task("t-r9", 20))?;
            w.insert_run(&Run {
                status: RunStatus::Queued,
                id: "r9".into(),
                task_id: "t-r9".into(),
                queued_at: Ts(20),
                ..claimed
            })
        })
        .await
        .unwrap();
    assert_eq!(heads(&store, &["g|"], Medium).await, ["r2", "r4", "r9"]);
    assert_eq!(heads(&store, &["g|"], Low).await, ["r2", "r4", "r6", "r9"]);
    assert_eq!(heads(&store, &["w:x|"], Low).await, ["r7"]);
    assert!(heads(&store, &["g|pool:x"], Low).await.is_empty());
    // Several audiences: the heads of each, together.
    assert_eq!(
        heads(&store, &["g|pool:x", "w:x|", "g|"], Medium).await,
        ["r2", "r4", "r7", "r9"]
    );
    assert!(heads(&store, &[], Low).await.is_empty());

    // An audience change leaves the index at once; update_run never moves it back.
    store
        .write(|w| {
            w.set_claim_audience("t-r2", None)?;
            let mut stale = w.run("r2")?.unwrap();
            stale.claim_audience = Some("g|".into());
            stale.metadata = Some(json!({"touched": true}));
            w.update_run(&stale)
        })
        .await
        .unwrap();
    assert_eq!(heads(&store, &["g|"], Medium).await, ["r1", "r4", "r9"]);
    let r2 = store.read(|r| r.run("r2")).await.unwrap().unwrap();
    assert_eq!(r2.claim_audience, None);
}

/// Many claims at once, each a write transaction that takes the oldest queued run through the
/// primitives (`claim_class_heads`, `update_run`), as core's claim does: every run is claimed
/// exactly once. On PostgreSQL half of the claims go through a second server, so transactions of
/// two writers run at once.
async fn claims_are_exclusive_under_concurrent_transactions(store: Store) {
    const RUNS: usize = 40;
    const CLAIMS: usize = RUNS + 8;
    let rows: Vec<_> = (0..RUNS)
        .map(|i| {
            let required: &[&str] = if i % 3 == 0 { &["gpu"] } else { &[] };
            class_run(
                &format!("r{i:02}"),
                Some("g|"),
                Priority::Medium,
                required,
                (i % 7) as i64,
            )
        })
        .collect();
    insert_runs(&store, rows).await;
    let other = second_server(&store).await;
    let servers: Vec<Store> = [Some(store.clone()), other.clone()]
        .into_iter()
        .flatten()
        .collect();

    let mut claims = Vec::new();
    for i in 0..CLAIMS {
        let s = servers[i % servers.len()].clone();
        claims.push(tokio::spawn(async move {
            let session = format!("s{i:02}");
            s.write(move |w| {
                let Some(mut r) = w
                    .claim_class_heads(&["g|".to_string()], Priority::Low)?
                    .into_iter()
                    .min_by(|a, b| (a.queued_at, &a.id).cmp(&(b.queued_at, &b.id)))
                else {
                    return Ok(None);
                };
                assert_eq!(r.status, RunStatus::Queued, "a head is queued");
                r.status = RunStatus::Claimed;
                r.claimed_by = Some(Ref::new("agent_session", session.clone()));
                r.session_id = Some(session.clone());
                r.claimed_at = Some(Ts(100));
                r.lease_until = Some(Ts(1_000));
                w.update_run(&r)?;
                Ok(Some((r.id, session)))
            })
            .await
        }));
    }
    let mut claimed: HashMap<String, String> = HashMap::new();
    let mut empty = 0;
    for c in claims {
        match c.await.unwrap().unwrap() {
            Some((run, session)) => {
                if let Some(first) = claimed.insert(run.clone(), session.clone()) {
                    panic!("{run} claimed twice: by {first} and by {session}");
                }
            }
            None => empty += 1,
        }
    }
    assert_eq!(claimed.len(), RUNS, "every run is claimed");
    assert_eq!(
        empty,
        CLAIMS - RUNS,
        "the claims beyond the runs found none"
    );
    // What is stored agrees: each run claimed by the session that was told it got it.
    let stored = store
        .read(|r| {
            (0..RUNS)
                .map(|i| r.run(&format!("r{i:02}")).map(Option::unwrap))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .unwrap();
    for r in stored {
        assert_eq!(r.status, RunStatus::Claimed, "{}", r.id);
        assert_eq!(r.session_id.as_ref(), claimed.get(&r.id), "{}", r.id);
    }
    assert!(heads(&store, &["g|"], Priority::Low).await.is_empty());
    if let Some(other) = other {
        close(other).await;
    }
}

/// Writers append concurrently while a reader follows `committed_sequence`: sequences are
/// strictly increasing in commit order (each writer's later command gets higher ones), and every
/// time the watch moves to N, a reader sees every event up to N, with no gap before any event it
/// sees, and never loses one it saw. On PostgreSQL half of the writers write through a second
/// server.
async fn events_are_visible_in_sequence_order(store: Store) {
    const WRITERS: usize = 6;
    const COMMANDS: usize = 10;
    const PER_COMMAND: usize = 3;
    const TOTAL: i64 = (WRITERS * COMMANDS * PER_COMMAND) as i64;
    insert(
        &store,
        (0..WRITERS).map(|w| task(&format!("w{w}"), 1)).collect(),
    )
    .await;
    let other = second_server(&store).await;
    let servers: Vec<Store> = [Some(store.clone()), other.clone()]
        .into_iter()
        .flatten()
        .collect();

    let mut watch = store.committed_sequence();
    let s = store.clone();
    let reader = tokio::spawn(async move {
        let mut seen: Vec<(i64, String)> = Vec::new();
        loop {
            let committed = *watch.borrow_and_update();
            let events = s.read_observe(|r| r.events_after(0, 10_000)).await.unwrap();
            let now: Vec<(i64, String)> = events.into_iter().map(|e| (e.sequence, e.id)).collect();
            let seqs: Vec<i64> = now.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(
                seqs,
                (1..=now.len() as i64).collect::<Vec<_>>(),
                "an event is visible before an earlier one"
            );
            assert!(
                now.len() as i64 >= committed,
                "the watch said {committed}, a reader sees {}",
                now.len()
            );
            assert_eq!(&now[..seen.len()], &seen[..], "a seen event changed");
            seen = now;
            if committed >= TOTAL {
                return seen;
            }
            watch.changed().await.unwrap();
        }
    });

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = servers[w % servers.len()].clone();
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for c in 0..COMMANDS {
                let seqs = s
                    .write(move |wr| {
                        (0..PER_COMMAND)
                            .map(|k| {
                                let id = format!("e-{w}-{c}-{k}");
                                wr.append_event(&event(&id, &format!("w{w}"), 10 + c as i64))
                            })
                            .collect::<Result<Vec<i64>>>()
                    })
                    .await
                    .unwrap();
                mine.extend(seqs);
            }
            mine
        }));
    }
    let mut all = BTreeSet::new();
    for wr in writers {
        let mine = wr.await.unwrap();
        assert!(
            mine.windows(2).all(|p| p[0] < p[1]),
            "a later command of one writer got a lower sequence: {mine:?}"
        );
        all.extend(mine);
    }
    assert_eq!(all, (1..=TOTAL).collect::<BTreeSet<_>>());
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the watch reached the last sequence")
        .unwrap();
    assert_eq!(seen.len() as i64, TOTAL);
    if let Some(other) = other {
        close(other).await;
    }
}
