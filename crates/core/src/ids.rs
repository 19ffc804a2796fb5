//! Generated identifiers: a prefix and 16 lowercase hex characters of randomness.

use rand::RngCore;

fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn task_id() -> String {
    generate("task-")
}

pub fn run_id() -> String {
    generate("run-")
}

pub fn event_id() -> String {
    generate("evt-")
}

/// The id of the event numbered `sequence`, in a log that names its events by sequence: as
/// unique as the sequence, and increasing with it, so that each new id is added at the end of
/// the index that keeps ids unique rather than on a random page of it.
pub fn event_id_of(sequence: i64) -> String {
    format!("evt-{sequence:016x}")
}
