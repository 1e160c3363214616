package engine

import (
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/iceberg-go"

	"github.com/medlake/medlake/query/internal/testlake"
)

// TestVisibilityObserver checks that a refresh reports every snapshot it makes visible,
// the ones it skipped over included, with the oldest source mtime the hub wrote, and
// that the first refresh reports none.
func TestVisibilityObserver(t *testing.T) {
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "lab_results")
	testlake.AppendLabRows(t, cat, "lab_results", 0, 10)
	var (
		mu  sync.Mutex
		got []Visible
	)
	e, err := New(context.Background(), Config{CacheDir: filepath.Join(t.TempDir(), "cache")}, cat, testlake.Namespace,
		slog.New(slog.DiscardHandler), WithVisibilityObserver(func(v Visible) {
			mu.Lock()
			got = append(got, v)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if len(got) != 0 {
		t.Fatalf("first refresh reported %v, want nothing", got)
	}

	mtime := time.Now().Add(-7 * time.Second).Truncate(time.Millisecond)
	s1 := testlake.AppendLabRowsProps(t, cat, "lab_results", 10, 20,
		iceberg.Properties{PropSourceMtimeMin: strconv.FormatInt(mtime.UnixMilli(), 10)}).CurrentSnapshot().SnapshotID
	s2 := testlake.AppendLabRows(t, cat, "lab_results", 20, 30).CurrentSnapshot().SnapshotID
	before := time.Now()
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].SnapshotID != s2 || got[1].SnapshotID != s1 {
		t.Fatalf("visible = %+v, want snapshots %d then %d", got, s2, s1)
	}
	for _, v := range got {
		if v.Table != "lab_results" || v.VisibleAt.Before(before) || v.CommittedAt.After(v.VisibleAt) {
			t.Errorf("visible %+v: want lab_results, committed before it became visible after %s", v, before)
		}
	}
	if !got[1].SourceMtimeMin.Equal(mtime) || !got[0].SourceMtimeMin.IsZero() {
		t.Errorf("source mtimes = %s, %s; want none, then %s", got[0].SourceMtimeMin, got[1].SourceMtimeMin, mtime)
	}

	// A table created after the engine started is visible from its first snapshot.
	got = nil
	testlake.CreateLabTable(t, cat, "vitals")
	s3 := testlake.AppendLabRows(t, cat, "vitals", 0, 5).CurrentSnapshot().SnapshotID
	mu.Unlock()
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(got) != 1 || got[0].Table != "vitals" || got[0].SnapshotID != s3 {
		t.Errorf("new table: visible = %+v, want vitals snapshot %d", got, s3)
	}
}
