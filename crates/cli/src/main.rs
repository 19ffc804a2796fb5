//! The `tasklane` binary: the server (`serve`), token administration (`token`), and a client
//! for every operation of a running server.

mod backup;
mod client;
mod database;
mod fd_limit;
mod logging;
mod serve;
mod token;

/// SQLite and the HTTP stack allocate a few hundred small blocks per request; mimalloc serves
/// them in fewer instructions than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tasklane",
    version,
    about = "Durable task service for agent work",
    after_help = client::EXIT_CODES
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
    /// Copy the database to a new file, consistently, also while the server runs.
    Backup(backup::BackupArgs),
    #[command(flatten)]
    Client(Box<client::ClientCommand>),
    /// Print a shell completion script.
    ///
    /// For example `tasklane completions bash > ~/.local/share/bash-completion/completions/tasklane`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Client(command) => return client::run(*command),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tasklane", &mut script);
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return std::process::ExitCode::SUCCESS;
        }
        Command::Serve(args) => {
            logging::init(args.log_format());
            serve::run(args)
        }
        Command::Token(args) => {
            logging::init(logging::LogFormat::Text);
            token::run(args)
        }
        Command::Backup(args) => {
            logging::init(logging::LogFormat::Text);
            backup::run(args)
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tasklane: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
