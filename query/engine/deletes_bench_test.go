package engine

import (
	"context"
	"flag"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/medlake/medlake/catalog"
)

var lakeDir = flag.String("lake-dir", "", "catalog and warehouse directory BenchmarkCurrentState reads (as hub's BenchmarkUpsert -upsert-dir leaves it)")

// BenchmarkCurrentState measures current-state queries of the upsert table hub's
// BenchmarkUpsert leaves in -lake-dir (equality deletes applied in DuckDB), after
// timing the view's build (planning, caching the files, creating the view):
//
//	go test -run '^$' -bench BenchmarkUpsert -benchtime 10x -timeout 2h -upsert-dir /tmp/lake ./hub
//	go test -run '^$' -bench BenchmarkCurrentState -benchtime 5x -lake-dir /tmp/lake ./query/engine
func BenchmarkCurrentState(b *testing.B) {
	if *lakeDir == "" {
		b.Skip("needs -lake-dir")
	}
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: *lakeDir})
	if err != nil {
		b.Fatal(err)
	}
	defer cat.Close()
	start := time.Now()
	e, err := New(ctx, Config{CacheDir: filepath.Join(b.TempDir(), "cache")}, cat.Iceberg(), cat.Namespace()[0], slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.Logf("views built in %s", time.Since(start).Round(time.Millisecond))
	for _, q := range []struct{ name, sql string }{
		{"count", "SELECT count(*) FROM patients"},
		{"point", "SELECT count(*) FROM patients WHERE mrn = 'P000123457'"},
		{"group", "SELECT count(DISTINCT name) FROM patients WHERE ver > 1"},
	} {
		b.Run(q.name, func(b *testing.B) {
			var n int64
			for range b.N {
				if err := e.db.QueryRowContext(ctx, q.sql).Scan(&n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
			b.Logf("%s = %d", q.sql, n)
		})
	}
}
