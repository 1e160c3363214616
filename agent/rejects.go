package agent

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// A file's rejected rows go two ways. They are sent to the hub as batches of the rejects
// table (feed.Rejects), through the spool, acks and state like data batches, so the file
// is done only when its rejects are in the lake too. They are also kept on local disk as
// rejects/<sha256>.jsonl: that copy lets ops list and read rejects at the facility while
// the hub is unreachable (`medlake-agent rejects list`), and holds the rejected source
// positions that re-running a file after a definition fix needs.

// RejectLine is one line of state_dir/rejects/<sha256>.jsonl, the local record of a
// file's rejected rows that medlake-agent rejects list and show read.
type RejectLine struct {
	Source      string `json:"source"`
	Feed        string `json:"feed,omitempty"`
	FeedVersion int    `json:"feed_version,omitempty"`
	Row         int64  `json:"row,omitempty"`
	Line        int64  `json:"line,omitempty"`
	Column      string `json:"column,omitempty"`
	Raw         string `json:"raw,omitempty"`
	Reason      string `json:"reason"`
}

// rejectsWriter collects a file's rejects: the local JSONL, written to a temp file renamed
// into place only when the whole file was parsed (so a re-parse after a crash never
// duplicates lines), and the reject batches, built per refusing feed.
type rejectsWriter struct {
	path      string
	sha       string
	batchRows int
	f         *os.File
	w         *bufio.Writer
	n         int64

	schema  *arrow.Schema
	open    map[string]*rejectsBuilder // by feed name; "" for entries no feed took
	order   []string                   // feed names in order of first reject, for stable part numbers
	parts   []part                     // finished reject batches
	rejects *feed.Definition
	retry   bool  // parts belong to a rejects retry (their own batch ids)
	kept    int64 // lines carried over unchanged by a rejects retry (JSONL only)
}

// rejectsBuilder accumulates one feed's rejected rows until batchRows.
type rejectsBuilder struct {
	def    *feed.Definition // refusing feed, or feed.Rejects() for entries no feed took
	b      *array.RecordBuilder
	source string // entry of the first row, the batch's source_file lineage
}

func newRejectsWriter(path, sha string, batchRows int) (*rejectsWriter, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("creating rejects file for %s: %w", path, err)
	}
	rd := feed.Rejects()
	return &rejectsWriter{path: path, sha: sha, batchRows: max(batchRows, 1), f: f, w: bufio.NewWriter(f),
		schema: rd.BatchSchema(), open: map[string]*rejectsBuilder{}, rejects: rd}, nil
}

// add records one rejected row (or skipped entry) refused by def; def is nil when no feed
// took the entry.
func (r *rejectsWriter) add(def *feed.Definition, rj normalize.Reject) error {
	l := RejectLine{Source: rj.Source, Row: rj.Row, Line: rj.Line, Column: rj.Column, Raw: rj.Raw, Reason: rj.Reason}
	key := ""
	if def != nil {
		l.Feed, l.FeedVersion, key = def.Name, def.Version, def.Name
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	r.n++
	if err := r.writeLine(b); err != nil {
		return err
	}

	rb, ok := r.open[key]
	if !ok {
		d := def
		if d == nil {
			d = r.rejects
		}
		rb = &rejectsBuilder{def: d, b: array.NewRecordBuilder(memory.DefaultAllocator, r.schema), source: rj.Source}
		r.open[key] = rb
		if !slices.Contains(r.order, key) {
			r.order = append(r.order, key)
		}
	}
	fb := rb.b
	str := func(i int, v string, null bool) {
		if null {
			fb.Field(i).AppendNull()
		} else {
			fb.Field(i).(*array.StringBuilder).Append(v)
		}
	}
	i64 := func(i int, v int64, null bool) {
		if null {
			fb.Field(i).AppendNull()
		} else {
			fb.Field(i).(*array.Int64Builder).Append(v)
		}
	}
	str(0, l.Feed, def == nil)
	i64(1, int64(l.FeedVersion), def == nil)
	str(2, rj.Source, false)
	str(3, r.sha, false)
	i64(4, rj.Row, rj.Row == 0)
	i64(5, rj.Line, rj.Line == 0)
	str(6, rj.Column, rj.Column == "")
	str(7, rj.Raw, false)
	str(8, rj.Reason, false)
	str(9, rj.Source, false) // _source_file
	i64(10, r.n, false)      // _row: the reject's number within the file
	if fb.Field(10).Len() >= r.batchRows {
		return r.flush(key)
	}
	return nil
}

func (r *rejectsWriter) writeLine(b []byte) error {
	r.w.Write(b)
	if _, err := r.w.Write([]byte{'\n'}); err != nil {
		return fmt.Errorf("writing rejects %s: %w", r.path, err)
	}
	return nil
}

// carry keeps a line of an earlier attempt in the JSONL, without sending it again: its
// row is in the lake's rejects table already.
func (r *rejectsWriter) carry(l RejectLine) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	r.kept++
	return r.writeLine(b)
}

// flush encodes the feed's open builder as one reject batch.
func (r *rejectsWriter) flush(key string) error {
	rb, ok := r.open[key]
	if !ok {
		return nil
	}
	delete(r.open, key)
	rec := rb.b.NewRecordBatch()
	rb.b.Release()
	defer rec.Release()
	payload, err := protocol.EncodeRecords(r.schema, []arrow.RecordBatch{rec})
	if err != nil {
		return fmt.Errorf("encoding rejects of %s: %w", rb.source, err)
	}
	r.parts = append(r.parts, part{def: rb.def, payload: payload, rows: rec.NumRows(), rejects: true, retry: r.retry})
	return nil
}

// batches flushes every open builder and returns the file's reject batches, ordered by
// feed of first reject and then by row, so a re-parse numbers them the same.
func (r *rejectsWriter) batches() ([]part, error) {
	for _, key := range r.order {
		if err := r.flush(key); err != nil {
			return nil, err
		}
	}
	out := r.parts
	// Parts of one feed must keep their order; a stable sort by first-seen feed does it.
	rank := map[string]int{}
	for i, k := range r.order {
		rank[k] = i
	}
	keyOf := func(p part) string {
		if p.def == r.rejects {
			return ""
		}
		return p.def.Name
	}
	slices.SortStableFunc(out, func(a, b part) int { return cmp.Compare(rank[keyOf(a)], rank[keyOf(b)]) })
	return out, nil
}

// close ends the JSONL: renamed into place when keep and not empty, removed otherwise. It
// also releases builders left open by an abandoned parse.
func (r *rejectsWriter) close(keep bool) error {
	for k, rb := range r.open {
		rb.b.Release()
		delete(r.open, k)
	}
	tmp := r.f.Name()
	err := r.w.Flush()
	if err == nil && keep && r.n+r.kept > 0 {
		err = r.f.Sync()
	}
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if err != nil || !keep || r.n+r.kept == 0 {
		os.Remove(tmp)
		if err != nil {
			return fmt.Errorf("writing rejects %s: %w", r.path, err)
		}
		return nil
	}
	if err := os.Rename(tmp, r.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing rejects %s: %w", r.path, err)
	}
	return nil
}
