package catalog

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no data dir for default sqlite", Config{Warehouse: "/tmp/x"}, "no data_dir"},
		{"relative sqlite path", Config{URI: "sqlite://rel.db", DataDir: "/tmp"}, "absolute"},
		{"sqlite options", Config{URI: "sqlite:///tmp/a.db?_pragma=x", DataDir: "/tmp"}, "options are fixed"},
		{"unknown scheme", Config{URI: "mysql://u:secret@h/db", DataDir: "/tmp"}, "unsupported scheme"},
		{"relative warehouse", Config{DataDir: t.TempDir(), Warehouse: "wh"}, "absolute directory"},
		{"s3 without bucket", Config{DataDir: t.TempDir(), Warehouse: "s3:///x"}, "s3://bucket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Open(t.Context(), tt.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("Open(%+v) succeeded, want error containing %q", tt.cfg, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("Open error leaks the password: %v", err)
			}
		})
	}
}

func TestSQLite(t *testing.T) {
	dir := t.TempDir()
	testCatalog(t, Config{DataDir: dir})
	// Reopening runs the migrations again and must find the namespace and ledger intact.
	testReopen(t, Config{DataDir: dir})
}

func TestSQLiteExplicitPaths(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{URI: "sqlite://" + filepath.Join(dir, "meta", "c.db"), Warehouse: "file://" + filepath.Join(dir, "wh"), Namespace: "ns1"}
	c := testCatalog(t, cfg)
	if got := c.Warehouse(); got != filepath.Join(dir, "wh") {
		t.Errorf("Warehouse() = %q, want %q", got, filepath.Join(dir, "wh"))
	}
}

