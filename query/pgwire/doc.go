// Package pgwire serves the query engine over the PostgreSQL wire protocol
// (simple and extended query flows) so psql, pgx, ODBC and JDBC clients work.
//
// It owns connections, authentication and type encoding; it does not plan or
// run SQL (the engine does) and does not offer TLS yet.
package pgwire
