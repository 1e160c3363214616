// Package protocol is the agent↔hub contract: MQTT topics, the batch envelope, the hub's
// acknowledgment, agent status and the config the hub pushes (feed definitions), with
// their codecs and versioning rules; and the one message outside that contract, the
// hub's commit notice to query nodes (notice.go).
//
// It holds wire types and codecs only. It performs no I/O and imports no other medlake
// package, so the agent and the hub can each depend on it without depending on each other.
//
// Payload: a batch's payload is one Arrow IPC stream (EncodeRecords). Its body buffers
// are zstd-compressed, or LZ4 for a batch under SmallBatchBytes: the IPC writer builds a
// zstd encoder per stream, and for the small batches of an archive of one-record XML
// files that set-up cost more than the rest of the agent's work on them (measured in
// BENCHMARKS.md). Arrow IPC names the codec in each message, so any Arrow reader, and
// every 1.x decoder, reads both; the choice is the writer's and changes no version.
//
// Rejects: rows a feed definition refuses travel as ordinary batches to the reserved
// table feed.RejectsTable ("medlake_rejects"), in the fixed schema feed.Rejects()
// (feed, feed_version, source_file, source_sha256, source_row, source_line,
// source_column, raw_text, reason, then _source_file and _row). Their header names the refusing feed and
// its version, so the hub's lineage columns describe them as for data; their ids are
// BatchID(sha256, feed.RejectsKey(feed), version, part), a key no feed name can take, so a
// re-sent file repeats its reject batch ids and the hub's ledger drops the repeats. A
// file is done only when its data and reject batches are all committed. The golden
// vector testdata/batch_rejects_v1.bin pins the form.
//
// Versioning: every message carries "major.minor". A decoder accepts any minor version of
// the major it knows (new fields are ignored) and rejects another major with
// ErrUnknownVersion, so an old hub never half-understands a new agent.
//
// History of minor versions (every one readable by every 1.x peer):
//
//   - 1.0: the first contract.
//   - 1.1: freshness and backlog. BatchHeader.SourceModTime (source_mtime) carries the
//     source file's modification time, from which the hub measures freshness; Status
//     gains OldestUnacked (oldest_unacked, when the oldest unacknowledged batch was
//     spooled) and FilesWaiting (files_waiting). All three are optional: a 1.1 hub
//     reading a 1.0 agent finds them zero and says so (freshness falls back to
//     created_at), and a 1.0 hub ignores them. testdata/batch_v1_0.bin and
//     testdata/status_v1_0.json keep 1.0 messages that every decoder must still read.
package protocol
