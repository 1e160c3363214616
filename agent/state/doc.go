// Package state is the agent's durable per-file memory (bbolt, keyed by content SHA-256):
// which source files are in progress, done or quarantined, and which of their batches await an ack.
//
// It decides nothing about files on disk; the agent asks it whether to parse a file and tells
// it what was spooled and acknowledged, so a restart neither skips nor repeats a file.
package state
