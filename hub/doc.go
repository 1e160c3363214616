// Package hub is medlake's ingest role: it consumes agents' batches from MQTT, validates
// them against the feed definitions, commits them to Iceberg tables, then acknowledges.
//
// The embedded broker lives in hub/broker; table metadata and the batch ledger in catalog.
package hub
