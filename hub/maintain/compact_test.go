package maintain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
)

// smallFiles commits n appends of per rows each, ids from 1.
func smallFiles(t *testing.T, cat *catalog.Catalog, name string, n, per int) []testRow {
	t.Helper()
	var all []testRow
	for i := range n {
		rows := rowsFor(int64(i*per+1), per)
		if err := appendRows(t.Context(), cat, name, rows); err != nil {
			t.Fatal(err)
		}
		all = append(all, rows...)
	}
	return all
}

func without(rows []testRow, drop map[int64]bool) []testRow {
	return slices.DeleteFunc(slices.Clone(rows), func(r testRow) bool { return drop[r.ID] })
}

var testOpts = CompactOptions{TargetFileSize: 8 << 20, MinInputFiles: 2, CommitRetries: 3}

// TestCompactFoldsDeletesAndSorts compacts a table of many small files carrying
// equality deletes: the scan is unchanged, the deleted rows are gone from the data
// itself (no delete files remain), and each partition's rows are sorted by time.
func TestCompactFoldsDeletesAndSorts(t *testing.T) {
	cat := openTestCatalog(t, catalog.Config{DataDir: t.TempDir()})
	createTestTable(t, cat, "labs")
	all := smallFiles(t, cat, "labs", 12, 50)
	drop := map[int64]bool{}
	var dropRows []testRow
	for _, r := range all {
		if r.ID%9 == 0 {
			drop[r.ID] = true
			dropRows = append(dropRows, r)
		}
	}
	if err := deleteByEquality(t.Context(), cat, "labs", dropRows); err != nil {
		t.Fatal(err)
	}
	before := scanRows(t, cat, "labs")
	if want := without(all, drop); !slices.Equal(before, want) {
		t.Fatalf("scan before compaction has %d rows, want %d", len(before), len(want))
	}
	dataBefore, delBefore := tableFiles(t, cat, "labs")
	if len(delBefore) == 0 {
		t.Fatal("no equality delete files before compaction; the test writes none")
	}

	hcfg := DefaultConfig()
	hcfg.TargetFileSize, hcfg.MinInputFiles = testOpts.TargetFileSize, testOpts.MinInputFiles
	h, err := TableHealth(t.Context(), CatalogTables(cat), "labs", hcfg)
	if err != nil {
		t.Fatal(err)
	}
	if h.DataFiles != len(dataBefore) || h.SmallFiles != len(dataBefore) || h.DeleteFiles != len(delBefore) ||
		h.Partitions != 4 || h.CompactablePartitions != 4 || h.Snapshots != 13 || h.Records != int64(len(all)) ||
		!h.LastCompaction.IsZero() || h.Status() == "ok" {
		t.Errorf("health before compaction: %+v", h)
	}

	var progress []int
	opts := testOpts
	opts.Progress = func(done, total int) { progress = append(progress, done) }
	res, err := Compact(t.Context(), CatalogTables(cat), "labs", opts)
	if err != nil {
		t.Fatal(err)
	}
	after := scanRows(t, cat, "labs")
	if !slices.Equal(after, before) {
		t.Fatalf("scan after compaction differs: %d rows, want %d", len(after), len(before))
	}
	dataAfter, delAfter := tableFiles(t, cat, "labs")
	// 2 facilities x 2 days = 4 partitions, one file each.
	if len(dataAfter) != 4 || len(delAfter) != 0 {
		t.Errorf("after compaction: %d data files, %d delete files; want 4 and 0 (before: %d and %d)",
			len(dataAfter), len(delAfter), len(dataBefore), len(delBefore))
	}
	if res.FilesRemoved != len(dataBefore) || res.FilesAdded != 4 || res.DeleteFilesRemoved != len(delBefore) || res.Attempts != 1 {
		t.Errorf("result %+v; want %d files removed, 4 added, %d delete files removed, 1 attempt", res, len(dataBefore), len(delBefore))
	}
	if res.RowsWritten != int64(len(before)) {
		t.Errorf("rows written %d, want %d", res.RowsWritten, len(before))
	}
	if len(progress) != res.Groups || progress[len(progress)-1] != res.Groups {
		t.Errorf("progress calls %v for %d groups", progress, res.Groups)
	}
	for _, df := range dataAfter {
		ts := fileTimes(t, df.FilePath())
		if !slices.IsSorted(ts) {
			t.Errorf("file %s is not sorted by observed_at", filepath.Base(df.FilePath()))
		}
	}
	tbl, _ := CatalogTables(cat).Load(t.Context(), "labs")
	if tbl.SortOrder().Len() != 2 {
		t.Errorf("table sort order %v, want _facility, observed_at", tbl.SortOrder())
	}
	if s := tbl.CurrentSnapshot(); s.Summary.Properties[PropMaintenance] != opCompact {
		t.Errorf("rewrite snapshot summary %v lacks %s", s.Summary.Properties, PropMaintenance)
	}

	h, err = TableHealth(t.Context(), CatalogTables(cat), "labs", hcfg)
	if err != nil {
		t.Fatal(err)
	}
	if h.DataFiles != 4 || h.DeleteFiles != 0 || h.CompactablePartitions != 0 || h.LastCompaction.IsZero() ||
		h.Records != int64(len(before)) || h.Status() != "ok" {
		t.Errorf("health after compaction: %+v", h)
	}

	// Nothing left to do: a second run commits nothing.
	res, err = Compact(t.Context(), CatalogTables(cat), "labs", opts)
	if err != nil || res.SnapshotID != 0 || res.Groups != 0 {
		t.Fatalf("second compaction = %+v, %v; want nothing done", res, err)
	}
}

