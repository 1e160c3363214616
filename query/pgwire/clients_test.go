package pgwire

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/query/internal/testlake"
)

// Real clients, each connecting with a SCRAM-SHA-256 password, listing the
// tables, describing lab_results and running a parameterized query whose
// rows are checked exactly. The expected results are golden files under
// testdata/<client>/; the table's oid, which changes per run, reads <oid>.

const (
	clientUser     = "analyst"
	clientPassword = "s3cret pw"
)

// clientServer starts a server with one configured (SCRAM) login, TLS
// offered with a self-signed certificate, and returns its host, port and
// lab_results' oid.
func clientServer(t *testing.T) (host, port, oid string, logs *logSink) {
	t.Helper()
	cert, key := writeSelfSigned(t)
	addr, _, logs := startServerLogged(t, Config{Users: []User{{Name: clientUser, Password: clientPassword}}, TLSCertFile: cert, TLSKeyFile: key})
	host, port, _ = strings.Cut(addr, ":")
	c := connect(t, dsn(addr, clientUser, "s3cret%20pw"), pgx.QueryExecModeCacheStatement)
	var id int64
	if err := c.QueryRow(context.Background(), `SELECT oid FROM pg_catalog.pg_class WHERE relname = 'lab_results'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return host, port, fmt.Sprint(id), logs
}

// runClient runs a client program with a deadline and returns its output.
func runClient(t *testing.T, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestClientODBC drives psqlODBC, the driver PowerBI and Tableau use, through
// unixODBC's isql: SQLTables (help), SQLColumns (help table) and a
// parameterized query (PREPARE/EXECUTE; isql binds no parameters itself).
func TestClientODBC(t *testing.T) {
	requireClient(t, "isql", "unixodbc")
	drivers, _ := filepath.Glob("/usr/lib/*/odbc/psqlodbcw.so")
	if len(drivers) == 0 {
		missingClient(t, "psqlODBC is not installed: it is one of the real clients under test (apt-get install odbc-postgresql; .ci/run does)")
	}
	host, port, oid, logs := clientServer(t)
	dir := t.TempDir()
	ini := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ini("odbcinst.ini", "[PostgreSQL Unicode]\nDriver="+drivers[0]+"\n")
	// Over TLS, as PowerBI and Tableau would connect, reading results
	// through cursors (UseDeclareFetch).
	ini("odbc.ini", fmt.Sprintf("[medlake]\nDriver=PostgreSQL Unicode\nServername=%s\nPort=%s\nDatabase=medlake\nSSLmode=require\nUseDeclareFetch=1\nFetch=2\n", host, port))
	script := strings.Join([]string{
		`help`,
		`help lab_results`,
		`PREPARE labs AS SELECT lab_id, facility, result_value, collected_at, abnormal FROM lab_results WHERE lab_id <= $1 AND facility = $2 ORDER BY lab_id`,
		`EXECUTE labs(7, 'fac0001')`,
		`SELECT count(*) AS n, min(collected_at) AS first FROM lab_results WHERE facility = 'fac0002'`,
	}, "\n") + "\n"
	out := runClient(t, script, []string{"ODBCSYSINI=" + dir, "ODBCINI=" + filepath.Join(dir, "odbc.ini")},
		"isql", "-b", "-c", "-d|", "medlake", clientUser, clientPassword)
	out = strings.ReplaceAll(out, "|"+oid+"|", "|<oid>|")
	if strings.Contains(out, "ERROR") {
		t.Fatalf("isql reported an error:\n%s\nserver log:\n%s", out, logs)
	}
	golden(t, "odbc/isql.out", out)
	requireTLSSessions(t, logs)
	// UseDeclareFetch: psqlODBC read the last query through a cursor, two
	// rows per FETCH, as PowerBI's connections are often set up.
	if l := logs.String(); !strings.Contains(l, `cursor with hold for`) || !strings.Contains(l, `fetch 2 in`) {
		t.Errorf("psqlODBC did not read through a cursor:\n%s", l)
	}
	captureProbes(t, "psqlodbc", logs, oid)
}

// TestClientJDBC compiles and runs testdata/jdbc/MedlakeClient.java against
// Debian's pgJDBC (the driver Tableau, DBeaver and MicroStrategy use):
// DatabaseMetaData.getTables and getColumns, and a PreparedStatement read
// with a fetch size, which pages through a suspended portal.
func TestClientJDBC(t *testing.T) {
	requireClient(t, "javac", "openjdk-17-jdk-headless")
	java := requireClient(t, "java", "openjdk-17-jdk-headless")
	const jar = "/usr/share/java/postgresql.jar"
	if _, err := os.Stat(jar); err != nil {
		missingClient(t, "pgJDBC is not installed ("+jar+"): it is one of the real clients under test (apt-get install libpostgresql-jdbc-java; .ci/run does)")
	}
	host, port, oid, logs := clientServer(t)
	classes := t.TempDir()
	// MedlakeClient connects with sslmode=require: TLS without checking the
	// self-signed certificate.
	runClient(t, "", nil, "javac", "-d", classes, "-cp", jar, filepath.Join("testdata", "jdbc", "MedlakeClient.java"))
	out := runClient(t, "", nil, java, "-cp", classes+string(os.PathListSeparator)+jar, "MedlakeClient", host, port, clientUser, clientPassword)
	if strings.Contains(out, "Exception") {
		t.Fatalf("java client failed:\n%s\nserver log:\n%s", out, logs)
	}
	golden(t, "jdbc/client.out", out)
	requireTLSSessions(t, logs)
	// The second run of the query read int8, float8 and timestamptz in binary.
	if !strings.Contains(logs.String(), `"result_formats":"[1 0 1 0 1]"`) {
		t.Errorf("pgJDBC never asked for binary results:\n%s", logs)
	}
	captureProbes(t, "pgjdbc", logs, oid)
}

// nodePgVersion is the node-postgres release the tests run (.ci/run
// installs the same one).
const nodePgVersion = "8.23.1"

// nodeModules returns a node_modules holding pg@nodePgVersion: the one in
// $MEDLAKE_NODE_MODULES, or one installed once with npm into the user's
// cache (~/.cache/medlake/node-pg-<version>), as .ci/run does.
func nodeModules(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("MEDLAKE_NODE_MODULES"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(cache, "medlake", "node-pg-"+nodePgVersion)
	mods := filepath.Join(prefix, "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "pg", "package.json")); err == nil {
		return mods
	}
	npm := requireClient(t, "npm", "nodejs")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	runClient(t, "", nil, npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--no-save", "pg@"+nodePgVersion)
	return mods
}

// TestClientNode runs testdata/node/client.js with node-postgres: tables and
// columns through information_schema, and a parameterized query.
func TestClientNode(t *testing.T) {
	node := requireClient(t, "node", "nodejs")
	mods := nodeModules(t)
	host, port, oid, logs := clientServer(t)
	out := runClient(t, "", []string{"NODE_PATH=" + mods}, node, filepath.Join("testdata", "node", "client.js"), host, port, clientUser, clientPassword)
	if strings.Contains(out, "failed") {
		t.Fatalf("node client failed:\n%s\nserver log:\n%s", out, logs)
	}
	golden(t, "node/client.out", out)
	requireTLSSessions(t, logs)
	captureProbes(t, "node-postgres", logs, oid)
}

// TestClientPgx lists, describes and queries with pgx in each of its query
// modes (binary results through the prepared-statement cache, text through
// describe-exec and the simple protocol).
func TestClientPgx(t *testing.T) {
	host, port, _, _ := clientServer(t)
	ctx := context.Background()
	type lab struct {
		id       int64
		facility string
		value    *float64
		abnormal bool
		at       time.Time
	}
	var want []lab
	for i := range labRows {
		id, fac, _, v, null, abn, at := testlake.LabRow(i)
		if id <= 13 && fac == "fac0001" {
			l := lab{id: id, facility: fac, abnormal: abn, at: at}
			if !null {
				l.value = &v
			}
			want = append(want, l)
		}
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, fmt.Sprintf("postgres://%s:%s@%s:%s/medlake?sslmode=require", clientUser, "s3cret%20pw", host, port), m.mode)
			if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
				t.Error("pgx did not connect over TLS")
			}
			var tables []string
			rows, err := c.Query(ctx, `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1`)
			if err == nil {
				tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil || strings.Join(tables, ",") != "lab_results" {
				t.Fatalf("tables = %v, %v", tables, err)
			}
			rows, err = c.Query(ctx, `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
				FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 ORDER BY a.attnum`, "public.lab_results")
			var cols []string
			if err == nil {
				cols, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
					var name, typ string
					var notNull bool
					err := r.Scan(&name, &typ, &notNull)
					return fmt.Sprintf("%s %s %v", name, typ, notNull), err
				})
			}
			wantCols := "lab_id bigint false,facility text false,patient_id text false,result_value double precision false," +
				"abnormal boolean false,collected_at timestamp with time zone false"
			if err != nil || strings.Join(cols, ",") != wantCols {
				t.Fatalf("columns = %v, %v\nwant %s", cols, err, wantCols)
			}
			rows, err = c.Query(ctx, `SELECT lab_id, facility, result_value, abnormal, collected_at FROM lab_results
				WHERE lab_id <= $1 AND facility = $2 ORDER BY lab_id`, 13, "fac0001")
			var got []lab
			if err == nil {
				got, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (lab, error) {
					var l lab
					err := r.Scan(&l.id, &l.facility, &l.value, &l.abnormal, &l.at)
					return l, err
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d rows, want %d", len(got), len(want))
			}
			for i := range got {
				g, w := got[i], want[i]
				if g.id != w.id || g.facility != w.facility || g.abnormal != w.abnormal || !g.at.Equal(w.at) ||
					(g.value == nil) != (w.value == nil) || (g.value != nil && *g.value != *w.value) {
					t.Errorf("row %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// requireTLSSessions checks that every session the client opened (after the
// test's own pgx connection) ran over TLS, from the server's debug log.
func requireTLSSessions(t *testing.T, logs *logSink) {
	t.Helper()
	n := 0
	for line := range strings.Lines(logs.String()) {
		if !strings.Contains(line, `"msg":"pgwire session started"`) || !strings.Contains(line, `"user":"`+clientUser+`"`) {
			continue
		}
		n++
		if n > 1 && !strings.Contains(line, `"tls":true`) {
			t.Errorf("a client session did not use TLS: %s", line)
		}
	}
	if n < 2 {
		t.Errorf("the client opened no session:\n%s", logs)
	}
}
