// Package quarantine owns the agent's quarantine folder: the copies of source files that
// could not be ingested, each with a reason file, and the retry requests ops leave there.
//
// The folder is the interface between a running agent and the command line. The agent
// holds its state database exclusively, so `medlake-agent quarantine list|show|retry`
// never opens it: list and show read the reason files, and retry writes a request file
// into retry/ that the running agent (or the next one to start) picks up, re-processes
// from the copy under the current feed definitions, and removes. This package does file
// I/O only; it knows nothing of feeds, state or the hub.
package quarantine
