package hub

import (
	"context"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
)

// BenchmarkCommit measures the committer alone: lineage columns, Parquet write to a
// local warehouse, Iceberg commit on SQLite and ledger write, for one commit of
// benchBatches seed-shaped batches per iteration.
//
//	go test -run '^$' -bench BenchmarkCommit -benchtime 10x ./hub
func BenchmarkCommit(b *testing.B) {
	for _, rowsPerBatch := range []int{1000, 50000} {
		b.Run(fmt.Sprintf("rows_per_batch=%d", rowsPerBatch), func(b *testing.B) {
			benchCommit(b, rowsPerBatch, 500_000/rowsPerBatch)
		})
	}
}

func benchCommit(b *testing.B, rowsPerBatch, batches int) {
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer cat.Close()
	fs := goldenFeeds(b)
	tmpl, rej := decodeBatch(goldenTopic, labFrame(b, fs.byTable["lab_results"], goldenTopic, "bench", 1, rowsPerBatch, nil), fs, memory.DefaultAllocator)
	if rej != nil {
		b.Fatal(rej.reason)
	}
	defer tmpl.release()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	c := newCommitter(tmpl.def, cat, "bench", Config{}.WithDefaults(), testLogger(b), m, func(context.Context, []ackOut) {})
	b.ResetTimer()
	var rows int64
	for i := range b.N {
		for j := range batches {
			bt := *tmpl
			bt.hdr.BatchID = fmt.Sprintf("bench-%d-%d", i, j)
			for _, r := range tmpl.recs {
				r.Retain()
			}
			bt.recs = append(bt.recs[:0:0], tmpl.recs...)
			c.buf = append(c.buf, &bt)
			c.bufRows += bt.rows
			rows += bt.rows
		}
		if err := c.flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkDecodeBatch measures decode and validation of one 50000-row batch.
func BenchmarkDecodeBatch(b *testing.B) {
	fs := goldenFeeds(b)
	frame := labFrame(b, fs.byTable["lab_results"], goldenTopic, "bench", 1, 50000, nil)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for range b.N {
		bt, rej := decodeBatch(goldenTopic, frame, fs, memory.DefaultAllocator)
		if rej != nil {
			b.Fatal(rej.reason)
		}
		bt.release()
	}
	b.ReportMetric(50000*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
