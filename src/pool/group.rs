//! `TaskGroup`: a set of tasks of one pool, joined together (issue 10).
