//! The `quarry` binary's commands ([`commands`]): `main.rs` parses the
//! arguments and dispatches to one of them. Each command is thin over the
//! library crates — the node itself is `quarry-server`; evaluation and
//! benchmarks (`quarry-eval`, `quarry-bench`, feature `dev-tools`) and the
//! Tate demo data (`quarry-demo`) live outside the server's dependency tree.

pub mod commands;
