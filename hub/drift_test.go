package hub

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// goldenFeedWith is the golden lab feed with its drift policy replaced.
func goldenFeedWith(tb testing.TB, drift string) []byte {
	tb.Helper()
	doc := strings.Replace(string(readGolden(tb, "lab_results.yaml")), "drift: ignore", "drift: "+drift, 1)
	if !strings.Contains(doc, "drift: "+drift) {
		tb.Fatal("golden feed has no drift line to replace")
	}
	return []byte(doc)
}

// stringsOf returns a string column's values by _row for the rows of one batch; NULL is
// "NULL".
func stringsOf(tb testing.TB, at arrow.Table, col, batchID string) map[int64]string {
	tb.Helper()
	ci, bi, ri := at.Schema().FieldIndices(col), at.Schema().FieldIndices(feed.ColBatchID), at.Schema().FieldIndices(feed.ColRow)
	if len(ci) != 1 {
		tb.Fatalf("table has no column %s: %s", col, at.Schema())
	}
	out := map[int64]string{}
	tr := array.NewTableReader(at, 1<<20)
	defer tr.Release()
	for tr.Next() {
		r := tr.RecordBatch()
		c, b, rows := r.Column(ci[0]).(*array.String), r.Column(bi[0]).(*array.String), r.Column(ri[0]).(*array.Int64)
		for i := range int(r.NumRows()) {
			if b.Value(i) != batchID {
				continue
			}
			v := "NULL"
			if c.IsValid(i) {
				v = c.Value(i)
			}
			out[rows.Value(i)] = v
		}
	}
	return out
}

// TestIngestDriftAdd sends batches of a drift add feed with and without added columns:
// the hub adds the columns to the Iceberg table before appending, rows of batches that
// lack one read NULL there, and an added column that is not a fresh nullable string is
// rejected.
func TestIngestDriftAdd(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lab_results.yaml"), goldenFeedWith(t, feed.DriftAdd), 0o600); err != nil {
		t.Fatal(err)
	}
	broker := embeddedBroker(t)
	h := startHubFeeds(t, broker, catalog.Config{DataDir: t.TempDir()}, "hub-drift", dir)
	def := h.def
	ag := newAgent(t, broker, goldenTopic)

	plain := labFrame(t, def, goldenTopic, "plain", 1, 10, nil)
	ag.send(plain)
	if ack := ag.await(batchID(t, plain))[batchID(t, plain)]; ack.Status != protocol.AckCommitted {
		t.Fatalf("plain batch: %+v", ack)
	}
	added := labFrameAdded(t, def, goldenTopic, "added", 1, 6, []string{"ward_name", "notes"}, nil)
	more := labFrameAdded(t, def, goldenTopic, "more", 1, 4, []string{"notes", "bed"}, nil)
	ids := []string{batchID(t, added), batchID(t, more)}
	ag.send(added, more)
	for id, ack := range ag.await(ids...) {
		if ack.Status != protocol.AckCommitted {
			t.Errorf("batch %s: %+v", id, ack)
		}
	}
	n, perBatch, at := scanTable(t, h.cat, "lab_results")
	if n != 20 || perBatch[ids[0]] != 6 || perBatch[ids[1]] != 4 {
		t.Fatalf("table has %d rows, per batch %v", n, perBatch)
	}
	if got := stringsOf(t, at, "ward_name", ids[0]); got[1] != "ward_name-0" || got[3] != "NULL" || got[5] != "ward_name-4" {
		t.Errorf("ward_name of the added batch = %v", got)
	}
	if got := stringsOf(t, at, "bed", ids[0]); len(got) != 6 || got[1] != "NULL" {
		t.Errorf("bed of a batch without it = %v, want NULL", got)
	}
	if got := stringsOf(t, at, "notes", ids[1]); got[2] != "notes-1" {
		t.Errorf("notes of the second batch = %v", got)
	}
	if got := stringsOf(t, at, "ward_name", batchID(t, plain)); len(got) != 10 || got[1] != "NULL" {
		t.Errorf("ward_name of the batch sent before the column existed = %v, want NULL", got)
	}
	tbl, err := h.cat.Iceberg().LoadTable(context.Background(), h.cat.TableIdent("lab_results"))
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"ward_name", "notes", "bed"} {
		if f, ok := tbl.Schema().FindFieldByName(col); !ok || f.Required {
			t.Errorf("table schema lacks optional column %s: %s", col, tbl.Schema())
		}
	}

	for _, tt := range []struct{ name, col, want string }{
		{"feed column", "lab_id", "already a column"},
		{"lineage column", "_tenant", "not a lower-case identifier"},
		{"upper case", "Ward", "not a lower-case identifier"},
	} {
		frame := labFrameAdded(t, def, goldenTopic, "bad-"+tt.col, 1, 2, []string{tt.col}, nil)
		ag.send(frame)
		id := batchID(t, frame)
		if ack := ag.await(id)[id]; ack.Status != protocol.AckRejected || !strings.Contains(ack.Reason, tt.want) {
			t.Errorf("%s: ack %+v, want rejected: %s", tt.name, ack, tt.want)
		}
	}
}

// TestCommitAddsRescuedToOldTable commits, to a table created by a feed without drift
// rescue, a batch of the same feed under the default rescue policy: the hub adds the
// _rescued column first and the rows keep their rescued values.
func TestCommitAddsRescuedToOldTable(t *testing.T) {
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	commitOne := func(doc []byte, src string) string {
		t.Helper()
		def, err := feed.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := indexFeeds([]*feed.Definition{def})
		if err != nil {
			t.Fatal(err)
		}
		frame := labFrame(t, def, goldenTopic, src, 1, 10, nil)
		b, rej := decodeBatch(goldenTopic, frame, fs, memory.DefaultAllocator)
		if rej != nil {
			t.Fatal(rej.reason)
		}
		c := newCommitter(def, cat, "hub-old", Config{}.WithDefaults(), testLogger(t), m, func(context.Context, []ackOut) {})
		c.buf = []*batch{b}
		c.bufRows = b.rows
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := c.flush(fctx); err != nil {
			t.Fatal(err)
		}
		return b.hdr.BatchID
	}
	oldID := commitOne(readGolden(t, "lab_results.yaml"), "old")
	newID := commitOne(goldenFeedWith(t, feed.DriftRescue), "new")
	_, perBatch, at := scanTable(t, cat, "lab_results")
	if perBatch[oldID] != 10 || perBatch[newID] != 10 {
		t.Fatalf("per batch %v", perBatch)
	}
	if got := stringsOf(t, at, feed.ColRescued, newID); got[1] != `{"Comment":"c0"}` || got[2] != "NULL" {
		t.Errorf("_rescued of the new batch = %v", got)
	}
	if got := stringsOf(t, at, feed.ColRescued, oldID); got[1] != "NULL" {
		t.Errorf("_rescued of the old batch = %v, want NULL", got)
	}
}
