package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	icecatalog "github.com/apache/iceberg-go/catalog"

	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/internal/testlake"
)

// Two tenants' rows in two tables, as the hub writes them (_tenant, _facility lineage).
// acme has facilities a1 and a2; globex has g1.
var (
	encounterRows = []testlake.TenantRow{
		{ID: 1, Tenant: "acme", Facility: "a1", Patient: "pa1", Ref: 0},
		{ID: 2, Tenant: "acme", Facility: "a2", Patient: "pa2", Ref: 0},
		{ID: 3, Tenant: "globex", Facility: "g1", Patient: "pg3", Ref: 0},
		{ID: 4, Tenant: "globex", Facility: "g1", Patient: "pg4", Ref: 0},
		{ID: 5, Tenant: "acme", Facility: "a1", Patient: "pa5", Ref: 0},
	}
	labRows = []testlake.TenantRow{
		{ID: 10, Tenant: "acme", Facility: "a1", Patient: "pa1", Ref: 1},
		{ID: 11, Tenant: "acme", Facility: "a2", Patient: "pa2", Ref: 2},
		{ID: 12, Tenant: "globex", Facility: "g1", Patient: "pg3", Ref: 3},
		{ID: 13, Tenant: "globex", Facility: "g1", Patient: "pg4", Ref: 4},
	}
)

var (
	acme     = auth.Principal{User: "alice", Tenant: "acme"}
	acmeA1   = auth.Principal{User: "ann", Tenant: "acme", Facilities: []string{"a1"}}
	globex   = auth.Principal{User: "gus", Tenant: "globex"}
	admin    = auth.Principal{User: "root", Admin: true}
	injected = auth.Principal{User: "eve", Tenant: "acme' OR '1'='1"}
)

func openTenantLake(tb testing.TB) *Engine {
	tb.Helper()
	e, _ := openTenantLakeCatalog(tb)
	return e
}

func openTenantLakeCatalog(tb testing.TB) (*Engine, icecatalog.Catalog) {
	tb.Helper()
	cat := testlake.Catalog(tb)
	testlake.CreateTenantTable(tb, cat, "encounters", encounterRows)
	testlake.CreateTenantTable(tb, cat, "labs", labRows)
	testlake.CreateLabTable(tb, cat, "lab_results") // no _tenant: admins only
	testlake.AppendLabRows(tb, cat, "lab_results", 0, 10)
	return openEngine(tb, cat), cat
}

// runAs prepares and runs q in a session of p and returns the rows as "v1|v2" strings,
// or the SQLSTATE of the error ("" with the error for errors without one).
func runAs(tb testing.TB, e *Engine, p auth.Principal, q string, args ...any) ([]string, string, error) {
	tb.Helper()
	ctx := context.Background()
	s, err := e.Session(ctx, p)
	if err != nil {
		return nil, sqlState(err), err
	}
	defer s.Close()
	st, err := s.Prepare(ctx, q)
	if err != nil {
		return nil, sqlState(err), err
	}
	defer st.Close()
	if args == nil {
		args = []any{}
	}
	var out []string
	err = st.Query(ctx, args, func(row []driver.Value) error {
		parts := make([]string, len(row))
		for i, v := range row {
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, "|"))
		return nil
	})
	if err != nil {
		return nil, sqlState(err), err
	}
	return out, "", nil
}

