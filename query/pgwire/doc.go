// Package pgwire serves the query engine over the PostgreSQL wire protocol
// so psql, pgx, node-postgres, psqlODBC and pgJDBC clients (and the BI tools
// built on them) connect, browse and query.
//
// It owns connections: TLS (SSLRequest), SCRAM-SHA-256 logins checked
// against an auth.Store (with tls-server-end-point channel binding over
// TLS), the simple and extended query protocols with portals, row-limited
// Execute and cursors (DECLARE/FETCH/CLOSE) streamed from engine cursors
// (stream.go), SQL PREPARE/EXECUTE, type
// OIDs and text and binary encodings, cancel requests, session commands
// (SET, SHOW, BEGIN/COMMIT) and the PostgreSQL catalog emulation
// (catalog.sql in DuckDB schema medlake_pg, plus a token-level rewrite of
// client SQL in sqlrewrite.go). It does not plan or run SQL (the engine
// does) and does not decide what a principal may read (the engine's scope).
package pgwire
