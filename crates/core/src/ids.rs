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
