// Package reports runs scheduled reports: each occurrence of a report's cron
// schedule runs once, on exactly one query node, as the report's owner, and
// its result is written to the warehouse next to the lake, keeping history.
//
// Report definitions and the run leases live in the catalog; what the owner
// may read is the engine's scope; result encodings are query/results'.
package reports
