// Package engine runs SQL over the current snapshots of a namespace's Iceberg
// tables with an embedded, locked-down DuckDB reading the local Parquet cache.
//
// It owns DuckDB, the views and the cache; it does not speak any wire
// protocol (pgwire does) and never writes tables.
package engine
