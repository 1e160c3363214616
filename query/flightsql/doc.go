// Package flightsql serves the query engine over Arrow Flight SQL, so data
// science tools (pyarrow, ADBC, pandas, TensorFlow input pipelines) read
// results as Arrow record batches with no row-by-row conversion.
//
// It owns the Flight SQL endpoints, logins (HTTP Basic in the handshake, then
// bearer tokens) and prepared statement handles; the engine runs the SQL and
// decides what the principal may read.
package flightsql
