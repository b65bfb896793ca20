//! The summaries tool: trend questions answered from pre-computed paragraphs
//! rather than thousands of rows.
//!
//! - [`definition`]: summary kinds as declared in configuration (entities,
//!   parameterised figure SQL, computations, template).
pub mod definition;
