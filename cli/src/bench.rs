//! `quarry bench`: load generators for the search tool's latency figures.

pub mod synthetic;
