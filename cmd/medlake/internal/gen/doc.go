// Package gen writes seed-shaped facility exports for tests and benchmarks: EMR archives
// (CSV, TXT, XML in gzip, zip and tar.gz) laid out per tenant and facility, the feed
// definitions that read them, and a manifest of row counts and key checksums to check a
// lake against.
//
// Output is a pure function of the seed and the options (not of the clock or of worker
// scheduling), so two runs are byte-identical. It does not ingest anything; `medlake gen`
// wires it to the command line.
package gen
