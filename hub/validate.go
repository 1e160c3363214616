package hub

import (
	"errors"
	"fmt"
	"strings"

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
	recs  []arrow.RecordBatch // in def.BatchSchema() column order
	rows  int64
	bytes int64 // decoded Arrow size, bounds the commit buffer
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

// feeds indexes feed definitions by the table they write. Feeds writing one table share
// its schema (feed.CheckTables), so any of them describes the table.
type feeds struct {
	byTable map[string]*feed.Definition
	byName  map[string]*feed.Definition
}

func indexFeeds(defs []*feed.Definition) (*feeds, error) {
	if err := feed.CheckTables(defs); err != nil {
		return nil, err
	}
	f := &feeds{byTable: map[string]*feed.Definition{}, byName: map[string]*feed.Definition{}}
	// Every hub writes the rejects table, whatever feeds it knows: agents send the rows
	// their definitions refused there (see feed.Rejects).
	f.byTable[feed.RejectsTable] = feed.Rejects()
	for _, d := range defs {
		if feed.IsReserved(d.Name) || feed.IsReserved(d.Table) {
			return nil, fmt.Errorf("feed %q: table %q: names starting with %q are reserved: %w", d.Name, d.Table, feed.ReservedPrefix, feed.ErrInvalid)
		}
		if _, ok := f.byTable[d.Table]; !ok {
			f.byTable[d.Table] = d
		}
		f.byName[d.Name] = d
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
	def, ok := fs.byTable[h.Table]
	if !ok {
		return nil, rej(h.BatchID, "unknown_table", "batch %s: unknown table %q (no feed definition writes it)", h.BatchID, h.Table)
	}
	// A reject batch names the feed that refused its rows, whose own table differs.
	if d, ok := fs.byName[h.Feed]; ok && d.Table != h.Table && h.Table != feed.RejectsTable {
		return nil, rej(h.BatchID, "feed_table_mismatch", "batch %s: feed %q writes table %q, not %q", h.BatchID, h.Feed, d.Table, h.Table)
	}
	schema, recs, err := protocol.DecodeRecords(bt.Payload, mem)
	if err != nil {
		return nil, rej(h.BatchID, "bad_payload", "batch %s: %v", h.BatchID, err)
	}
	b := &batch{topic: topic, hdr: h, def: def, recs: recs}
	if err := checkSchema(schema, def.BatchSchema()); err != nil {
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
