// Package catalog opens medlake's metadata layer: the Iceberg SQL catalog (SQLite for a
// single node, PostgreSQL/CockroachDB in production), the warehouse IO, and the batch ledger.
//
// It does not write table data; the hub's committer does, through Iceberg().
package catalog