// TestCompactConcurrentCommits commits, between the rewrite's planning and its commit,
// each kind of change another writer may make, and checks the rewrite is re-applied
// or abandoned so that the table's rows are exactly what the writers committed.
func TestCompactConcurrentCommits(t *testing.T) {
	tests := []struct {
		name      string
		change    func(ctx context.Context, cat *catalog.Catalog, all []testRow) (added []testRow, dropped map[int64]bool, err error)
		abandoned bool
	}{
		{"append", func(ctx context.Context, cat *catalog.Catalog, _ []testRow) ([]testRow, map[int64]bool, error) {
			rows := rowsFor(10001, 40)
			return rows, nil, appendRows(ctx, cat, "labs", rows)
		}, false},
		{"equality delete of rewritten rows", func(ctx context.Context, cat *catalog.Catalog, all []testRow) ([]testRow, map[int64]bool, error) {
			victims := []testRow{all[3], all[17], all[250]}
			drop := map[int64]bool{}
			for _, r := range victims {
				drop[r.ID] = true
			}
			return nil, drop, deleteByEquality(ctx, cat, "labs", victims)
		}, false},
		{"delete removing files", func(ctx context.Context, cat *catalog.Catalog, all []testRow) ([]testRow, map[int64]bool, error) {
			tbl, err := CatalogTables(cat).Load(ctx, "labs")
			if err != nil {
				return nil, nil, err
			}
			txn := tbl.NewTransaction()
			if err := txn.Delete(ctx, iceberg.EqualTo(iceberg.Reference("id"), int64(5)), nil); err != nil {
				return nil, nil, err
			}
			_, err = txn.Commit(ctx)
			return nil, map[int64]bool{5: true}, err
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cat := openTestCatalog(t, catalog.Config{DataDir: dir})
			createTestTable(t, cat, "labs")
			all := smallFiles(t, cat, "labs", 8, 50)
			want := slices.Clone(all)
			onDisk := parquetFiles(t, dir)
			opts := testOpts
			var once sync.Once
			opts.Progress = func(done, total int) {
				once.Do(func() {
					added, dropped, err := tt.change(t.Context(), cat, all)
					if err != nil {
						t.Errorf("concurrent change: %v", err)
					}
					want = without(append(want, added...), dropped)
					// Files the change wrote are live after it; the rewrite's are not.
					data, deletes := tableFiles(t, cat, "labs")
					for _, df := range append(data, deletes...) {
						onDisk[strings.TrimPrefix(df.FilePath(), "file://")] = true
					}
				})
			}
			res, err := Compact(t.Context(), CatalogTables(cat), "labs", opts)
			if tt.abandoned {
				if !errors.Is(err, ErrAbandoned) || res.Abandoned == "" || res.SnapshotID != 0 {
					t.Fatalf("Compact = %+v, %v; want abandoned", res, err)
				}
			} else if err != nil || res.Attempts != 2 || res.SnapshotID == 0 {
				t.Fatalf("Compact = %+v, %v; want committed on the 2nd attempt", res, err)
			}
			slices.SortFunc(want, func(a, b testRow) int { return int(a.ID - b.ID) })
			if got := scanRows(t, cat, "labs"); !slices.Equal(got, want) {
				t.Fatalf("table has %d rows after compaction, want %d", len(got), len(want))
			}
			if tt.abandoned {
				// The abandoned rewrite's files were removed: every data file written
				// since the change is live.
				data, _ := tableFiles(t, cat, "labs")
				live := map[string]bool{}
				for _, df := range data {
					live[strings.TrimPrefix(df.FilePath(), "file://")] = true
				}
				for p := range parquetFiles(t, dir) {
					if !onDisk[p] && !live[p] {
						t.Errorf("abandoned rewrite left %s", filepath.Base(p))
					}
				}
			}
		})
	}
}