func sqlState(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func rows(vs ...string) []string { return vs }

// TestTenantIsolation is the isolation suite: every attempt to reach another tenant's
// rows is refused (42501, 42P01 for names that are not tables) or returns exactly the
// principal's own rows.
func TestTenantIsolation(t *testing.T) {
	e := openTenantLake(t)
	cache := e.cache.ObjectsDir()
	tests := []struct {
		name string
		p    auth.Principal
		q    string
		args []any
		code string   // expected SQLSTATE; "" when rows are expected
		want []string // exact rows, in order
	}{
		// Direct reads and WHERE tricks.
		{"direct", acme, `SELECT id FROM encounters ORDER BY id`, nil, "", rows("1", "2", "5")},
		{"other tenant sees its own", globex, `SELECT id FROM encounters ORDER BY id`, nil, "", rows("3", "4")},
		{"OR true", acme, `SELECT id FROM encounters WHERE _tenant = 'globex' OR 1 = 1 ORDER BY id`, nil, "", rows("1", "2", "5")},
		{"other tenant's name", acme, `SELECT id FROM encounters WHERE _tenant = 'globex'`, nil, "", nil},
		{"parameter", acme, `SELECT id FROM encounters WHERE _tenant = $1 OR $1 = 'globex' ORDER BY id`, []any{"globex"}, "", rows("1", "2", "5")},
		{"count all", acme, `SELECT count(*), count(DISTINCT _tenant) FROM encounters`, nil, "", rows("3|1")},
		{"group by tenant", acme, `SELECT _tenant, count(*) FROM encounters GROUP BY ALL`, nil, "", rows("acme|3")},
		{"qualified main", acme, `SELECT e.id FROM main.encounters e WHERE e._tenant <> 'acme'`, nil, "", nil},
		{"catalog qualified", acme, `SELECT id FROM memory.main.encounters ORDER BY 1`, nil, "", rows("1", "2", "5")},
		{"alias named like a table", acme, `SELECT encounters.id FROM labs AS encounters ORDER BY 1`, nil, "", rows("10", "11")},
		{"tenant value injection", injected, `SELECT count(*) FROM encounters`, nil, "", rows("0")},
		// Joins, subqueries, set operations, CTEs, lateral.
		{"join", acme, `SELECT e.id, l.id FROM encounters e JOIN labs l ON l.ref = e.id ORDER BY 1`, nil, "", rows("1|10", "2|11")},
		{"join on tenant mismatch", acme, `SELECT count(*) FROM encounters e JOIN labs l ON l._tenant <> e._tenant`, nil, "", rows("0")},
		{"cross join", acme, `SELECT count(*) FROM encounters, labs`, nil, "", rows("6")},
		{"scalar subquery", acme, `SELECT (SELECT max(id) FROM encounters)`, nil, "", rows("5")},
		{"IN subquery", acme, `SELECT id FROM labs WHERE ref IN (SELECT id FROM encounters WHERE _tenant = 'globex')`, nil, "", nil},
		{"EXISTS", acme, `SELECT count(*) FROM range(1) WHERE EXISTS (SELECT 1 FROM encounters WHERE patient_id = 'pg3')`, nil, "", rows("0")},
		{"UNION", acme, `SELECT id FROM encounters UNION ALL SELECT id FROM labs ORDER BY 1`, nil, "", rows("1", "2", "5", "10", "11")},
		{"UNION with literal tenant", acme, `SELECT _tenant FROM encounters UNION SELECT 'x' ORDER BY 1`, nil, "", rows("acme", "x")},
		{"CTE", acme, `WITH x AS (SELECT * FROM encounters) SELECT id FROM x ORDER BY 1`, nil, "", rows("1", "2", "5")},
		{"recursive CTE", acme, `WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT count(*) FROM r, encounters`, nil, "", rows("9")},
		{"CTE shadowing a table", acme, `WITH encounters AS (SELECT 1 AS id) SELECT * FROM encounters`, nil, "42501", nil},
		{"CTE shadowing, other case", acme, `WITH "ENCOUNTERS" AS (SELECT * FROM labs) SELECT * FROM encounters`, nil, "42501", nil},
		{"materialized CTE shadowing", acme, `WITH encounters AS MATERIALIZED (SELECT 1 AS id) SELECT * FROM encounters`, nil, "42501", nil},
		{"recursive CTE shadowing", acme, `WITH RECURSIVE labs(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM labs WHERE id < 2) SELECT * FROM labs`, nil, "42501", nil},
		{"nested CTE shadowing", acme, `SELECT * FROM (WITH labs AS (SELECT 1) SELECT * FROM labs)`, nil, "42501", nil},
		{"lateral", acme, `SELECT e.id, x.c FROM encounters e, LATERAL (SELECT count(*) AS c FROM labs l WHERE l._tenant <> e._tenant) x ORDER BY 1`, nil, "", rows("1|0", "2|0", "5|0")},
		{"pivot", acme, `SELECT sum(globex), sum(acme) FROM encounters PIVOT (count(*) FOR _tenant IN ('acme', 'globex'))`, nil, "", rows("0|3")},
		{"tablesample", acme, `SELECT count(*) FROM encounters TABLESAMPLE 100 PERCENT (bernoulli)`, nil, "", rows("3")},
		{"column aliases", acme, `SELECT t FROM encounters AS e(i, t) GROUP BY t`, nil, "", rows("acme")},
		{"TABLE", acme, `TABLE encounters`, nil, "", rows("1|acme|a1|pa1|0", "2|acme|a2|pa2|0", "5|acme|a1|pa5|0")},
		{"FROM first", acme, `FROM encounters SELECT id WHERE _tenant = 'globex' OR true`, nil, "", rows("1", "2", "5")},
		{"whole row", acme, `SELECT encounters._tenant, count(encounters) FROM encounters GROUP BY 1`, nil, "", rows("acme|3")},
		{"positional join", acme, `SELECT count(*) FROM encounters POSITIONAL JOIN labs`, nil, "", rows("3")},
		{"ASOF join", acme, `SELECT e.id, l.id FROM encounters e ASOF JOIN labs l ON e.id <= l.ref ORDER BY 1`, nil, "", rows("1|10", "2|11")},
		{"UNPIVOT", acme, `SELECT v FROM (UNPIVOT encounters ON _tenant, _facility INTO NAME k VALUE v) ORDER BY 1`, nil, "", rows("a1", "a1", "a2", "acme", "acme", "acme")},
		{"PIVOT statement", acme, `PIVOT encounters ON _tenant USING count(*)`, nil, "42501", nil},
		{"EXPLAIN", acme, `EXPLAIN ANALYZE SELECT * FROM encounters`, nil, "42501", nil},
		{"QUALIFY over tenants", acme, `SELECT id FROM encounters QUALIFY count(*) OVER () > 0 ORDER BY 1`, nil, "", rows("1", "2", "5")},
		{"summarize", acme, `SELECT count FROM (SUMMARIZE encounters) WHERE column_name = 'id'`, nil, "", rows("3")},
		// Facility grants.
		{"facility grant", acmeA1, `SELECT id FROM encounters ORDER BY 1`, nil, "", rows("1", "5")},
		{"facility grant, other facility", acmeA1, `SELECT id FROM encounters WHERE _facility = 'a2'`, nil, "", nil},
		{"grant of another tenant's facility", auth.Principal{User: "x", Tenant: "acme", Facilities: []string{"g1"}}, `SELECT count(*) FROM encounters`, nil, "", rows("0")},
		{"facility grant, join", acmeA1, `SELECT l.id FROM labs l JOIN encounters e ON e.id = l.ref`, nil, "", rows("10")},
		// Comments, quoting, case.
		{"comments and quotes", acme, "SELECT id FROM /* labs */ \"encounters\" -- WHERE false\nORDER BY 1", nil, "", rows("1", "2", "5")},
		{"upper case", acme, `SELECT ID FROM EnCoUnTeRs ORDER BY 1`, nil, "", rows("1", "2", "5")},
		{"quoted upper case", acme, `SELECT count(*) FROM "ENCOUNTERS"`, nil, "", rows("3")},
		// File and network functions.
		{"read_parquet", acme, `SELECT count(*) FROM read_parquet('` + cache + `/*/*.parquet')`, nil, "42501", nil},
		{"read_parquet qualified", acme, `SELECT count(*) FROM main.read_parquet('` + cache + `/x.parquet')`, nil, "42501", nil},
		{"parquet_metadata", acme, `SELECT * FROM parquet_metadata('` + cache + `/x.parquet')`, nil, "42501", nil},
		{"read_csv", acme, `SELECT * FROM read_csv_auto('/etc/passwd')`, nil, "42501", nil},
		{"read_text", acme, `SELECT * FROM read_text('/etc/hostname')`, nil, "42501", nil},
		{"file as table", acme, `SELECT * FROM '` + cache + `/x.parquet'`, nil, "42501", nil},
		{"glob", acme, `SELECT * FROM glob('` + cache + `/*')`, nil, "42501", nil},
		{"query()", acme, `SELECT * FROM query('SELECT * FROM encounters')`, nil, "42501", nil},
		{"query_table()", acme, `SELECT * FROM query_table('encounters')`, nil, "42501", nil},
		{"json_execute_serialized_sql", acme, `SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM encounters'))`, nil, "42501", nil},
		{"iceberg_scan", acme, `SELECT * FROM iceberg_scan('/tmp/x')`, nil, "42501", nil},
		// Engine metadata that reveals the cached file paths.
		{"duckdb_views()", acme, `SELECT sql FROM duckdb_views()`, nil, "42501", nil},
		{"duckdb_tables()", acme, `SELECT * FROM duckdb_tables()`, nil, "42501", nil},
		{"duckdb_settings() in subquery", acme, `SELECT (SELECT value FROM duckdb_settings() WHERE name = 'allowed_directories')`, nil, "42501", nil},
		{"duckdb_views as a table", acme, `SELECT sql FROM duckdb_views`, nil, "42501", nil},
		{"sqlite_master", acme, `SELECT sql FROM sqlite_master`, nil, "42501", nil},
		{"pg_settings", acme, `SELECT setting FROM pg_catalog.pg_settings`, nil, "42501", nil},
		{"pg_get_viewdef", acme, `SELECT pg_get_viewdef('encounters')`, nil, "42501", nil},
		{"information_schema.views", acme, `SELECT view_definition FROM information_schema.views`, nil, "42501", nil},
		{"pg_views", acme, `SELECT definition FROM pg_catalog.pg_views`, nil, "42501", nil},
		{"current_setting", acme, `SELECT current_setting('allowed_directories')`, nil, "42501", nil},
		{"information_schema.tables is readable", acme, `SELECT table_name FROM information_schema.tables WHERE table_name = 'encounters'`, nil, "", rows("encounters")},
		// Statements that are not a SELECT.
		{"ATTACH", acme, `ATTACH '/tmp/evil.db' AS evil`, nil, "42501", nil},
		{"COPY", acme, `COPY encounters TO '` + cache + `/out.parquet'`, nil, "42501", nil},
		{"EXPORT", acme, `EXPORT DATABASE '/tmp/x'`, nil, "42501", nil},
		{"INSTALL", acme, `INSTALL httpfs`, nil, "42501", nil},
		{"LOAD", acme, `LOAD httpfs`, nil, "42501", nil},
		{"SET", acme, `SET enable_external_access = true`, nil, "42501", nil},
		{"PRAGMA", acme, `PRAGMA enable_profiling`, nil, "42501", nil},
		{"CREATE VIEW", acme, `CREATE OR REPLACE VIEW encounters AS SELECT * FROM labs`, nil, "42501", nil},
		{"second statement", acme, `SELECT 1; SELECT * FROM encounters`, nil, "42501", nil},
		// Time travel, other databases and schemas, unknown names.
		{"time travel", acme, `SELECT * FROM encounters AT (VERSION => 1)`, nil, "42501", nil},
		{"system catalog", acme, `SELECT * FROM system.main.encounters`, nil, "42501", nil},
		{"temp catalog", acme, `SELECT * FROM temp.main.encounters`, nil, "42501", nil},
		{"other schema", acme, `SELECT * FROM other.encounters`, nil, "42501", nil},
		{"unknown table", acme, `SELECT * FROM nope`, nil, "42P01", nil},
		{"table without _tenant", acme, `SELECT count(*) FROM lab_results`, nil, "42501", nil},
		// Admins see everything.
		{"admin", admin, `SELECT id FROM encounters ORDER BY id`, nil, "", rows("1", "2", "3", "4", "5")},
		{"admin, table without _tenant", admin, `SELECT count(*) FROM lab_results`, nil, "", rows("10")},
	}
	attempts := 0
	for _, tt := range tests {
		if !tt.p.Admin && tt.p.Tenant != "globex" {
			attempts++
		}
		t.Run(tt.name, func(t *testing.T) {
			got, code, err := runAs(t, e, tt.p, tt.q, tt.args...)
			if tt.code != "" {
				if code != tt.code {
					t.Fatalf("%s\n  = rows %q, err %v (SQLSTATE %q); want SQLSTATE %s", tt.q, got, err, code, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", tt.q, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("%s\n  = %q\n want %q", tt.q, got, tt.want)
			}
		})
	}
	t.Logf("%d attempts by tenant users", attempts)
}

// TestScopeRefusalNamesWhat checks a refusal says what was refused.
func TestScopeRefusalNamesWhat(t *testing.T) {
	e := openTenantLake(t)
	for q, want := range map[string]string{
		`SELECT * FROM read_parquet('x')`:            "read_parquet",
		`WITH labs AS (SELECT 1) SELECT * FROM labs`: "labs",
		`SELECT * FROM duckdb_views()`:               "duckdb_views",
		`SELECT * FROM encounters AT (VERSION => 1)`: "time travel",
		`COPY encounters TO 'x'`:                     "SELECT",
		`SELECT * FROM system.main.encounters`:       "system.main.encounters",
		`SELECT * FROM nope`:                         "nope",
		`SELECT * FROM encounters, lab_results`:      "lab_results",
	} {
		_, _, err := runAs(t, e, acme, q)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to name %q", q, err, want)
		}
	}
}

// TestScopeTables checks the tables a statement touches are reported, for admins too.
func TestScopeTables(t *testing.T) {
	e := openTenantLake(t)
	ctx := context.Background()
	for _, p := range []auth.Principal{acme, admin} {
		s, err := e.Session(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.Prepare(ctx, `WITH x AS (SELECT * FROM labs) SELECT * FROM encounters, x WHERE encounters.id IN (SELECT ref FROM LABS)`)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"encounters", "labs"}; !slices.Equal(st.Tables, want) {
			t.Errorf("%s: Tables = %v, want %v", p.User, st.Tables, want)
		}
		st.Close()
		s.Close()
	}
}

// TestSessionRefusesTenantlessUser checks a non-admin without a tenant cannot open a
// session at all.
func TestSessionRefusesTenantlessUser(t *testing.T) {
	e := openTenantLake(t)
	if _, err := e.Session(context.Background(), auth.Principal{User: "x"}); sqlState(err) != CodeInsufficientPrivilege {
		t.Fatalf("Session without tenant: %v, want 42501", err)
	}
}

// TestScopeAfterRefresh checks a tenant's prepared statement is scoped again when the
// views change under it: new rows of both tenants arrive, the statement sees only its
// tenant's, and a table created later with the name of a CTE cannot be read through it.
func TestScopeAfterRefresh(t *testing.T) {
	e, cat := openTenantLakeCatalog(t)
	ctx := context.Background()
	s, err := e.Session(ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ids := func(st *Statement) []string {
		t.Helper()
		var out []string
		if err := st.Query(ctx, []any{}, func(row []driver.Value) error { out = append(out, fmt.Sprint(row[0])); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	st, err := s.Prepare(ctx, `SELECT id FROM encounters ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cte, err := s.Prepare(ctx, `WITH later AS (SELECT 7 AS id) SELECT id FROM later`)
	if err != nil {
		t.Fatal(err)
	}
	defer cte.Close()
	testlake.AppendTenantRows(t, cat, "encounters", []testlake.TenantRow{
		{ID: 6, Tenant: "globex", Facility: "g1"}, {ID: 7, Tenant: "acme", Facility: "a2"},
	})
	testlake.CreateTenantTable(t, cat, "later", []testlake.TenantRow{{ID: 100, Tenant: "globex", Facility: "g1"}})
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(st), []string{"1", "2", "5", "7"}; !slices.Equal(got, want) {
		t.Errorf("after refresh: %v, want %v", got, want)
	}
	// The CTE now shadows a lake table: scoped again, the statement is refused.
	err = cte.Query(ctx, []any{}, func([]driver.Value) error { return nil })
	if sqlState(err) != CodeInsufficientPrivilege {
		t.Errorf("CTE named like a table created after prepare: %v, want 42501", err)
	}
}
