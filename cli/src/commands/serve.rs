//! `quarry serve`: run a Quarry node until SIGTERM/SIGINT.

use std::path::Path;

use anyhow::Context as _;
use quarry_server::{Role, Roles};

/// Arguments of `quarry serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Overrides `server.listen`, e.g. 127.0.0.1:50051.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// A role to play: assistant, sql, search, summary or sync; repeat for
    /// several (default: all). Roles not played here are reached at
    /// `server.sql_url` / `search_url` / `summary_url`.
    #[arg(long = "role", value_parser = clap::value_parser!(Role))]
    pub roles: Vec<Role>,
}

/// Binds `--listen` (else `server.listen`) and serves the roles asked for.
///
/// # Errors
/// Configuration, binding, or start-up failures of the roles.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let config = super::load(config)?;
    let addr = args.listen.unwrap_or(config.server.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    quarry_server::serve(
        listener,
        config,
        Roles::of(args.roles),
        quarry_server::shutdown_signal(),
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: Args,
    }

    #[test]
    fn roles_repeat_default_to_all_and_unknown_ones_are_refused() {
        let cli = Cli::try_parse_from(["serve", "--role", "assistant", "--role", "sql"]).unwrap();
        let roles = Roles::of(cli.serve.roles);
        assert_eq!(roles, Roles::of([Role::Assistant, Role::Sql]));
        let cli = Cli::try_parse_from(["serve"]).unwrap();
        assert_eq!(Roles::of(cli.serve.roles), Roles::all());
        let err = Cli::try_parse_from(["serve", "--role", "writer"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown role \"writer\""), "{err}");
    }
}
