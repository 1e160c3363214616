package maintain

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
)

// TestExpire compacts a table and expires all but the newest snapshots: the scan is
// unchanged, the replaced small files are deleted, time travel to an expired snapshot
// fails, and the batch ids of expired snapshots the ledger lacked are recorded first.
func TestExpire(t *testing.T) {
	cat := openTestCatalog(t, catalog.Config{DataDir: t.TempDir()})
	createTestTable(t, cat, "labs")
	all := smallFiles(t, cat, "labs", 10, 30)
	// The ledger already has the first batch, as after a normal hub commit.
	tbl, _ := CatalogTables(cat).Load(t.Context(), "labs")
	first := tbl.Metadata().Snapshots()[0]
	if err := cat.RecordBatches(t.Context(), cat.DB(), []catalog.Ledger{{BatchID: "b1", Table: "labs", SnapshotID: first.SnapshotID, Rows: 30, CommittedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	small, _ := tableFiles(t, cat, "labs")
	if _, err := Compact(t.Context(), CatalogTables(cat), "labs", testOpts); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name         string
		r            Retention
		wantLeft     int
		wantRecorded int
	}{
		{"nothing older than a day", Retention{RetainLast: 1, MaxAge: 24 * time.Hour}, 11, 0},
		// Every snapshot past the age limit may go, so all their unrecorded batches
		// (9 of 10) are recorded, even of the two appends kept.
		{"keep the last 3", Retention{RetainLast: 3, MaxAge: 0}, 3, 9},
		// The appends kept above still reference the small files; only the rewrite
		// snapshot left, they go.
		{"keep the last only", Retention{RetainLast: 1, MaxAge: 0}, 1, 0},
		{"again, nothing to do", Retention{RetainLast: 1, MaxAge: 0}, 1, 0},
	}
	for _, tt := range tests {
		res, err := Expire(t.Context(), CatalogTables(cat), cat, "labs", tt.r, 3)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if left := res.SnapshotsBefore - res.SnapshotsExpired; left != tt.wantLeft || res.BatchesRecorded != tt.wantRecorded {
			t.Errorf("%s: %+v; want %d snapshots left, %d batches recorded", tt.name, res, tt.wantLeft, tt.wantRecorded)
		}
	}
	if got := scanRows(t, cat, "labs"); !slices.Equal(got, all) {
		t.Fatalf("scan after expiry has %d rows, want %d", len(got), len(all))
	}
	for _, df := range small {
		if _, err := os.Stat(strings.TrimPrefix(df.FilePath(), "file://")); !os.IsNotExist(err) {
			t.Errorf("replaced file %s still on disk after expiry (%v)", filepath.Base(df.FilePath()), err)
		}
	}
	tbl, _ = CatalogTables(cat).Load(t.Context(), "labs")
	if _, err := tbl.Scan(table.WithSnapshotID(first.SnapshotID)).ToArrowTable(t.Context()); err == nil {
		t.Error("time travel to an expired snapshot succeeded")
	}
	var ids []string
	for i := range 10 {
		ids = append(ids, "b"+itoa(int64(i*30+1)))
	}
	got, err := cat.CommittedBatches(t.Context(), ids)
	if err != nil || len(got) != 10 {
		t.Fatalf("ledger has %d of the 10 expired batches (%v)", len(got), err)
	}
	if _, err := Expire(t.Context(), CatalogTables(cat), cat, "labs", Retention{}, 0); err == nil {
		t.Error("retain_last 0 accepted")
	}
}

// TestCleanOrphans leaves stray files in a table's location: the old one is removed,
// the recent one (possibly a write in flight) stays, and so does every table file.
func TestCleanOrphans(t *testing.T) {
	cat := openTestCatalog(t, catalog.Config{DataDir: t.TempDir()})
	tbl := createTestTable(t, cat, "labs")
	all := smallFiles(t, cat, "labs", 4, 30)
	dataDir := filepath.Join(strings.TrimPrefix(tbl.Location(), "file://"), "data")
	old := filepath.Join(dataDir, "stray-old.parquet")
	recent := filepath.Join(dataDir, "stray-recent.parquet")
	for _, p := range []string{old, recent} {
		if err := os.WriteFile(p, []byte("not referenced"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	// Table files are old too: age alone must not condemn them.
	data, _ := tableFiles(t, cat, "labs")
	for _, df := range data {
		os.Chtimes(strings.TrimPrefix(df.FilePath(), "file://"), past, past)
	}

	dry, err := CleanOrphans(t.Context(), CatalogTables(cat), "labs", time.Hour, true)
	if err != nil || dry.Files != 1 || dry.Deleted != 0 {
		t.Fatalf("dry run = %+v, %v; want 1 orphan, none deleted", dry, err)
	}
	res, err := CleanOrphans(t.Context(), CatalogTables(cat), "labs", time.Hour, false)
	if err != nil || res.Files != 1 || res.Deleted != 1 {
		t.Fatalf("CleanOrphans = %+v, %v; want 1 orphan deleted", res, err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old orphan still there (%v)", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent unreferenced file removed: %v", err)
	}
	if got := scanRows(t, cat, "labs"); !slices.Equal(got, all) {
		t.Fatalf("scan after cleanup has %d rows, want %d", len(got), len(all))
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
