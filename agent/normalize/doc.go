// Package normalize turns one delimited-text entry into Arrow record batches shaped by a
// feed definition's BatchSchema, and every row it cannot convert into a Reject.
//
// It owns decoding the declared text encoding to UTF-8 (DecodingReader), parsing, header
// mapping, type conversion and the _row position; it does not pick the feed, unpack
// archives, spool or send batches, and it keeps no state between runs.
package normalize
