//! `tasklane backup <dest>`: a consistent copy of the database, taken while the server runs.
//!
//! The copy is written beside `dest` under a temporary name, synced, checked, and only then
//! linked to `dest`; linking fails if `dest` appeared meanwhile, so a backup never overwrites a
//! file and an interrupted backup never leaves a truncated file under the name asked for.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use tasklane_store::sqlite::backup;

use crate::database;

#[derive(Args)]
pub struct BackupArgs {
    /// The file to create. It must not exist.
    dest: PathBuf,
    /// Database: sqlite://<path> (or a bare path).
    #[arg(
        long,
        env = "TASKLANE_DATABASE_URL",
        default_value = "sqlite://./tasklane-data/tasklane.db"
    )]
    database: String,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: BackupArgs) -> Result<(), Box<dyn std::error::Error>> {
    let source = database::sqlite_path(&args.database, "tasklane backup")?;
    let dest = args.dest;
    if dest.exists() {
        return Err(format!(
            "{} already exists; a backup never overwrites a file",
            dest.display()
        )
        .into());
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!("directory {} does not exist", dir.display()).into());
        }
    }
    let name = dest
        .file_name()
        .ok_or_else(|| format!("{} names no file", dest.display()))?;
    let mut partial_name = name.to_os_string();
    partial_name.push(format!(".partial-{}", std::process::id()));
    let partial = dest.with_file_name(partial_name);

    let size = file_size(&source) + file_size(&wal_of(&source));
    eprintln!(
        "backing up {} ({}) to {}",
        source.display(),
        mib(size),
        dest.display()
    );
    let started = Instant::now();
    let outcome = copy(&source, &partial, &dest, size);
    if outcome.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let summary = outcome?;
    println!(
        "backup {}: {} tasks, {} runs, {} events, schema version {}, {} in {:.1} s",
        dest.display(),
        summary.tasks,
        summary.runs,
        summary.events,
        summary.schema_version,
        mib(summary.bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies into `partial` (reporting its growth), syncs and checks it, then links it to `dest`.
fn copy(
    source: &Path,
    partial: &Path,
    dest: &Path,
    expected: u64,
) -> Result<backup::DatabaseSummary, Box<dyn std::error::Error>> {
    let (done, finished) = mpsc::channel::<()>();
    let watched = partial.to_path_buf();
    let progress = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_EVERY) {
            eprintln!(
                "  copied {} of about {}",
                mib(file_size(&watched)),
                mib(expected)
            );
        }
    });
    let copied = backup::vacuum_into(source, partial);
    drop(done);
    let _ = progress.join();
    copied?;
    File::open(partial)?.sync_all()?;
    let summary = backup::summarize(partial)?;
    std::fs::hard_link(partial, dest).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} already exists; a backup never overwrites a file",
                dest.display()
            )
        } else {
            format!("cannot create {}: {e}", dest.display())
        }
    })?;
    std::fs::remove_file(partial)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The new name is durable only once its directory is.
        File::open(dir)?.sync_all()?;
    }
    Ok(summary)
}

fn wal_of(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
