//! Quarry's end-to-end tests, one test binary: every module starts real
//! servers over gRPC against a real PostgreSQL (and, where a model is
//! involved, the scripted OpenAI-compatible server). One binary instead of
//! one per file: each would link the whole service (≈ 175 MB in a debug
//! build), so fourteen of them cost 2.4 GB of disk and fourteen links.

mod agent;
mod assistant;
mod auth;
mod bench_ask;
mod budgets;
mod cache;
mod cancel;
mod catalog;
mod console;
mod conversation;
mod fairness;
mod faults;
mod generate;
mod governance;
mod governance_props;
mod grpcurl;
mod hostile_input;
mod k8s_probes;
mod lean;
mod mcp;
mod metrics;
mod models;
mod peers;
mod pii;
mod registry;
mod replicas;
mod resilience;
mod roles;
mod router;
mod search;
mod search_fields;
mod sources;
mod sql;
mod summary;
mod traces;
mod usage;
