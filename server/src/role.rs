//! The roles one `quarry serve` process plays.

use std::{collections::BTreeSet, fmt, str::FromStr};

/// One job a Quarry process can do; `quarry serve --role …` picks them
/// (ARCHITECTURE.md, "Scale beyond one machine": one Deployment per role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `AssistantService`: the orchestrator. Reaches each tool in this
    /// process when that tool's role runs here, else at `server.*_url`.
    Assistant,
    /// `SqlService`: the text-to-SQL tool.
    Sql,
    /// `SearchService`: hybrid search, following the index changes.
    Search,
    /// `SummaryService` and, with `server.run_summary_builder`, the
    /// summary builder's schedule.
    Summary,
    /// The index sync (change data capture into the search sidecars), with
    /// `server.run_sync`; serves no RPC of its own.
    Sync,
}

impl Role {
    /// Every role, in the order they are listed.
    pub const ALL: [Role; 5] = [
        Role::Assistant,
        Role::Sql,
        Role::Search,
        Role::Summary,
        Role::Sync,
    ];

    /// The role's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Assistant => "assistant",
            Role::Sql => "sql",
            Role::Search => "search",
            Role::Summary => "summary",
            Role::Sync => "sync",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected assistant, sql, search, summary or sync)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The set of roles a process plays; empty is not allowed ([`Roles::all`]
/// is the default of `quarry serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    /// Every role: one process does everything (the development default).
    pub fn all() -> Self {
        Self(Role::ALL.into_iter().collect())
    }

    /// Just `roles`; every role when `roles` is empty (so an absent
    /// `--role` means all).
    pub fn of(roles: impl IntoIterator<Item = Role>) -> Self {
        let set: BTreeSet<Role> = roles.into_iter().collect();
        if set.is_empty() {
            Self::all()
        } else {
            Self(set)
        }
    }

    /// Whether this process plays `role`.
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// The roles, in [`Role::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl Default for Roles {
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "search-sync".parse::<Role>(),
            Err(UnknownRole("search-sync".to_owned()))
        );
    }

    #[test]
    fn no_roles_means_all() {
        assert_eq!(Roles::of([]), Roles::all());
        let some = Roles::of([Role::Sql, Role::Assistant, Role::Sql]);
        assert!(some.has(Role::Sql) && some.has(Role::Assistant) && !some.has(Role::Sync));
        assert_eq!(some.to_string(), "assistant,sql");
    }
}
