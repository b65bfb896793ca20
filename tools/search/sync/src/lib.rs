//! Change data capture for search collections: keeps each collection's
//! sidecar table (see `quarry_search::collection`) in step with its source.
