package hub

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

var (
	upsertTableRows = flag.Int("upsert-table-rows", 10_000_000, "rows BenchmarkUpsert seeds its table with")
	upsertBatchRows = flag.Int("upsert-batch-rows", 50_000, "rows per commit BenchmarkUpsert measures")
	// upsertInserted counts the keys BenchmarkUpsert's runs added after the seed.
	upsertInserted int
	upsertDir      = flag.String("upsert-dir", "", "directory BenchmarkUpsert keeps its catalog and warehouse in (default: a temporary one)")
)

// keyedRecord builds n rows of the patients feed: mrn P<first+i>, name, ver.
func keyedRecord(def *feed.Definition, first, n int, ver int64, name string) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, def.BatchSchema())
	defer b.Release()
	for j, f := range def.BatchSchema().Fields() {
		switch f.Name {
		case "mrn":
			sb := b.Field(j).(*array.StringBuilder)
			for i := range n {
				sb.Append(fmt.Sprintf("P%09d", first+i))
			}
		case "name":
			sb := b.Field(j).(*array.StringBuilder)
			for i := range n {
				sb.Append(fmt.Sprintf("%s-%d", name, (first+i)%977))
			}
		case "ver":
			ib := b.Field(j).(*array.Int64Builder)
			for range n {
				ib.Append(ver)
			}
		case feed.ColSourceFile:
			sb := b.Field(j).(*array.StringBuilder)
			for range n {
				sb.Append(name + ".csv")
			}
		case feed.ColRow:
			ib := b.Field(j).(*array.Int64Builder)
			for i := range n {
				ib.Append(int64(i + 1))
			}
		}
	}
	return b.NewRecordBatch()
}

func keyedBenchBatch(def *feed.Definition, id string, rec arrow.RecordBatch) *batch {
	topic := protocol.Topic{Tenant: "acme", Facility: "fac0001", Agent: "agent-fac0001"}
	return &batch{topic: topic, def: def, recs: []arrow.RecordBatch{rec}, rows: rec.NumRows(), received: time.Now(),
		hdr: protocol.BatchHeader{BatchID: id, Tenant: topic.Tenant, Facility: topic.Facility, Agent: topic.Agent, Feed: def.Name,
			FeedVersion: def.Version, Table: def.Table, SourceFile: id + ".csv", SourceSHA256: fmt.Sprintf("%064d", 1),
			Part: 1, Parts: 1, Rows: rec.NumRows(), CreatedAt: time.Now()}}
}

// BenchmarkUpsert measures upsert commits into a large table: the table is seeded with
// -upsert-table-rows keys (500,000-row commits, timed apart), then every iteration
// commits -upsert-batch-rows rows, half of them updates of keys spread over the whole
// table and half new keys, as one row delta (data file + equality deletes + key state in
// the catalog).
//
//	go test -run '^$' -bench BenchmarkUpsert -benchtime 20x -timeout 2h ./hub
func BenchmarkUpsert(b *testing.B) {
	ctx := context.Background()
	dir := *upsertDir
	if dir == "" {
		dir = b.TempDir()
	}
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer cat.Close()
	def := parseDef(b, patientsUpsert)
	tc := newTestCommitter(b, def, cat, "bench")
	tc.cfg.CommitMaxRows = 1 << 30

	seedStart := time.Now()
	const seedChunk = 500_000
	for first := 0; first < *upsertTableRows; first += seedChunk {
		n := min(seedChunk, *upsertTableRows-first)
		if err := tc.commitBatches(b, keyedBenchBatch(def, fmt.Sprintf("seed-%d", first), keyedRecord(def, first, n, 1, "seed"))); err != nil {
			b.Fatal(err)
		}
	}
	seed := time.Since(seedStart)
	b.Logf("seeded %d keys in %s (%.0f rows/s)", *upsertTableRows, seed.Round(time.Millisecond), float64(*upsertTableRows)/seed.Seconds())

	// The testing package runs a benchmark more than once (b.N = 1 first): every run
	// commits new batch ids, newer versions and new keys, after the keys earlier runs
	// added (the seed's batches are found in the ledger and skipped).
	half := *upsertBatchRows / 2
	run := time.Now().UnixNano()
	next := *upsertTableRows + upsertInserted
	b.ResetTimer()
	for i := range b.N {
		// Updates: a run of keys starting at a spread-out offset; new keys at the end.
		ver := time.Now().UnixNano()
		upd := keyedRecord(def, (i*7919*half)%(*upsertTableRows-half), half, ver, fmt.Sprintf("u%d", i))
		ins := keyedRecord(def, next, half, ver, fmt.Sprintf("i%d", i))
		next += half
		upsertInserted += half
		if err := tc.commitBatches(b, keyedBenchBatch(def, fmt.Sprintf("upd-%d-%d", run, i), upd), keyedBenchBatch(def, fmt.Sprintf("ins-%d-%d", run, i), ins)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*2*half)/b.Elapsed().Seconds(), "rows/s")

	applied, _, err := cat.CDCApplied(ctx, def.Table)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("table %s: %d keys, key state at snapshot %d", def.Table, next, applied)
}
