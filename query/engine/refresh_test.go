package engine

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/internal/testlake"
)

// openLocatorEngine opens an engine on lake that finds changed tables through the
// catalog's table locations, recording every refresh's stats.
func openLocatorEngine(tb testing.TB, lake *refreshLake) (*Engine, *statsLog) {
	tb.Helper()
	log := &statsLog{}
	e, err := New(context.Background(), Config{CacheDir: filepath.Join(tb.TempDir(), "cache")}, lake.ice, testlake.Namespace,
		slog.New(slog.DiscardHandler), WithTableLocator(lake.cat), WithRefreshObserver(log.add))
	if err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	tb.Cleanup(func() { e.Close() })
	return e, log
}

type statsLog struct {
	mu  sync.Mutex
	all []RefreshStats
}

func (l *statsLog) add(s RefreshStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, s)
}

func (l *statsLog) last() RefreshStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all[len(l.all)-1]
}

// TestRefreshFindsChangedTables checks change detection on real PostgreSQL and MinIO:
// a refresh with nothing committed loads no table; a commit by another process (its
// own catalog connection) is seen and only that table is loaded; a dropped table's
// view goes and a created one's comes.
func TestRefreshFindsChangedTables(t *testing.T) {
	ctx := context.Background()
	lake := newRefreshLake(t)
	for _, name := range []string{"a", "b", "c"} {
		partitionedLabTable(t, lake.ice, name)
		fillTable(t, lake.ice, name, 0, 3)
	}
	e, log := openLocatorEngine(t, lake)
	if st := log.last(); st.Trigger != TriggerStart || st.Loaded != 3 || st.Replaced != 3 {
		t.Errorf("first refresh = %+v, want start, 3 loaded and replaced", st)
	}

	// Another process: its own connections to the same catalog and warehouse.
	other, err := catalog.Open(ctx, lake.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	steps := []struct {
		name   string
		commit func(t *testing.T)
		want   RefreshStats // Trigger, Tables, Loaded, Replaced, Dropped
		counts map[string]int64
		gone   []string
	}{
		{"nothing committed", func(t *testing.T) {}, RefreshStats{Tables: 3},
			map[string]int64{"a": 9, "b": 9, "c": 9}, nil},
		{"append to b", func(t *testing.T) { fillTable(t, other.Iceberg(), "b", 3, 2) },
			RefreshStats{Tables: 3, Loaded: 1, Replaced: 1}, map[string]int64{"a": 9, "b": 15, "c": 9}, nil},
		{"property change only", func(t *testing.T) {
			tbl, err := other.Iceberg().LoadTable(ctx, table.Identifier{testlake.Namespace, "a"})
			if err != nil {
				t.Fatal(err)
			}
			txn := tbl.NewTransaction()
			if err := txn.SetProperties(iceberg.Properties{"comment": "x"}); err != nil {
				t.Fatal(err)
			}
			if _, err := txn.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}, RefreshStats{Tables: 3, Loaded: 1, Replaced: 0}, map[string]int64{"a": 9, "b": 15, "c": 9}, nil},
		{"drop c, create d", func(t *testing.T) {
			if err := other.Iceberg().DropTable(ctx, table.Identifier{testlake.Namespace, "c"}); err != nil {
				t.Fatal(err)
			}
			partitionedLabTable(t, other.Iceberg(), "d")
			fillTable(t, other.Iceberg(), "d", 0, 1)
		}, RefreshStats{Tables: 3, Loaded: 1, Replaced: 1, Dropped: 1}, map[string]int64{"a": 9, "b": 15, "d": 3}, []string{"c"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.commit(t)
			if err := e.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			got := log.last()
			if got.Tables != st.want.Tables || got.Loaded != st.want.Loaded || got.Replaced != st.want.Replaced || got.Dropped != st.want.Dropped || got.Failed != 0 {
				t.Errorf("refresh = %+v, want tables %d loaded %d replaced %d dropped %d", got, st.want.Tables, st.want.Loaded, st.want.Replaced, st.want.Dropped)
			}
			for name, want := range st.counts {
				if n := queryInts(t, e, "SELECT count(*) FROM "+name); n[0] != want {
					t.Errorf("%s has %d rows, want %d", name, n[0], want)
				}
			}
			for _, name := range st.gone {
				if _, err := e.Query(ctx, "SELECT count(*) FROM "+name); err == nil {
					t.Errorf("dropped table %s is still queryable", name)
				}
			}
		})
	}
	if got := e.Tables(); fmt.Sprint(got) != "[a b d]" {
		t.Errorf("Tables() = %v, want [a b d]", got)
	}
	if _, hits, _ := e.files.manifests.stats(); hits == 0 {
		t.Error("no manifest was read from the manifest cache")
	}
}

// TestRefreshConsistentUnderQueries runs queries without pause while the table is
// appended to, emptied and filled again, with a refresh after each commit: every query
// must see one committed snapshot whole (a row count some snapshot had, every lab_id
// once), never an error, and never a mix of the files of two snapshots.
func TestRefreshConsistentUnderQueries(t *testing.T) {
	ctx := context.Background()
	lake := newRefreshLake(t)
	partitionedLabTable(t, lake.ice, "labs")
	testlake.AppendLabRows(t, lake.ice, "labs", 0, 300)
	e, _ := openLocatorEngine(t, lake)

	var mu sync.Mutex
	allowed := map[int64]bool{300: true}
	allow := func(n int64) {
		mu.Lock()
		allowed[n] = true
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var queries int
	var bad []string
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n, distinct, maxID int64
			err := e.db.QueryRowContext(ctx, "SELECT count(*), count(DISTINCT lab_id), coalesce(max(lab_id), 0) FROM labs").Scan(&n, &distinct, &maxID)
			mu.Lock()
			queries++
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case n != distinct || n != maxID || !allowed[n]:
				bad = append(bad, fmt.Sprintf("count %d, distinct %d, max %d", n, distinct, maxID))
			}
			mu.Unlock()
		}
	})
	rows := 300
	for i := range 12 {
		if i%4 == 3 {
			// Empty the table and fill it again: the files of the snapshot before and
			// after hold the same lab_ids, so a view mixing them would count them twice.
			tbl, err := lake.ice.LoadTable(ctx, table.Identifier{testlake.Namespace, "labs"})
			if err != nil {
				t.Fatal(err)
			}
			allow(0)
			if _, err := tbl.Delete(ctx, iceberg.AlwaysTrue{}, nil); err != nil {
				t.Fatal(err)
			}
			if err := e.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			testlake.AppendLabRows(t, lake.ice, "labs", 0, rows)
		} else {
			allow(int64(rows + 100))
			testlake.AppendLabRows(t, lake.ice, "labs", rows, rows+100)
			rows += 100
		}
		if err := e.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if got := queryInts(t, e, "SELECT count(*) FROM labs"); got[0] != int64(rows) {
			t.Fatalf("after commit %d: %d rows, want %d", i, got[0], rows)
		}
	}
	close(stop)
	wg.Wait()
	if queries < 12 {
		t.Errorf("only %d queries ran during the refreshes", queries)
	}
	for _, b := range bad {
		t.Errorf("query during refresh: %s", b)
	}
}

