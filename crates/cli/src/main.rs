//! The `tasklane` binary.

mod database;
mod fd_limit;
mod serve;
mod token;

/// SQLite and the HTTP stack allocate a few hundred small blocks per request; mimalloc serves
/// them in fewer instructions than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tasklane",
    version,
    about = "Durable task service for agent work"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API server.
    Serve(serve::ServeArgs),
    /// Manage API tokens (for `serve --auth token`).
    Token(token::TokenArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => token::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tasklane: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
