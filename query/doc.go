// Package query serves SQL over the lake: it ties the DuckDB engine, the
// Parquet cache and the PostgreSQL wire server into one service with metrics.
//
// It owns the query role's configuration and lifecycle; it does not write
// tables or own the catalog (those belong to hub and catalog).
package query
