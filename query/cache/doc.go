// Package cache keeps a local, content-addressed copy of immutable Iceberg
// data files so DuckDB reads local Parquet instead of the object store.
//
// It owns the cache directory (objects/, index/, tmp/) and its size bound; it
// does not decide which files a query needs (the engine does).
package cache
