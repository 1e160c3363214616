package pgwire

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/query/sqllex"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/ with what the server returns")

// golden compares got with testdata/name, or writes it with -update.
func golden(tb testing.TB, name, got string) {
	tb.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		tb.Errorf("%s differs from the golden file\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// requireClient finds a real client under test. When it is missing the test
// fails under CI (CI=true), naming the Debian package that provides it, and
// is skipped elsewhere.
func requireClient(tb testing.TB, bin, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		missingClient(tb, fmt.Sprintf("%s is not installed: it is one of the real clients under test (apt-get install %s; .ci/run does)", bin, pkg))
	}
	return p
}

func missingClient(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// TestPsqlCatalog runs psql's describe commands, whose catalog queries the
// server must answer, and compares their output with golden files.
func TestPsqlCatalog(t *testing.T) {
	requireClient(t, "psql", "postgresql-client-15")
	host, port, oid, logs := clientServer(t)
	for _, tc := range []struct{ name, cmd string }{
		{"dt", `\dt`},
		{"d", `\d`},
		{"d_lab_results", `\d lab_results`},
		{"d_plus_lab_results", `\d+ lab_results`},
		{"dt_pattern", `\dt lab*`},
		{"l", `\l`},
		{"dn", `\dn`},
		{"du", `\du`},
		{"df", `\df`},
		{"dv", `\dv`},
		{"di", `\di`},
		{"conninfo_version", `SELECT current_user, current_database(), current_schema(), current_setting('server_version_num')`},
		{"prepare_execute", `PREPARE labs AS SELECT lab_id, facility, result_value, collected_at FROM lab_results ` +
			`WHERE lab_id <= $1 AND facility = $2 ORDER BY lab_id; EXECUTE labs(7, 'fac0001')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", clientUser, "-d", "medlake", "-c", tc.cmd)
			cmd.Env = append(os.Environ(), "PGPASSWORD="+clientPassword, "PGCONNECT_TIMEOUT=10", "PAGER=", "COLUMNS=200")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql -c %q: %v\n%s\nserver log:\n%s", tc.cmd, err, out, logs)
			}
			golden(t, filepath.Join("psql", tc.name+".out"), string(out))
		})
	}
	captureProbes(t, "psql", logs, oid)
}

func testSetting(name string) (string, bool) {
	if strings.EqualFold(name, "timezone") {
		return "UTC", true
	}
	return "", false
}

func TestRewriteSQL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c`,
			`SELECT medlake_pg.pg_get_userbyid(c.relowner) FROM medlake_pg.pg_class c`},
		{`select * from pg_class, pg_type t`, `select * from medlake_pg.pg_class, medlake_pg.pg_type t`},
		{`SELECT pg_catalog.array_to_string(x, ',')`, `SELECT array_to_string(x, ',')`},
		{`WHERE c.relname OPERATOR(pg_catalog.~) '^(lab)$' COLLATE pg_catalog.default`,
			`WHERE c.relname ~ '(?s).*(?:^(lab)$).*' `},
		{`WHERE n.nspname !~ '^pg_'`, `WHERE n.nspname !~ '(?s).*(?:^pg_).*'`},
		{`SELECT 'lab_results'::regclass`, `SELECT medlake_pg.to_regclass('lab_results')`},
		{`WHERE a.attrelid = $1::regclass`, `WHERE a.attrelid = medlake_pg.to_regclass(CAST($1 AS VARCHAR))`},
		{`SELECT c.oid::pg_catalog.regclass::pg_catalog.Text`, `SELECT c.oid::BIGINT::VARCHAR`},
		{`SELECT x::oid, y::name, z::"char"`, `SELECT x::BIGINT, y::VARCHAR, z::VARCHAR`},
		{`SELECT * FROM public.lab_results`, `SELECT * FROM main.lab_results`},
		{`SELECT * FROM "public"."lab_results"`, `SELECT * FROM main."lab_results"`},
		{`SELECT current_user, session_user`, `SELECT medlake_pg."current_user"('ana'), medlake_pg."current_user"('ana')`},
		{`SELECT version(), current_setting('x')`, `SELECT medlake_pg.version(), medlake_pg.current_setting('x', false, CAST(NULL AS VARCHAR))`},
		{`SELECT pg_catalog.current_setting('TimeZone', true)`, `SELECT medlake_pg.current_setting('TimeZone', true, 'UTC')`},
		{`SELECT current_setting(name) FROM t`, `SELECT medlake_pg.current_setting(name) FROM t`},
		{`SELECT s FROM generate_series(1, 3) s`, `SELECT s FROM generate_series(1, 3) s(s)`},
		{`SELECT s FROM generate_series(1, 3) AS s(i)`, `SELECT s FROM generate_series(1, 3) AS s(i)`},
		// Literals, quoted identifiers, columns and aliases are left alone.
		{`SELECT 'pg_class', "pg_class", t.pg_class, version FROM t`, `SELECT 'pg_class', "pg_class", t.pg_class, version FROM t`},
		{`SELECT a AS version FROM t -- pg_class`, `SELECT a AS version FROM t -- pg_class`},
		{`SELECT $1::int4`, `SELECT $1::INTEGER`},
		{`SELECT pg_backend_pid()`, `SELECT medlake_pg.pg_backend_pid(42)`},
		{`SELECT word FROM pg_catalog.pg_get_keywords()`, `SELECT word FROM medlake_pg.pg_get_keywords()`},
		{`SELECT * FROM information_schema.tables t JOIN information_schema.views v`,
			`SELECT * FROM medlake_pg.information_schema_tables t JOIN information_schema.views v`},
	} {
		if got := rewriteSQL(tc.in, session{user: "ana", pid: 42}, testSetting); got != tc.want {
			t.Errorf("rewriteSQL(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestPgColumnName(t *testing.T) {
	for in, want := range map[string]string{
		"count_star()": "count", `medlake_pg."current_user"('x')`: "current_user", "medlake_pg.version()": "version",
		"sum(x)": "sum", "lab_id": "lab_id", "(a + b)": "(a + b)", "f(a) + g(b)": "f(a) + g(b)",
	} {
		if got := pgColumnName(in); got != want {
			t.Errorf("pgColumnName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzRewriteSQL(f *testing.F) {
	for _, s := range []string{`SELECT 1`, `SELECT 'a''b' ~ E'\'x'`, `$tag$ x $tag$::regclass`, `/* /* */ */ "a""b"`,
		`OPERATOR(pg_catalog.~`, `generate_series(`, `x COLLATE`, `::`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		var b strings.Builder
		for _, tok := range sqllex.Lex(sql) {
			if tok.Text == "" {
				t.Fatalf("empty token in %q", sql)
			}
			b.WriteString(tok.Text)
		}
		if b.String() != sql {
			t.Fatalf("tokens of %q concatenate to %q", sql, b.String())
		}
		_ = rewriteSQL(sql, session{user: "u"}, testSetting)
		_, _ = splitLiterals(sql)
		_ = settingValue(sql)
	})
}

// TestCatalogTypes checks that the catalog's type names and OIDs agree with
// what the server sends for each DuckDB type.
func TestCatalogTypes(t *testing.T) {
	addr, _ := startServer(t, Config{})
	c := connect(t, dsn(addr, "analyst", ""), pgx.QueryExecModeSimpleProtocol)
	for _, tc := range []struct {
		duck    string // as cast to
		catalog string // as duckdb_columns() names it
		oid     uint32
		format  string
	}{
		{"BOOLEAN", "BOOLEAN", OIDBool, "boolean"}, {"SMALLINT", "SMALLINT", OIDInt2, "smallint"},
		{"INTEGER", "INTEGER", OIDInt4, "integer"}, {"BIGINT", "BIGINT", OIDInt8, "bigint"},
		{"REAL", "FLOAT", OIDFloat4, "real"}, {"DOUBLE", "DOUBLE", OIDFloat8, "double precision"},
		{"DECIMAL(18,3)", "DECIMAL(18,3)", OIDNumeric, "numeric(18,3)"}, {"VARCHAR", "VARCHAR", OIDText, "text"},
		{"DATE", "DATE", OIDDate, "date"}, {"TIMESTAMP", "TIMESTAMP", OIDTimestamp, "timestamp without time zone"},
		{"TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", OIDTimestamptz, "timestamp with time zone"},
		{"BLOB", "BLOB", OIDBytea, "bytea"}, {"UUID", "UUID", OIDUUID, "uuid"}, {"INTERVAL", "INTERVAL", OIDInterval, "interval"},
	} {
		// The type the server reports for a value of the DuckDB type …
		rows, err := c.Query(context.Background(), "SELECT CAST(NULL AS "+tc.duck+")")
		if err != nil {
			t.Fatal(err)
		}
		oid := rows.FieldDescriptions()[0].DataTypeOID
		mod := rows.FieldDescriptions()[0].TypeModifier
		rows.Close()
		// … is the one the catalog maps it to, and format_type names it.
		var catOID uint32
		var format, typname string
		err = c.QueryRow(context.Background(), fmt.Sprintf(
			"SELECT medlake_pg.type_oid(%s), format_type(%d, %d), (SELECT typname FROM pg_type WHERE oid = %d)",
			quoteLiteral(tc.catalog),
			oid, mod, oid)).Scan(&catOID, &format, &typname)
		if err != nil {
			t.Fatalf("%s: %v", tc.duck, err)
		}
		if oid != tc.oid || catOID != tc.oid || format != tc.format || typname == "" {
			t.Errorf("%s: wire oid %d, catalog oid %d, format_type %q, typname %q; want oid %d, %q",
				tc.duck, oid, catOID, format, typname, tc.oid, tc.format)
		}
	}
}
