// Package feed is the feed definition format: how to recognize a facility's files and map
// their records to a lake table, and the Arrow schemas that mapping implies.
//
// Definitions are declarative data, shared by the agent (which executes them) and the hub
// (which creates and validates tables from them); this package parses and checks them and
// performs no I/O beyond reading an fs.FS it is handed.
package feed
