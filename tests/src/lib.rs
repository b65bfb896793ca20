//! placeholder, replaced in this commit series
