package engine

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/query/internal/testlake"
)

var (
	refreshCommits = flag.Int("refresh-commits", 1000, "commits to BenchmarkRefresh's big table (three data files each, one manifest)")
	refreshTables  = flag.Int("refresh-tables", 4, "small tables BenchmarkRefresh adds beside the big one (20 commits each)")
)

// refreshLake is a lake on real MinIO and PostgreSQL shaped as tables are between
// compactions: every commit is a fast append (one new manifest), so the big table has
// one manifest per commit and three small data files per manifest (one per facility).
type refreshLake struct {
	cfg catalog.Config
	cat *catalog.Catalog
	ice icecatalog.Catalog
}

// partitionedLabTable creates a lab_results-shaped table partitioned by facility.
func partitionedLabTable(tb testing.TB, cat icecatalog.Catalog, name string) {
	tb.Helper()
	spec, err := iceberg.NewPartitionSpecOpts(
		iceberg.AddPartitionFieldByName("facility", "facility", iceberg.IdentityTransform{}, testlake.LabSchema, nil))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := cat.CreateTable(context.Background(), table.Identifier{testlake.Namespace, name}, testlake.LabSchema,
		icecatalog.WithPartitionSpec(&spec)); err != nil {
		tb.Fatalf("creating table %s: %v", name, err)
	}
}

// fillTable appends commits of three rows each (three data files), expiring all but the
// newest 100 snapshots every 100 commits as maintenance does, so the metadata stays the
// size a maintained table's has while the manifests accumulate.
func fillTable(tb testing.TB, cat icecatalog.Catalog, name string, from, commits int) {
	tb.Helper()
	ctx := context.Background()
	for i := range commits {
		tbl := testlake.AppendLabRows(tb, cat, name, (from+i)*3, (from+i+1)*3)
		if (i+1)%100 == 0 {
			txn := tbl.NewTransaction()
			if err := txn.ExpireSnapshots(table.WithRetainLast(100), table.WithOlderThan(0)); err != nil {
				tb.Fatal(err)
			}
			if _, err := txn.Commit(ctx); err != nil {
				tb.Fatalf("expiring snapshots of %s: %v", name, err)
			}
		}
	}
}

func newRefreshLake(tb testing.TB) *refreshLake {
	tb.Helper()
	s3 := stack.MinIO(tb)
	cfg := catalog.Config{URI: stack.Postgres(tb), Namespace: testlake.Namespace,
		Warehouse: "s3://" + s3.Bucket + "/lake", S3Endpoint: s3.Endpoint, S3Region: s3.Region,
		S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey}
	cat, err := catalog.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cat.Close() })
	return &refreshLake{cfg: cfg, cat: cat, ice: cat.Iceberg()}
}

// BenchmarkRefresh times a view refresh on a lake of one big table (-refresh-commits
// manifests of three small files each) and -refresh-tables small ones, on real MinIO
// and PostgreSQL: with nothing committed since the last refresh, and after one commit
// to the big table. It also times the parts a refresh of the big table is made of.
//
//	go test -run '^$' -bench BenchmarkRefresh -benchtime 20x ./query/engine
func BenchmarkRefresh(b *testing.B) {
	ctx := context.Background()
	lake := newRefreshLake(b)
	start := time.Now()
	partitionedLabTable(b, lake.ice, "big")
	fillTable(b, lake.ice, "big", 0, *refreshCommits)
	for i := range *refreshTables {
		name := fmt.Sprintf("small%d", i)
		partitionedLabTable(b, lake.ice, name)
		fillTable(b, lake.ice, name, 0, 20)
	}
	b.Logf("lake built in %s: big %d commits, %d small tables", time.Since(start).Round(time.Millisecond), *refreshCommits, *refreshTables)

	start = time.Now()
	e, err := New(ctx, Config{CacheDir: filepath.Join(b.TempDir(), "cache")}, lake.ice, testlake.Namespace,
		slog.New(slog.DiscardHandler), WithTableLocator(lake.cat))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.Logf("first refresh (every file fetched) in %s", time.Since(start).Round(time.Millisecond))
	next := *refreshCommits

	b.Run("unchanged", func(b *testing.B) {
		for range b.N {
			if err := e.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/refresh")
	})
	b.Run("one-commit", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			fillTable(b, lake.ice, "big", next, 1)
			next++
			b.StartTimer()
			if err := e.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/refresh")
	})

	// The parts of a refresh of the big table.
	ident := table.Identifier{testlake.Namespace, "big"}
	b.Run("part=list-tables", func(b *testing.B) {
		for range b.N {
			for _, err := range lake.ice.ListTables(ctx, table.Identifier{testlake.Namespace}) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	b.Run("part=load-table", func(b *testing.B) {
		for range b.N {
			if _, err := lake.ice.LoadTable(ctx, ident); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	tbl, err := lake.ice.LoadTable(ctx, ident)
	if err != nil {
		b.Fatal(err)
	}
	// As the catalog loads it: a new object store client, every manifest read.
	b.Run("part=plan-files", func(b *testing.B) {
		var n int
		for range b.N {
			tasks, err := tbl.Scan().PlanFiles(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n = len(tasks)
		}
		b.ReportMetric(float64(n), "files")
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	// As the engine loads it now: through the shared IO and the manifest cache.
	locs, err := lake.cat.TableLocations(ctx, table.Identifier{testlake.Namespace})
	if err != nil {
		b.Fatal(err)
	}
	cached, err := e.loadTarget(ctx, refreshTarget{name: "big", ident: ident, metaLoc: locs["big"]})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("part=load-table-from-location", func(b *testing.B) {
		for range b.N {
			if _, err := e.loadTarget(ctx, refreshTarget{name: "big", ident: ident, metaLoc: locs["big"]}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	b.Run("part=plan-files-cached", func(b *testing.B) {
		for range b.N {
			if _, err := cached.Scan().PlanFiles(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	e.mu.Lock()
	objs := e.views["big"].objects
	e.mu.Unlock()
	b.Run("part=plan-snapshot-cached-entries", func(b *testing.B) {
		for range b.N {
			if _, err := e.planSnapshot(ctx, cached, cached.CurrentSnapshot()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	noDeletes := newMergeOnRead(tbl.Metadata(), tbl.CurrentSnapshot())
	b.Run("part=describe", func(b *testing.B) {
		for range b.N {
			if _, err := e.snapshotBody(ctx, tbl.Schema(), objs, noDeletes); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	body, err := e.snapshotBody(ctx, tbl.Schema(), objs, noDeletes)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("part=create-view", func(b *testing.B) {
		for range b.N {
			if _, err := e.admin.ExecContext(ctx, "CREATE OR REPLACE VIEW bench_big AS "+body); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	b.Run("part=prune-index-cached", func(b *testing.B) {
		for range b.N {
			tasks, err := e.meta.plan(ctx, cached)
			if err != nil {
				b.Fatal(err)
			}
			if buildPruneIndex(cached, tasks, objs) == nil {
				b.Fatal("no pruning index")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
}