func TestManifestCacheBound(t *testing.T) {
	m := newManifestCache(800) // entries up to 100 bytes are kept
	for i := range 10 {
		m.put(fmt.Sprintf("m%d.avro", i), make([]byte, 100))
		if i == 3 {
			m.get("m0.avro") // most recent again: outlives m1, m2
		}
	}
	m.put("big.avro", make([]byte, 101))
	bytes, _, _ := m.stats()
	if bytes > 800 {
		t.Errorf("cache holds %d bytes, bound 800", bytes)
	}
	for name, want := range map[string]bool{"m0.avro": true, "m1.avro": false, "m2.avro": false, "m3.avro": true, "m9.avro": true, "big.avro": false} {
		if _, ok := m.get(name); ok != want {
			t.Errorf("%s cached = %v, want %v", name, ok, want)
		}
	}
}

// TestPlanSnapshotMatchesScan checks the engine's planning from cached manifest
// entries against iceberg-go's own planning, through appends, a copy-on-write delete
// of some files and a delete of all, on every snapshot the table had.
func TestPlanSnapshotMatchesScan(t *testing.T) {
	ctx := context.Background()
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "labs")
	for i := range 4 {
		testlake.AppendLabRows(t, cat, "labs", i*10, (i+1)*10)
	}
	e := openEngine(t, cat)
	ident := table.Identifier{testlake.Namespace, "labs"}
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		t.Fatal(err)
	}
	if tbl, err = tbl.Delete(ctx, iceberg.EqualTo(iceberg.Reference("lab_id"), int64(5)), nil); err != nil {
		t.Fatal(err)
	}
	testlake.AppendLabRows(t, cat, "labs", 40, 50)
	if tbl, err = cat.LoadTable(ctx, ident); err != nil {
		t.Fatal(err)
	}
	if tbl, err = tbl.Delete(ctx, iceberg.AlwaysTrue{}, nil); err != nil {
		t.Fatal(err)
	}
	testlake.AppendLabRows(t, cat, "labs", 50, 55)
	if tbl, err = cat.LoadTable(ctx, ident); err != nil {
		t.Fatal(err)
	}
	files := func(tasks []table.FileScanTask) map[string]int64 {
		out := map[string]int64{}
		for _, task := range tasks {
			out[task.File.FilePath()] = *task.DataSequenceNumber
		}
		return out
	}
	snaps := tbl.Metadata().Snapshots()
	if len(snaps) < 8 {
		t.Fatalf("%d snapshots, want at least 8", len(snaps))
	}
	for _, s := range snaps {
		want, err := tbl.Scan(table.WithSnapshotID(s.SnapshotID)).PlanFiles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.planSnapshot(ctx, tbl, &s)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := files(got), files(want); fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("snapshot %d (%s): planned %v, iceberg-go plans %v", s.SnapshotID, s.Summary.Operation, g, w)
		}
	}
	if _, hits, _ := e.files.entries.stats(); hits == 0 {
		t.Error("no manifest's entries came from the cache")
	}
}
