// Package maintain keeps lake tables healthy while the hub keeps committing to them:
// it compacts small files per partition (folding row-level deletes into the rewrite
// and sorting rows within each partition), expires snapshots under a retention
// policy, removes orphan files, and reports per-table health. Runner schedules these
// on one node at a time, through a lease in the catalog.
//
// It writes table data only through compaction's rewrite, which replaces files with
// files holding the same rows; it never appends or deletes rows. Schema evolution
// driven by feed definitions is the hub's committer's (hub.evolve).
package maintain
