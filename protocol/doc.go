// Package protocol is the agent↔hub contract: MQTT topics, the batch envelope, the hub's
// acknowledgment, agent status and the config the hub pushes (feed definitions), with
// their codecs and versioning rules.
//
// It holds wire types and codecs only. It performs no I/O and imports no other medlake
// package, so the agent and the hub can each depend on it without depending on each other.
//
// Versioning: every message carries "major.minor". A decoder accepts any minor version of
// the major it knows (new fields are ignored) and rejects another major with
// ErrUnknownVersion, so an old hub never half-understands a new agent.
package protocol
