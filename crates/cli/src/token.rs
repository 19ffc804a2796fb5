//! `tasklane token create|list|revoke`: API tokens for token mode, managed directly in the
//! database. A running server picks changes up within a second.

use clap::{Args, Subcommand};
use tasklane_core::model::{ApiToken, Role};
use tasklane_core::time::{Clock, SystemClock};
use tasklane_core::tokens;

use crate::database;

#[derive(Args)]
pub struct TokenArgs {
    /// Database: sqlite://<path> (or a bare path) or postgres://...
    #[arg(
        long,
        global = true,
        env = "TASKLANE_DATABASE_URL",
        default_value = "sqlite://./tasklane-data/tasklane.db"
    )]
    database: String,
    #[command(flatten)]
    postgres: database::PostgresArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (only the token, on stdout). It is shown this once.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long)]
        name: String,
    },
    /// List tokens: names, roles, creation and last use. Secrets are never shown.
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Operator,
    Agent,
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Operator => Role::Operator,
            RoleArg::Agent => Role::Agent,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

pub fn run(args: TokenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (store, _) = database::open(&args.database, &args.postgres, false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        match args.command {
            TokenCommand::Create { role, name } => {
                let name = name.trim().to_string();
                if name.is_empty() || name.len() > 128 || name.chars().any(char::is_whitespace) {
                    return Err("--name must be 1-128 characters without whitespace".into());
                }
                let raw = tokens::generate();
                let token = ApiToken {
                    name,
                    role: role.into(),
                    token_hash: tokens::hash(&raw),
                    created_at: SystemClock::default().now(),
                    last_used_at: None,
                };
                store.write(move |w| w.insert_api_token(&token)).await?;
                println!("{raw}");
                Ok(())
            }
            TokenCommand::List => {
                let list = store.read(|r| r.api_tokens()).await?;
                println!("{:<24} {:<9} {:<28} LAST USED", "NAME", "ROLE", "CREATED");
                for t in list {
                    println!(
                        "{:<24} {:<9} {:<28} {}",
                        t.name,
                        t.role,
                        t.created_at,
                        t.last_used_at
                            .map(|ts| ts.to_string())
                            .unwrap_or_else(|| "never".to_string())
                    );
                }
                Ok(())
            }
            TokenCommand::Revoke { name } => {
                let shown = name.clone();
                if store.write(move |w| w.revoke_api_token(&name)).await? {
                    eprintln!("revoked token {shown}");
                    Ok(())
                } else {
                    Err(format!("no token named {shown}").into())
                }
            }
        }
    });
    store.shutdown();
    outcome
}
