// Package replay re-reads raw archives kept in the warehouse with a feed's newest
// definition and replaces, atomically and idempotently, the rows those archives gave
// the feed's table. It is what `medlake replay` runs.
//
// It owns the replay commit (an Iceberg overwrite filtered on _feed and
// _source_sha256); it does not own storing archives (catalog.ArchiveStore, written by
// the hub) nor parsing (agent.Reparse, the agent's own unpack and normalize).
package replay
