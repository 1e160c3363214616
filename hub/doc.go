// Package hub is medlake's ingest role: it consumes agents' batches from MQTT, validates
// them against the feed definitions, commits them to Iceberg tables, then acknowledges.
// It keeps the feed definitions current with the catalog and pushes them to agents on
// their config topics.
//
// The embedded broker lives in hub/broker; table metadata and the batch ledger in catalog.
package hub
