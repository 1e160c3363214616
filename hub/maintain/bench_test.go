package maintain

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/engine"
)

// Shape of the benchmark table: the hub commits benchCommits times (about once a
// second per table), each commit holding benchRowsPerCommit rows of 4 of benchFacilities
// facilities, event times advancing over benchDays days, so every commit adds a small
// file to each (facility, day) partition it touches.
const (
	benchCommits       = 400
	benchRowsPerCommit = 2500
	benchFacilities    = 20
	benchDays          = 30
)

var benchQueries = []struct{ name, sql string }{
	{"count", `SELECT count(*) FROM labs`},
	{"facility_day", `SELECT count(*), count(DISTINCT value) FROM labs WHERE _facility = 'F007'
		AND observed_at >= TIMESTAMPTZ '2026-11-12 00:00:00+00' AND observed_at < TIMESTAMPTZ '2026-11-13 00:00:00+00'`},
	{"facility_hour", `SELECT count(*) FROM labs WHERE _facility = 'F003'
		AND observed_at >= TIMESTAMPTZ '2026-11-20 10:00:00+00' AND observed_at < TIMESTAMPTZ '2026-11-20 11:00:00+00'`},
	{"by_facility_day", `SELECT _facility, date_trunc('day', observed_at) AS d, count(*) FROM labs GROUP BY 1, 2 ORDER BY 1, 2`},
}

// BenchmarkCompactionQuery measures query latency through the query engine (DuckDB
// over the cached Parquet files) on a table of many small files, then compacts it and
// measures the same queries again. Run:
//
//	go test ./hub/maintain/ -run '^$' -bench CompactionQuery -benchtime 20x -timeout 30m
func BenchmarkCompactionQuery(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	cat := openTestCatalog(b, catalog.Config{DataDir: dir})
	createTestTable(b, cat, "labs")
	start := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	for c := range benchCommits {
		if err := appendRows(ctx, cat, "labs", benchRows(rng, c)); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("loaded %d commits of %d rows in %s", benchCommits, benchRowsPerCommit, time.Since(start).Round(time.Millisecond))
	cfg := DefaultConfig()

	run := func(phase string) {
		h, err := TableHealth(ctx, CatalogTables(cat), "labs", cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s: %d data files, %.1f MiB, %d records", phase, h.DataFiles, float64(h.DataBytes)/(1<<20), h.Records)
		e, err := engine.New(ctx, engine.Config{CacheDir: filepath.Join(dir, "cache-"+phase)}, cat.Iceberg(),
			strings.Join(cat.Namespace(), "."), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		for _, q := range benchQueries {
			b.Run(phase+"/"+q.name, func(b *testing.B) {
				queryOnce(b, e, q.sql) // warm: files fetched into the cache
				b.ResetTimer()
				for b.Loop() {
					queryOnce(b, e, q.sql)
				}
			})
		}
	}
	run("before")
	start = time.Now()
	opts := cfg.CompactOptions()
	res, err := Compact(ctx, CatalogTables(cat), "labs", opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("compaction: %d groups, %d files -> %d, %.1f -> %.1f MiB, %d rows in %s", res.Groups, res.FilesRemoved, res.FilesAdded,
		float64(res.BytesBefore)/(1<<20), float64(res.BytesAfter)/(1<<20), res.RowsWritten, time.Since(start).Round(time.Millisecond))
	run("after")
}

// benchRows is commit c's rows: 4 facilities, times within a day or two of c's point
// in the benchDays span.
func benchRows(rng *rand.Rand, c int) []testRow {
	rows := make([]testRow, benchRowsPerCommit)
	at := testBase.Add(time.Duration(c) * benchDays * 24 * time.Hour / benchCommits)
	for i := range rows {
		id := int64(c*benchRowsPerCommit + i)
		rows[i] = testRow{ID: id, Facility: fmt.Sprintf("F%03d", (c*4+i%4)%benchFacilities),
			At:    at.Add(time.Duration(rng.Int64N(int64(36 * time.Hour)))).Truncate(time.Microsecond),
			Value: []string{"2345-7", "718-7", "2160-0", "6690-2", "789-8"}[rng.IntN(5)]}
	}
	slices.SortFunc(rows, func(a, b testRow) int { return int(a.ID - b.ID) })
	return rows
}

func queryOnce(b *testing.B, e *engine.Engine, q string) {
	rows, err := e.Query(context.Background(), q)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	if n == 0 {
		b.Fatal("query returned no rows")
	}
}