// TestCompactWhileAppending runs compactions while a writer appends five times a
// second (five hubs at the default commit interval), and checks no appended row is
// lost or doubled.
func TestCompactWhileAppending(t *testing.T) {
	cat := openTestCatalog(t, catalog.Config{DataDir: t.TempDir()})
	createTestTable(t, cat, "labs")
	want := smallFiles(t, cat, "labs", 6, 20)
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg       sync.WaitGroup
		appended []testRow
		appErr   error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(0); ctx.Err() == nil; i++ {
			rows := rowsFor(100000+i*20, 20)
			if err := appendRows(ctx, cat, "labs", rows); err != nil {
				if ctx.Err() == nil {
					appErr = err
				}
				return
			}
			appended = append(appended, rows...)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	opts := testOpts
	opts.CommitRetries = 20
	committed := 0
	for range 4 {
		time.Sleep(500 * time.Millisecond) // let small files accumulate
		res, err := Compact(t.Context(), CatalogTables(cat), "labs", opts)
		t.Logf("compaction: %+v", res)
		if err != nil {
			t.Errorf("compaction while appending: %v", err)
		}
		if res.SnapshotID != 0 {
			committed++
		}
	}
	cancel()
	wg.Wait()
	if appErr != nil {
		t.Fatal(appErr)
	}
	if committed == 0 {
		t.Fatal("no compaction committed")
	}
	want = append(want, appended...)
	slices.SortFunc(want, func(a, b testRow) int { return int(a.ID - b.ID) })
	if got := scanRows(t, cat, "labs"); !slices.Equal(got, want) {
		t.Fatalf("table has %d rows, want %d (%d appended during compaction)", len(got), len(want), len(appended))
	}
}

// parquetFiles lists the data files under dir.
func parquetFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".parquet") && strings.Contains(p, "/data/") {
			out[p] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCompactFoldsPositionDeletes deletes rows by position (a merge-on-read delete)
// and compacts: the rows stay deleted, and the position delete files are gone.
func TestCompactFoldsPositionDeletes(t *testing.T) {
	cat := openTestCatalog(t, catalog.Config{DataDir: t.TempDir()})
	tbl := createTestTable(t, cat, "labs")
	txn := tbl.NewTransaction()
	if err := txn.SetProperties(iceberg.Properties{table.WriteDeleteModeKey: table.WriteModeMergeOnRead}); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	all := smallFiles(t, cat, "labs", 6, 40)
	tbl, _ = CatalogTables(cat).Load(t.Context(), "labs")
	txn = tbl.NewTransaction()
	drop := map[int64]bool{7: true, 8: true, 100: true, 201: true}
	if err := txn.Delete(t.Context(), iceberg.IsIn(iceberg.Reference("id"), int64(7), int64(8), int64(100), int64(201)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := without(all, drop)
	if got := scanRows(t, cat, "labs"); !slices.Equal(got, want) {
		t.Fatalf("scan after delete has %d rows, want %d", len(got), len(want))
	}
	_, deletes := tableFiles(t, cat, "labs")
	if len(deletes) == 0 {
		t.Fatal("the merge-on-read delete wrote no delete files")
	}
	res, err := Compact(t.Context(), CatalogTables(cat), "labs", testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if got := scanRows(t, cat, "labs"); !slices.Equal(got, want) {
		t.Fatalf("scan after compaction has %d rows, want %d", len(got), len(want))
	}
	if _, left := tableFiles(t, cat, "labs"); len(left) != 0 || res.DeleteFilesRemoved != len(deletes) {
		t.Errorf("%d delete files left, %d folded; want 0 and %d", len(left), res.DeleteFilesRemoved, len(deletes))
	}
}

// TestCompactPartitionAllDeleted deletes every row of one facility: its partitions'
// groups write no files, and compaction must still remove the old files with the
// deletes, not resurrect the rows.
func TestCompactPartitionAllDeleted(t *testing.T) {
	cat := openTestCatalog(t, catalog.Config{DataDir: t.TempDir()})
	createTestTable(t, cat, "labs")
	all := smallFiles(t, cat, "labs", 5, 30)
	var gone []testRow
	drop := map[int64]bool{}
	for _, r := range all {
		if r.Facility == "F001" {
			gone = append(gone, r)
			drop[r.ID] = true
		}
	}
	if err := deleteByEquality(t.Context(), cat, "labs", gone); err != nil {
		t.Fatal(err)
	}
	want := without(all, drop)
	if _, err := Compact(t.Context(), CatalogTables(cat), "labs", testOpts); err != nil {
		t.Fatal(err)
	}
	if got := scanRows(t, cat, "labs"); !slices.Equal(got, want) {
		t.Fatalf("scan after compaction has %d rows, want %d", len(got), len(want))
	}
	data, deletes := tableFiles(t, cat, "labs")
	for _, df := range data {
		if strings.Contains(fmt.Sprint(df.Partition()), "F001") {
			t.Errorf("data file %s of the emptied facility is still live", filepath.Base(df.FilePath()))
		}
	}
	if len(deletes) != 0 {
		t.Errorf("%d delete files left", len(deletes))
	}
}