// testCatalog exercises a fresh catalog: an Iceberg table round trip and the ledger.
func testCatalog(t testing.TB, cfg Config) *Catalog {
	t.Helper()
	ctx := t.Context()
	c, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ns := cfg.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if ok, err := c.Iceberg().CheckNamespaceExists(ctx, c.Namespace()); err != nil || !ok {
		t.Fatalf("namespace %s exists = %v, %v; want true", ns, ok, err)
	}

	snap := appendRows(t, c, "t1", 3)

	entries := []Ledger{
		{BatchID: "b1", Table: "t1", SnapshotID: snap, Rows: 2, CommittedAt: time.UnixMicro(1700000000123456).UTC(), SourceSHA256: "aa", Agent: "ag1"},
		{BatchID: "b2", Table: "t1", SnapshotID: snap, Rows: 1, CommittedAt: time.UnixMicro(1700000000123457).UTC(), SourceSHA256: "bb", Agent: "ag1"},
	}
	tx, err := c.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RecordBatches(ctx, tx, entries); err != nil {
		t.Fatalf("RecordBatches: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// A second record of b1 (a re-sent batch) must not change the first entry.
	dup := entries[0]
	dup.SnapshotID, dup.Rows = 999, 99
	if err := c.RecordBatches(ctx, c.DB(), []Ledger{dup}); err != nil {
		t.Fatalf("RecordBatches duplicate: %v", err)
	}
	got, err := c.CommittedBatches(ctx, []string{"b1", "b2", "b3"})
	if err != nil {
		t.Fatalf("CommittedBatches: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("CommittedBatches returned %d entries, want 2: %+v", len(got), got)
	}
	for _, e := range entries {
		if got[e.BatchID] != e {
			t.Errorf("ledger entry %s = %+v, want %+v", e.BatchID, got[e.BatchID], e)
		}
	}
	if ok, err := c.SnapshotRecorded(ctx, "t1", snap); err != nil || !ok {
		t.Errorf("SnapshotRecorded(t1, %d) = %v, %v; want true", snap, ok, err)
	}
	if ok, err := c.SnapshotRecorded(ctx, "t1", snap+1); err != nil || ok {
		t.Errorf("SnapshotRecorded(t1, %d) = %v, %v; want false", snap+1, ok, err)
	}

	// A reconcile's placeholder (rows unknown) is filled in by the committing hub's own
	// entry of the same snapshot, and by nothing else.
	ph := Ledger{BatchID: "p1", Table: "t1", SnapshotID: snap, Rows: -1, CommittedAt: time.UnixMicro(1700000000123458).UTC()}
	other := Ledger{BatchID: "p2", Table: "t1", SnapshotID: snap, Rows: -1, CommittedAt: ph.CommittedAt}
	if err := c.RecordBatches(ctx, c.DB(), []Ledger{ph, other}); err != nil {
		t.Fatal(err)
	}
	real1, wrongSnap := ph, other
	real1.Rows, real1.SourceSHA256, real1.Agent = 7, "cc", "ag2"
	wrongSnap.SnapshotID, wrongSnap.Rows, wrongSnap.Agent = snap+5, 3, "ag3"
	if err := c.RecordBatches(ctx, c.DB(), []Ledger{real1, wrongSnap}); err != nil {
		t.Fatal(err)
	}
	real1.Rows = 8 // a later duplicate changes nothing any more
	if err := c.RecordBatches(ctx, c.DB(), []Ledger{real1}); err != nil {
		t.Fatal(err)
	}
	real1.Rows = 7
	got, err = c.CommittedBatches(ctx, []string{"p1", "p2"})
	if err != nil {
		t.Fatal(err)
	}
	if got["p1"] != real1 || got["p2"] != other {
		t.Errorf("placeholders after the committing hub's entries: %+v, %+v; want %+v, %+v", got["p1"], got["p2"], real1, other)
	}

	// Many ids span several statements.
	var many []Ledger
	var ids []string
	for i := range 1234 {
		id := "m" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + strconv.Itoa(i)
		many = append(many, Ledger{BatchID: id, Table: "t1", SnapshotID: snap, Rows: 1, CommittedAt: time.Now().UTC().Truncate(time.Microsecond), Agent: "ag"})
		ids = append(ids, id)
	}
	if err := c.RecordBatches(ctx, c.DB(), many); err != nil {
		t.Fatalf("RecordBatches many: %v", err)
	}
	got, err = c.CommittedBatches(ctx, ids)
	if err != nil || len(got) != len(ids) {
		t.Fatalf("CommittedBatches many = %d entries, %v; want %d", len(got), err, len(ids))
	}
	return c
}

func testReopen(t testing.TB, cfg Config) {
	t.Helper()
	c, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer c.Close()
	got, err := c.CommittedBatches(t.Context(), []string{"b1"})
	if err != nil || len(got) != 1 {
		t.Fatalf("after reopen CommittedBatches(b1) = %v, %v; want one entry", got, err)
	}
	tbl, err := c.Iceberg().LoadTable(t.Context(), c.TableIdent("t1"))
	if err != nil {
		t.Fatalf("after reopen LoadTable: %v", err)
	}
	if tbl.CurrentSnapshot() == nil {
		t.Fatal("after reopen table t1 has no snapshot")
	}
}

// appendRows creates table name with one string column, appends n rows and returns
// the snapshot id after reading them back.
func appendRows(t testing.TB, c *Catalog, name string, n int) int64 {
	t.Helper()
	ctx := context.Background()
	sc := iceberg.NewSchema(0, iceberg.NestedField{ID: 1, Name: "v", Type: iceberg.PrimitiveTypes.String, Required: false})
	tbl, err := c.Iceberg().CreateTable(ctx, c.TableIdent(name), sc)
	if err != nil {
		t.Fatalf("CreateTable %s: %v", name, err)
	}
	asc := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, asc)
	defer b.Release()
	for i := range n {
		b.Field(0).(*array.StringBuilder).Append("row" + strconv.Itoa(i))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(asc, []arrow.RecordBatch{rec})
	defer at.Release()
	tbl, err = tbl.AppendTable(ctx, at, int64(n), iceberg.Properties{"medlake.test": "1"})
	if err != nil {
		t.Fatalf("AppendTable %s: %v", name, err)
	}
	res, err := tbl.Scan().ToArrowTable(ctx)
	if err != nil {
		t.Fatalf("scanning %s: %v", name, err)
	}
	defer res.Release()
	if res.NumRows() != int64(n) {
		t.Fatalf("table %s has %d rows, want %d", name, res.NumRows(), n)
	}
	return tbl.CurrentSnapshot().SnapshotID
}
