// Package query serves SQL over the lake: it ties the DuckDB engine, the
// Parquet cache, the PostgreSQL wire and Flight SQL servers, the HTTP query
// API and the report scheduler into one service with one set of logins.
//
// It owns the query role's configuration and lifecycle; it does not write
// tables or own the catalog (those belong to hub and catalog).
package query
