//! `quarry token`: mint a development JWT.

use std::{path::Path, time::Duration};

use anyhow::Context as _;

/// Arguments of `quarry token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tenant claim.
    #[arg(long)]
    pub tenant: String,
    /// Subject (`sub`) claim.
    #[arg(long)]
    pub subject: String,
    /// Role; repeat for several.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Scope; repeat for several.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
}

/// Prints an HS256 token signed with the configured secret, carrying the
/// configured issuer and audience.
///
/// # Errors
/// No usable secret, or signing fails.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let config = super::load(config)?;
    let secret = config.auth.secret().context("auth secret")?;
    let mut claims = quarry_auth::Claims::issued_now(
        args.tenant,
        args.subject,
        Duration::from_secs(args.ttl_secs),
    );
    claims.roles = args.roles;
    claims.scopes = args.scopes;
    claims.iss = config.auth.issuer.clone();
    claims.aud = config.auth.audience.iter().cloned().collect();
    println!("{}", quarry_auth::mint_hs256(&secret, &claims)?);
    Ok(())
}
