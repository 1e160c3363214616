package feed

import "strings"

// The rejects table collects the rows a feed definition refused, from every feed, in a
// fixed schema, so that rejected rows are queryable next to the data and nothing a
// facility sent is silently dropped.
//
// An agent sends a file's rejects as ordinary batches (see package protocol) whose header
// names Table RejectsTable and, as Feed and FeedVersion, the feed that rejected the rows
// (RejectsTable and version RejectsVersion for entries no feed could take). Batch ids come
// from protocol.BatchID with RejectsKey(feed) in place of the feed name, so they never
// collide with the feed's data batches and a re-sent file yields the same ids.
const (
	// RejectsTable is the reserved table name of the rejects table.
	RejectsTable = "medlake_rejects"
	// RejectsVersion is the version of the rejects schema.
	RejectsVersion = 1
	// ReservedPrefix starts names reserved for medlake's own tables and feeds.
	ReservedPrefix = "medlake_"
)

// Columns of the rejects table, before the lineage columns.
const (
	RejectFeed         = "feed"          // feed whose definition refused the row; empty when no feed took the entry
	RejectFeedVersion  = "feed_version"  // that feed's version
	RejectSourceFile   = "source_file"   // entry name, "archive.zip!inner.csv"
	RejectSourceSHA256 = "source_sha256" // content hash of the file as found
	RejectRow          = "source_row"    // 1-based record number in the entry, the _row the row would have had
	RejectLine         = "source_line"   // 1-based physical line where the record starts
	RejectColumn       = "source_column" // column at fault; empty when the record as a whole is bad
	RejectRaw          = "raw_text"      // the record's source text, decoded to UTF-8
	RejectReason       = "reason"        // what is wrong, for people
)

// Rejects returns the definition of the rejects table. It is not a feed any file
// matches: it exists so that the agent encodes, and the hub validates, creates and
// appends, the rejects table with the same code as any other table. Its BatchSchema ends
// with the position fields: ColSourceFile, the entry (as source_file), and ColRow, the
// 1-based number of the reject within the file. It has no _rescued column.
func Rejects() *Definition {
	str, i64 := TypeString, TypeInt
	return &Definition{
		Name: RejectsTable, Version: RejectsVersion, Table: RejectsTable,
		Format: Format{Type: FormatCSV}, Drift: DriftIgnore,
		Columns: []Column{
			{Name: RejectFeed, Type: str},
			{Name: RejectFeedVersion, Type: i64},
			{Name: RejectSourceFile, Type: str},
			{Name: RejectSourceSHA256, Type: str},
			{Name: RejectRow, Type: i64},
			{Name: RejectLine, Type: i64},
			{Name: RejectColumn, Type: str},
			{Name: RejectRaw, Type: str},
			{Name: RejectReason, Type: str},
		},
	}
}

// RejectsKey is the key that stands for the feed name in the batch ids of a feed's
// reject batches. Feed names cannot contain '/', so it never equals a feed name.
func RejectsKey(feed string) string { return RejectsTable + "/" + feed }

// IsReserved reports whether a feed or table name is reserved for medlake itself.
func IsReserved(name string) bool { return strings.HasPrefix(name, ReservedPrefix) }
