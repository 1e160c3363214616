// Package agent wires the facility agent: watch export folders, hash, unpack, normalize by feed
// definition, spool batches durably and send them to the hub, finishing files only after hub acks.
// It runs the feed definitions the hub pushes (kept in state_dir) merged with optional local ones.
//
// It owns the agent's configuration and the goroutines of one running agent; the pieces live in
// agent/watch, agent/unpack, agent/normalize, agent/spool, agent/state and agent/send.
package agent
