package pgwire

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/medlake/medlake/catalog"
)

// TestAudit checks every statement lands in the catalog's audit log with who, from
// where, the tables read, the rows returned and the outcome.
func TestAudit(t *testing.T) {
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	addr, _ := startServer(t, Config{}, WithAuditor(cat))
	c := connect(t, dsn(addr, "auditor", "x"), pgx.QueryExecModeCacheStatement)

	rows, err := c.Query(ctx, `SELECT lab_id FROM lab_results WHERE lab_id <= $1`, 5)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(ids) != 5 {
		t.Fatalf("query = %v, %v; want 5 rows", ids, err)
	}
	if _, err := c.Exec(ctx, `COPY lab_results TO '/tmp/x.csv'`, pgx.QueryExecModeSimpleProtocol); err == nil {
		t.Fatal("COPY ran")
	}
	if _, err := c.Exec(ctx, `SELECT * FROM nope`, pgx.QueryExecModeSimpleProtocol); err == nil {
		t.Fatal("query of an unknown table ran")
	}
	if _, err := c.Exec(ctx, `SHOW server_version`, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}

	log, err := cat.AuditLog(ctx, catalog.AuditFilter{User: "auditor"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(log) // oldest first
	want := []struct {
		stmt    string
		tables  []string
		outcome string
		rows    int64
		errText string
	}{
		{`SELECT lab_id FROM lab_results WHERE lab_id <= $1`, []string{"lab_results"}, catalog.AuditOK, 5, ""},
		{`COPY lab_results TO '/tmp/x.csv'`, nil, catalog.AuditRefused, 0, "SELECT"},
		{`SELECT * FROM nope`, nil, catalog.AuditError, 0, "nope"},
		{`SHOW server_version`, nil, catalog.AuditOK, 1, ""},
	}
	if len(log) != len(want) {
		for _, e := range log {
			t.Logf("%+v", e)
		}
		t.Fatalf("audit log has %d entries, want %d", len(log), len(want))
	}
	for i, w := range want {
		e := log[i]
		if e.Statement != w.stmt || !slices.Equal(e.Tables, w.tables) || e.Outcome != w.outcome || e.Rows != w.rows ||
			!strings.Contains(e.Error, w.errText) || e.Protocol != "pgwire" || !strings.HasPrefix(e.Client, "127.0.0.1:") || e.StartedAt.IsZero() {
			t.Errorf("entry %d = %+v\nwant %+v", i, e, w)
		}
	}
}

// TestAuditUnavailable checks a statement the audit log cannot record is not run.
func TestAuditUnavailable(t *testing.T) {
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cat.Close() // every write fails from now on
	addr, _ := startServer(t, Config{}, WithAuditor(cat))
	c := connect(t, dsn(addr, "auditor", "x"), pgx.QueryExecModeSimpleProtocol)
	var n int64
	err = c.QueryRow(ctx, `SELECT count(*) FROM lab_results`).Scan(&n)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "58000" || !strings.Contains(pe.Message, "audit") {
		t.Fatalf("query with the audit log down = %d, %v; want SQLSTATE 58000 naming the audit log", n, err)
	}
}
