package hub

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// batch is a validated batch waiting for its table's commit. It owns recs.
type batch struct {
	topic protocol.Topic
	hdr   protocol.BatchHeader
	def   *feed.Definition
	recs  []arrow.RecordBatch // in def.BatchSchema() column order, with extra before the position fields
	// extra are the nullable string columns a drift add feed's batch carries between
	// the feed's columns and _row: source fields no column took, which the table gains.
	extra []arrow.Field
	rows  int64
	bytes int64 // decoded Arrow size, bounds the commit buffer
	// received is when this hub got the batch, for the age of uncommitted batches.
	received time.Time
	// chunk is the payload of an archive chunk (Table protocol.ArchiveTable): bytes of
	// the source file, not rows; recs and def are nil then.
	chunk []byte
}

func (b *batch) release() {
	for _, r := range b.recs {
		r.Release()
	}
	b.recs = nil
}

// rejection says why a batch will never be accepted. batchID may be empty when the
// frame is too damaged to name its batch.
type rejection struct {
	topic   protocol.Topic
	batchID string
	reason  string // sent to the agent
	metric  string // bounded label for batches_rejected_total
}

func (r *rejection) Error() string { return r.reason }

// feeds indexes the feed definitions the hub accepts: every version of every feed, so a
// batch is checked against the version named in its header (an agent may still run an
// older one), and the newest version of each, which is what agents are sent and what
// describes each table. Feeds writing one table share its schema (feed.CheckTables over
// the newest versions). A feeds value is never changed once built; the hub swaps whole
// values when the catalog changes.
type feeds struct {
	byTable  map[string]*feed.Definition // newest versions, by table
	byName   map[string]*feed.Definition // newest version, by feed name
	versions map[feedKey]*feed.Definition
}

type feedKey struct {
	name    string
	version int
}

// indexFeeds indexes defs, which may hold several versions of a feed.
func indexFeeds(defs []*feed.Definition) (*feeds, error) {
	f := &feeds{byTable: map[string]*feed.Definition{}, byName: map[string]*feed.Definition{}, versions: map[feedKey]*feed.Definition{}}
	for _, d := range defs {
		if feed.IsReserved(d.Name) || feed.IsReserved(d.Table) {
			return nil, fmt.Errorf("feed %q: table %q: names starting with %q are reserved: %w", d.Name, d.Table, feed.ReservedPrefix, feed.ErrInvalid)
		}
		k := feedKey{d.Name, d.Version}
		if _, dup := f.versions[k]; dup {
			return nil, fmt.Errorf("feed %s version %d given twice: %w", d.Name, d.Version, feed.ErrInvalid)
		}
		f.versions[k] = d
		if cur, ok := f.byName[d.Name]; !ok || d.Version > cur.Version {
			f.byName[d.Name] = d
		}
	}
	newest := make([]*feed.Definition, 0, len(f.byName))
	for _, d := range f.byName {
		newest = append(newest, d)
	}
	slices.SortFunc(newest, func(a, b *feed.Definition) int { return strings.Compare(a.Name, b.Name) })
	if err := feed.CheckTables(newest); err != nil {
		return nil, err
	}
	// Every hub writes the rejects table, whatever feeds it knows: agents send the rows
	// their definitions refused there (see feed.Rejects).
	f.byTable[feed.RejectsTable] = feed.Rejects()
	for _, d := range newest {
		if _, ok := f.byTable[d.Table]; !ok {
			f.byTable[d.Table] = d
		}
	}
	return f, nil
}

