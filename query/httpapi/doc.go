// Package httpapi serves SQL over HTTP: a statement in, its rows out as JSON,
// CSV, Arrow IPC or Parquet, streamed, for scripts, reports and notebooks.
//
// It owns request parsing, HTTP Basic authentication against an auth.Store and
// result encoding; the engine runs the statement and decides what the
// principal may read.
package httpapi
