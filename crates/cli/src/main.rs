//! The `tasklane` binary: the server (`serve`), token administration (`token`), and a client
//! for every operation of a running server.

mod client;
mod database;
mod fd_limit;
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
            init_logging();
            serve::run(args)
        }
        Command::Token(args) => {
            init_logging();
            token::run(args)
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

fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
