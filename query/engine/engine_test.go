package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
	"github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/internal/testlake"
)

// testAdmin reads every row.
var testAdmin = auth.Principal{User: "test", Admin: true}

func openEngine(tb testing.TB, cat icecatalog.Catalog) *Engine {
	tb.Helper()
	e, err := New(context.Background(), Config{CacheDir: filepath.Join(tb.TempDir(), "cache")}, cat, testlake.Namespace, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

func queryInts(tb testing.TB, e *Engine, q string, args ...any) []int64 {
	tb.Helper()
	rows, err := e.Query(context.Background(), q, args...)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			tb.Fatalf("%s: scan: %v", q, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return out
}

func TestViewsFollowSnapshots(t *testing.T) {
	ctx := context.Background()
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "lab_results")
	testlake.CreateLabTable(t, cat, "empty_table")
	for i := range 3 {
		testlake.AppendLabRows(t, cat, "lab_results", i*1000, (i+1)*1000)
	}
	e := openEngine(t, cat)

	if got := queryInts(t, e, `SELECT count(*) FROM lab_results`); got[0] != 3000 {
		t.Fatalf("count = %d, want 3000", got[0])
	}
	if got := queryInts(t, e, `SELECT count(DISTINCT lab_id) FROM lab_results`); got[0] != 3000 {
		t.Fatalf("distinct lab_id = %d, want 3000 (duplicated rows?)", got[0])
	}
	if got := queryInts(t, e, `SELECT count(*) FROM lab_results GROUP BY facility ORDER BY facility`); len(got) != 3 || got[0] != 1000 {
		t.Fatalf("group by facility = %v, want [1000 1000 1000]", got)
	}
	if got := queryInts(t, e, `SELECT count(*) FROM lab_results WHERE lab_id > $1`, 2500); got[0] != 500 {
		t.Fatalf("where lab_id > 2500 = %d, want 500", got[0])
	}
	if got := queryInts(t, e, `SELECT count(*) FROM empty_table`); got[0] != 0 {
		t.Fatalf("empty table count = %d", got[0])
	}

	// A session statement prepared before a refresh sees the new snapshot.
	s, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Prepare(ctx, `SELECT count(*) FROM lab_results WHERE facility = $1`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	count := func() int64 {
		var n int64
		if err := st.Query(ctx, []any{"fac0001"}, func(row []driver.Value) error { n = row[0].(int64); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1000 {
		t.Fatalf("prepared count = %d, want 1000", n)
	}
	// DuckDB inlined the empty view into this plan; it must not stay empty.
	emptySt, err := s.Prepare(ctx, `SELECT count(*) FROM empty_table`)
	if err != nil {
		t.Fatal(err)
	}
	defer emptySt.Close()
	before, _ := e.SnapshotID("lab_results")
	testlake.AppendLabRows(t, cat, "lab_results", 3000, 3300)
	testlake.AppendLabRows(t, cat, "empty_table", 0, 10)
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if after, _ := e.SnapshotID("lab_results"); after == before {
		t.Errorf("snapshot id unchanged after append: %d", after)
	}
	if n := count(); n != 1100 {
		t.Errorf("prepared count after refresh = %d, want 1100", n)
	}
	if got := queryInts(t, e, `SELECT count(*) FROM empty_table`); got[0] != 10 {
		t.Errorf("formerly empty table count = %d, want 10", got[0])
	}
	var n int64
	if err := emptySt.Query(ctx, nil, func(row []driver.Value) error { n = row[0].(int64); return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Errorf("statement prepared while the table was empty counts %d after refresh, want 10", n)
	}

	if err := cat.DropTable(ctx, table.Identifier{testlake.Namespace, "empty_table"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Query(ctx, `SELECT * FROM empty_table`); err == nil {
		t.Error("dropped table still queryable")
	}
	if got := e.Tables(); len(got) != 1 || got[0] != "lab_results" {
		t.Errorf("Tables() = %v", got)
	}
}

func TestEmptyTableHasColumns(t *testing.T) {
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "lab_results")
	e := openEngine(t, cat)
	s, err := e.Session(context.Background(), testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Prepare(context.Background(), `SELECT * FROM lab_results`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := []Column{
		{"lab_id", Type{ID: duckdb.TYPE_BIGINT}}, {"facility", Type{ID: duckdb.TYPE_VARCHAR}},
		{"patient_id", Type{ID: duckdb.TYPE_VARCHAR}}, {"result_value", Type{ID: duckdb.TYPE_DOUBLE}},
		{"abnormal", Type{ID: duckdb.TYPE_BOOLEAN}}, {"collected_at", Type{ID: duckdb.TYPE_TIMESTAMP_TZ}},
	}
	if len(st.Columns) != len(want) {
		t.Fatalf("columns = %+v", st.Columns)
	}
	for i := range want {
		if st.Columns[i] != want[i] {
			t.Errorf("column %d = %+v, want %+v", i, st.Columns[i], want[i])
		}
	}
}

func TestPrepareDescribes(t *testing.T) {
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "lab_results")
	testlake.AppendLabRows(t, cat, "lab_results", 0, 100)
	e := openEngine(t, cat)
	ctx := context.Background()
	s, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		query  string
		params []duckdb.Type
		cols   []duckdb.Type
	}{
		{`SELECT lab_id, result_value FROM lab_results WHERE lab_id = $1 AND facility = $2`,
			[]duckdb.Type{duckdb.TYPE_BIGINT, duckdb.TYPE_VARCHAR}, []duckdb.Type{duckdb.TYPE_BIGINT, duckdb.TYPE_DOUBLE}},
		{`SELECT $1`, []duckdb.Type{duckdb.TYPE_VARCHAR}, []duckdb.Type{duckdb.TYPE_VARCHAR}},
		{`SELECT $1::int + 1`, []duckdb.Type{duckdb.TYPE_INTEGER}, []duckdb.Type{duckdb.TYPE_INTEGER}},
		{`SELECT 1.50::decimal(10,2) AS d`, nil, []duckdb.Type{duckdb.TYPE_DECIMAL}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			st, err := s.Prepare(ctx, tt.query)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if len(st.Params) != len(tt.params) || len(st.Columns) != len(tt.cols) {
				t.Fatalf("params %+v cols %+v", st.Params, st.Columns)
			}
			for i, p := range tt.params {
				if st.Params[i].ID != p {
					t.Errorf("param $%d type %v, want %v", i+1, st.Params[i].ID, p)
				}
			}
			for i, c := range tt.cols {
				if st.Columns[i].Type.ID != c {
					t.Errorf("column %d type %v, want %v", i, st.Columns[i].Type.ID, c)
				}
			}
		})
	}
	st, err := s.Prepare(ctx, `SELECT 1.50::decimal(10,2) AS d`)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Columns[0]; c.Type.Width != 10 || c.Type.Scale != 2 || c.Name != "d" {
		t.Errorf("decimal column = %+v", c)
	}
	st.Close()
}

// TestLockDown checks DuckDB itself refuses files outside the cache and
// setting changes, and the read-only gate refuses everything but SELECT
// without executing any part of it.
func TestLockDown(t *testing.T) {
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "lab_results")
	testlake.AppendLabRows(t, cat, "lab_results", 0, 10)
	e := openEngine(t, cat)
	ctx := context.Background()
	outside := filepath.Join(t.TempDir(), "x.csv")

	// Straight to DuckDB, past the gate: the database settings must hold.
	for _, q := range []string{
		`SELECT * FROM read_csv('/etc/passwd')`,
		`SELECT * FROM read_text('/etc/hostname')`,
		`COPY (SELECT 1) TO '/tmp/x'`,
		`COPY (SELECT 1) TO '` + outside + `'`,
		`SET enable_external_access = true`,
		`SET allowed_directories = ['/']`,
		`SET lock_configuration = false`,
		`INSTALL httpfs`,
		`LOAD httpfs`,
		`ATTACH '/tmp/evil.db'`,
	} {
		if _, err := e.db.ExecContext(ctx, q); err == nil {
			t.Errorf("duckdb accepted %q", q)
		}
	}

	gated := []string{
		`COPY (SELECT 1) TO '` + e.cache.ObjectsDir() + `/x.parquet'`,
		`CREATE TABLE evil AS SELECT 1`,
		`SELECT 1; CREATE TABLE evil AS SELECT 1`,
		`SELECT 1; DROP VIEW lab_results`,
		`DROP VIEW lab_results`,
		`CREATE OR REPLACE VIEW lab_results AS SELECT 1 AS lab_id`,
		`SET threads = 1`,
		`PRAGMA version`,
		`SELECT * FROM query('DROP VIEW lab_results')`,
	}
	s, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range gated {
		if _, err := e.Query(ctx, q); err == nil {
			t.Errorf("Query accepted %q", q)
		}
		if st, err := s.Prepare(ctx, q); err == nil {
			st.Close()
			t.Errorf("Prepare accepted %q", q)
		}
	}
	if _, err := e.Query(ctx, `DROP VIEW lab_results`); !errors.Is(err, ErrNotReadOnly) {
		t.Errorf("DROP VIEW: err = %v, want ErrNotReadOnly", err)
	}
	if got := queryInts(t, e, `SELECT count(*) FROM lab_results`); got[0] != 10 {
		t.Errorf("after refused statements count = %d, want 10", got[0])
	}
	if got := queryInts(t, e, `SELECT count(*) FROM duckdb_tables() WHERE table_name = 'evil'`); got[0] != 0 {
		t.Error("a refused statement was executed")
	}
}
