//! `map_unordered` / `map_ordered`: streams of results through a pool (issue 10).
