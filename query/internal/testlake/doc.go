// Package testlake builds real Iceberg tables (SQLite SQL catalog, local
// warehouse) with arrow data for the query packages' tests.
//
// It is test support only; nothing outside tests imports it.
package testlake