// decodeBatch decodes and validates a frame received on topic. Either the batch or the
// rejection is nil. The header cannot be trusted until it decodes, so the rejection's
// address comes from the topic.
func decodeBatch(topic protocol.Topic, frame []byte, fs *feeds, mem memory.Allocator) (*batch, *rejection) {
	rej := func(id, metric, format string, args ...any) *rejection {
		return &rejection{topic: topic, batchID: id, metric: metric, reason: fmt.Sprintf(format, args...)}
	}
	bt, err := protocol.DecodeBatch(frame)
	if err != nil {
		return nil, rej(protocol.PeekBatchID(frame), decodeErrorMetric(err), "%v", err)
	}
	h := bt.Header
	if h.Tenant != topic.Tenant || h.Facility != topic.Facility || h.Agent != topic.Agent {
		return nil, rej(h.BatchID, "topic_mismatch",
			"batch %s: header names %s/%s/%s but was published on %s", h.BatchID, h.Tenant, h.Facility, h.Agent, topic)
	}
	if h.Table == protocol.ArchiveTable {
		switch {
		case h.Feed != protocol.ArchiveFeed:
			return nil, rej(h.BatchID, "feed_table_mismatch", "batch %s: archive chunks belong to feed %q, not %q", h.BatchID, protocol.ArchiveFeed, h.Feed)
		case len(bt.Payload) > 2*protocol.ArchiveChunkBytes || h.SourceSize < int64(len(bt.Payload)):
			return nil, rej(h.BatchID, "bad_payload", "batch %s: archive chunk of %d bytes (file of %d)", h.BatchID, len(bt.Payload), h.SourceSize)
		}
		return &batch{topic: topic, hdr: h, chunk: bt.Payload, bytes: int64(len(bt.Payload))}, nil
	}
	tdef, ok := fs.byTable[h.Table]
	if !ok {
		return nil, rej(h.BatchID, "unknown_table", "batch %s: unknown table %q (no feed definition writes it)", h.BatchID, h.Table)
	}
	var def *feed.Definition
	if h.Table == feed.RejectsTable {
		// A reject batch names the feed that refused its rows, whose own table differs;
		// its rows are in the rejects table's fixed schema.
		def = tdef
	} else {
		def, ok = fs.versions[feedKey{h.Feed, h.FeedVersion}]
		if !ok {
			return nil, rej(h.BatchID, "unknown_feed", "batch %s: feed %q version %d is not in the catalog", h.BatchID, h.Feed, h.FeedVersion)
		}
		if def.Table != h.Table {
			return nil, rej(h.BatchID, "feed_table_mismatch", "batch %s: feed %q version %d writes table %q, not %q", h.BatchID, h.Feed, h.FeedVersion, def.Table, h.Table)
		}
		if err := checkWritable(def.TableSchema(), tdef.TableSchema()); err != nil {
			return nil, rej(h.BatchID, "schema_mismatch", "batch %s: feed %q version %d gives table %s columns its newest definition (feed %q version %d) cannot hold: %v",
				h.BatchID, h.Feed, h.FeedVersion, h.Table, tdef.Name, tdef.Version, err)
		}
	}
	schema, recs, err := protocol.DecodeRecords(bt.Payload, mem)
	if err != nil {
		return nil, rej(h.BatchID, "bad_payload", "batch %s: %v", h.BatchID, err)
	}
	b := &batch{topic: topic, hdr: h, def: def, recs: recs}
	if b.extra, err = checkBatchSchema(schema, def); err != nil {
		b.release()
		return nil, rej(h.BatchID, "schema_mismatch", "batch %s: schema does not match table %s: %v", h.BatchID, h.Table, err)
	}
	for i, r := range recs {
		if !r.Schema().Equal(schema) {
			b.release()
			return nil, rej(h.BatchID, "schema_mismatch", "batch %s: record %d schema differs from the stream schema", h.BatchID, i)
		}
		rowCol := r.Column(r.Schema().NumFields() - 1)
		if rowCol.NullN() > 0 {
			b.release()
			return nil, rej(h.BatchID, "schema_mismatch", "batch %s: record %d has %d null %s values", h.BatchID, i, rowCol.NullN(), feed.ColRow)
		}
		b.rows += r.NumRows()
		b.bytes += recordSize(r)
	}
	if b.rows != h.Rows {
		b.release()
		return nil, rej(h.BatchID, "row_count", "batch %s: header says %d rows, payload has %d", h.BatchID, h.Rows, b.rows)
	}
	return b, nil
}

// addedNameRE is the form of a column drift add makes (feed.AddedColumnName).
var addedNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// checkBatchSchema checks a batch's schema against its feed's BatchSchema. Under drift
// add the batch may carry extra columns before the position fields (_source_file,
// _row): each must be a nullable string with a lower-case identifier for a name that no
// feed or lineage column has. It returns them.
func checkBatchSchema(got *arrow.Schema, def *feed.Definition) ([]arrow.Field, error) {
	want := def.BatchSchema()
	if def.DriftPolicy() != feed.DriftAdd || got.NumFields() <= want.NumFields() {
		return nil, checkSchema(got, want)
	}
	npos := len(feed.PositionFields())
	n := want.NumFields() - npos
	fields := got.Fields()
	base := arrow.NewSchema(append(fields[:n:n], fields[len(fields)-npos:]...), nil)
	if err := checkSchema(base, want); err != nil {
		return nil, err
	}
	taken := map[string]bool{}
	for _, f := range def.TableSchema().Fields() {
		taken[f.Name] = true
	}
	extra := fields[n : len(fields)-npos]
	for i, f := range extra {
		switch {
		case !addedNameRE.MatchString(f.Name):
			return nil, fmt.Errorf("added column %d %q is not a lower-case identifier", n+i+1, f.Name)
		case taken[f.Name]:
			return nil, fmt.Errorf("added column %d %q is already a column", n+i+1, f.Name)
		case !arrow.TypeEqual(f.Type, arrow.BinaryTypes.String) || !f.Nullable:
			return nil, fmt.Errorf("added column %d %q is %s, want a nullable string", n+i+1, f.Name, f.Type)
		}
		taken[f.Name] = true
	}
	return extra, nil
}

// checkSchema compares column names and types in order; nullability and metadata are
// the agent's business.
func checkSchema(got, want *arrow.Schema) error {
	var diffs []string
	if got.NumFields() != want.NumFields() {
		diffs = append(diffs, fmt.Sprintf("%d columns, want %d", got.NumFields(), want.NumFields()))
	}
	for i := range min(got.NumFields(), want.NumFields()) {
		g, w := got.Field(i), want.Field(i)
		if g.Name != w.Name || !arrow.TypeEqual(g.Type, w.Type) {
			diffs = append(diffs, fmt.Sprintf("column %d is %s %s, want %s %s", i+1, g.Name, g.Type, w.Name, w.Type))
		}
		if len(diffs) >= 5 {
			break
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

func decodeErrorMetric(err error) string {
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return "unknown_version"
	case errors.Is(err, protocol.ErrChecksum):
		return "checksum"
	case errors.Is(err, protocol.ErrTruncated):
		return "truncated"
	}
	return "malformed"
}

// recordSize is the bytes held by a record's buffers; arrow/util's helper would pull in
// protobuf reflection.
func recordSize(r arrow.RecordBatch) int64 {
	var n int64
	for _, c := range r.Columns() {
		n += dataSize(c.Data())
	}
	return n
}

func dataSize(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataSize(c)
	}
	return n
}
