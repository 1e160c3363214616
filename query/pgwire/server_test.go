package pgwire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/internal/testlake"
)

const labRows = 3000

// startServer builds a lake with lab_results (labRows rows in 3 data files),
// an engine over it and a server on a random loopback port (or cfg.Listen).
func startServer(tb testing.TB, cfg Config, opts ...Option) (string, *Server) {
	tb.Helper()
	addr, srv, _ := startServerLogged(tb, cfg, opts...)
	return addr, srv
}

// logSink collects a server's log lines for tests that check them.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startServerLogged is startServer also returning what the server logs.
func startServerLogged(tb testing.TB, cfg Config, opts ...Option) (string, *Server, *logSink) {
	tb.Helper()
	return startServerEngine(tb, cfg, engine.Config{}, opts...)
}

// startServerEngine is startServerLogged with the engine configured by ecfg
// (its cache directory and setup are the test's).
func startServerEngine(tb testing.TB, cfg Config, ecfg engine.Config, opts ...Option) (string, *Server, *logSink) {
	tb.Helper()
	logs := &logSink{}
	cat := testlake.Catalog(tb)
	testlake.CreateLabTable(tb, cat, "lab_results")
	for i := range 3 {
		testlake.AppendLabRows(tb, cat, "lab_results", i*labRows/3, (i+1)*labRows/3)
	}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	ecfg.CacheDir, ecfg.Setup = filepath.Join(tb.TempDir(), "cache"), CatalogSetup()
	eng, err := engine.New(ctx, ecfg, cat, testlake.Namespace, logger)
	if err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	srv, err := New(cfg, eng, logger, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Run(runCtx); err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
		eng.Close()
	})
	addr, err := srv.Addr(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return addr.String(), srv, logs
}

func dsn(addr, user, password string) string {
	host, port, _ := strings.Cut(addr, ":")
	return fmt.Sprintf("postgres://%s:%s@%s:%s/medlake?sslmode=disable", user, password, host, port)
}

func connect(tb testing.TB, connString string, mode pgx.QueryExecMode) *pgx.Conn {
	tb.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("connecting: %v", err)
	}
	tb.Cleanup(func() { c.Close(context.Background()) })
	return c
}

var modes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"cache_statement", pgx.QueryExecModeCacheStatement},
	{"describe_exec", pgx.QueryExecModeDescribeExec},
	{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
}

func TestPgxQueries(t *testing.T) {
	addr, _ := startServer(t, Config{})
	ctx := context.Background()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, dsn(addr, "analyst", ""), m.mode)
			var n int64
			if err := c.QueryRow(ctx, `SELECT count(*) FROM lab_results`).Scan(&n); err != nil || n != labRows {
				t.Fatalf("count = %d, %v; want %d", n, err, labRows)
			}
			rows, err := c.Query(ctx, `SELECT facility, count(*), sum(result_value) FROM lab_results GROUP BY facility ORDER BY facility`)
			if err != nil {
				t.Fatal(err)
			}
			type agg struct {
				fac string
				n   int64
				sum float64
			}
			got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (agg, error) {
				var a agg
				return a, r.Scan(&a.fac, &a.n, &a.sum)
			})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]agg{}
			for i := range labRows {
				_, fac, _, v, null, _, _ := testlake.LabRow(i)
				a := want[fac]
				a.fac, a.n = fac, a.n+1
				if !null {
					a.sum += v
				}
				want[fac] = a
			}
			if len(got) != len(testlake.Facilities) {
				t.Fatalf("group by returned %v", got)
			}
			for _, g := range got {
				if w := want[g.fac]; g != w {
					t.Errorf("group %s = %+v, want %+v", g.fac, g, w)
				}
			}
			// $1 parameter in WHERE; also reuse of the cached statement.
			for _, min := range []int64{2500, 100} {
				if err := c.QueryRow(ctx, `SELECT count(*) FROM lab_results WHERE lab_id > $1`, min).Scan(&n); err != nil || n != labRows-min {
					t.Errorf("where lab_id > %d: %d, %v", min, n, err)
				}
			}
			var pat string
			var at time.Time
			var abn bool
			if err := c.QueryRow(ctx, `SELECT patient_id, collected_at, abnormal FROM lab_results WHERE lab_id = $1 AND facility = $2`, 8, "fac0002").
				Scan(&pat, &at, &abn); err != nil {
				t.Fatal(err)
			}
			_, _, wantPat, _, _, wantAbn, wantAt := testlake.LabRow(7)
			if pat != wantPat || !at.Equal(wantAt) || abn != wantAbn {
				t.Errorf("row 8 = %s %v %v, want %s %v %v", pat, at, abn, wantPat, wantAt, wantAbn)
			}
			// A failing statement leaves the connection usable.
			_, err = c.Exec(ctx, `SELECT * FROM no_such_table`)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
				t.Errorf("missing table: err = %v, want SQLSTATE 42P01", err)
			}
			_, err = c.Exec(ctx, `DROP VIEW lab_results`)
			if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
				t.Errorf("DROP VIEW: err = %v, want SQLSTATE 25006", err)
			}
			if err := c.QueryRow(ctx, `SELECT count(*) FROM lab_results`).Scan(&n); err != nil || n != labRows {
				t.Fatalf("count after errors = %d, %v", n, err)
			}
			if err := c.Ping(ctx); err != nil {
				t.Errorf("ping: %v", err)
			}
		})
	}
}

func TestTypeRoundTrip(t *testing.T) {
	addr, _ := startServer(t, Config{})
	ctx := context.Background()
	ts := time.Date(2026, 3, 4, 5, 6, 7, 891011000, time.UTC)
	day := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	uuidBytes := [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}
	tests := []struct {
		name    string
		sqlType string
		literal string
		oid     uint32
		param   any
		scan    func() any     // new destination
		check   func(any) bool // checks *dest
		text    string         // psql-style text rendering
	}{
		{"bool", "BOOLEAN", "true", OIDBool, true, func() any { return new(bool) }, func(d any) bool { return *d.(*bool) }, "t"},
		{"int2", "SMALLINT", "-12", OIDInt2, int16(-12), func() any { return new(int16) }, func(d any) bool { return *d.(*int16) == -12 }, "-12"},
		{"int4", "INTEGER", "123456", OIDInt4, int32(123456), func() any { return new(int32) }, func(d any) bool { return *d.(*int32) == 123456 }, "123456"},
		{"int8", "BIGINT", "-9007199254740993", OIDInt8, int64(-9007199254740993), func() any { return new(int64) }, func(d any) bool { return *d.(*int64) == -9007199254740993 }, "-9007199254740993"},
		{"float4", "REAL", "1.5", OIDFloat4, float32(1.5), func() any { return new(float32) }, func(d any) bool { return *d.(*float32) == 1.5 }, "1.5"},
		{"float8", "DOUBLE", "0.1", OIDFloat8, 0.1, func() any { return new(float64) }, func(d any) bool { return *d.(*float64) == 0.1 }, "0.1"},
		{"numeric", "DECIMAL(18,3)", "-12345.670", OIDNumeric, pgtype.Numeric{Int: big.NewInt(-1234567), Exp: -2, Valid: true},
			func() any { return new(pgtype.Numeric) }, func(d any) bool {
				n := d.(*pgtype.Numeric)
				v, _ := n.Value()
				return v == "-12345.670" || v == "-12345.67"
			}, "-12345.670"},
		{"text", "VARCHAR", "'héllo ''world'''", OIDText, "héllo 'world'", func() any { return new(string) }, func(d any) bool { return *d.(*string) == "héllo 'world'" }, "héllo 'world'"},
		{"date", "DATE", "'2026-03-04'", OIDDate, day, func() any { return new(time.Time) }, func(d any) bool { return d.(*time.Time).Equal(day) }, "2026-03-04"},
		{"timestamp", "TIMESTAMP", "'2026-03-04 05:06:07.891011'", OIDTimestamp, ts, func() any { return new(time.Time) }, func(d any) bool { return d.(*time.Time).Equal(ts) }, "2026-03-04 05:06:07.891011"},
		{"timestamptz", "TIMESTAMPTZ", "'2026-03-04 05:06:07.891011+00'", OIDTimestamptz, ts, func() any { return new(time.Time) }, func(d any) bool { return d.(*time.Time).Equal(ts) }, "2026-03-04 05:06:07.891011+00"},
		{"bytea", "BLOB", `'\x00\xFF'::BLOB`, OIDBytea, []byte{0, 0xff}, func() any { return new([]byte) }, func(d any) bool { b := *d.(*[]byte); return len(b) == 2 && b[0] == 0 && b[1] == 0xff }, `\x00ff`},
		{"uuid", "UUID", "'12345678-9abc-def0-1234-56789abcdef0'", OIDUUID, pgtype.UUID{Bytes: uuidBytes, Valid: true},
			func() any { return new(pgtype.UUID) }, func(d any) bool { return d.(*pgtype.UUID).Bytes == uuidBytes }, "12345678-9abc-def0-1234-56789abcdef0"},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, dsn(addr, "analyst", ""), m.mode)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					// Literal out, with a NULL of the same type beside it.
					rows, err := c.Query(ctx, fmt.Sprintf(`SELECT CAST(%s AS %s) AS v, CAST(NULL AS %s) AS n`, tt.literal, tt.sqlType, tt.sqlType))
					if err != nil {
						t.Fatal(err)
					}
					if fd := rows.FieldDescriptions(); len(fd) != 2 || fd[0].DataTypeOID != tt.oid || fd[1].DataTypeOID != tt.oid {
						t.Errorf("field descriptions %+v, want oid %d", fd, tt.oid)
					}
					dest := tt.scan()
					var null any
					if !rows.Next() {
						t.Fatalf("no row: %v", rows.Err())
					}
					if err := rows.Scan(dest, &null); err != nil {
						t.Fatalf("scan: %v", err)
					}
					rows.Close()
					if !tt.check(dest) {
						t.Errorf("literal came back as %v", dest)
					}
					if null != nil {
						t.Errorf("NULL came back as %#v", null)
					}
					// Parameter in, value out.
					if m.mode == pgx.QueryExecModeSimpleProtocol && (tt.name == "bytea") {
						return // pgx's simple protocol quoting of []byte needs a bytea-typed server literal
					}
					dest = tt.scan()
					if err := c.QueryRow(ctx, fmt.Sprintf(`SELECT CAST($1 AS %s)`, tt.sqlType), tt.param).Scan(dest); err != nil {
						t.Fatalf("param round trip: %v", err)
					}
					if !tt.check(dest) {
						t.Errorf("param came back as %v", dest)
					}
					var isNull bool
					if err := c.QueryRow(ctx, fmt.Sprintf(`SELECT CAST($1 AS %s) IS NULL`, tt.sqlType), nil).Scan(&isNull); err != nil || !isNull {
						t.Errorf("NULL param: %v, %v", isNull, err)
					}
				})
			}
		})
	}
	// Text renderings as psql shows them.
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql is not installed: it is one of the real clients under test (apt-get install postgresql-client-15; .ci/run does)")
	}
	for _, tt := range tests {
		out := psql(t, addr, "", fmt.Sprintf(`SELECT CAST(%s AS %s)`, tt.literal, tt.sqlType))
		if out != tt.text {
			t.Errorf("psql %s: %q, want %q", tt.name, out, tt.text)
		}
	}
}

func psql(tb testing.TB, addr, password, sql string) string {
	tb.Helper()
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", "analyst", "-d", "medlake", "-c", sql)
	cmd.Env = append(cmd.Environ(), "PGPASSWORD="+password, "PGSSLMODE=prefer", "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("psql -c %q: %v\n%s", sql, err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

func TestPsql(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql is not installed: it is one of the real clients under test (apt-get install postgresql-client-15; .ci/run does)")
	}
	addr, _ := startServer(t, Config{Users: []User{{Name: "analyst", Password: "s3cret"}}})
	tests := []struct{ sql, want string }{
		{`SELECT count(*) FROM lab_results`, "3000"},
		{`SELECT facility, count(*) FROM lab_results GROUP BY facility ORDER BY facility`, "fac0001|1000\nfac0002|1000\nfac0003|1000"},
		{`SELECT count(*) FROM lab_results WHERE result_value IS NULL`, "60"},
		{`SELECT version()`, versionString},
		{`SHOW server_version`, "15.0 (medlake)"},
		{`SET application_name = 'x'; SELECT 1; SELECT 2`, "SET\n1\n2"},
		{`SELECT lab_id, result_value FROM lab_results WHERE lab_id IN (1, 2) ORDER BY lab_id`, "1|\n2|0.5"},
	}
	for _, tt := range tests {
		if got := psql(t, addr, "s3cret", tt.sql); got != tt.want {
			t.Errorf("psql -c %q = %q, want %q", tt.sql, got, tt.want)
		}
	}
	host, port, _ := strings.Cut(addr, ":")
	// Wrong password is refused.
	cmd := exec.Command("psql", "-X", "-h", host, "-p", port, "-U", "analyst", "-d", "medlake", "-c", "SELECT 1")
	cmd.Env = append(cmd.Environ(), "PGPASSWORD=wrong")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "password authentication failed") {
		t.Errorf("wrong password: %v\n%s", err, out)
	}
}

func TestPasswordAuthPgx(t *testing.T) {
	addr, _ := startServer(t, Config{Users: []User{{Name: "analyst", Password: "s3cret"}}})
	ctx := context.Background()
	if c, err := pgx.Connect(ctx, dsn(addr, "analyst", "nope")); err == nil {
		c.Close(ctx)
		t.Fatal("wrong password accepted")
	} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Errorf("wrong password: %v, want 28P01", err)
	}
	if c, err := pgx.Connect(ctx, dsn(addr, "mallory", "s3cret")); err == nil {
		c.Close(ctx)
		t.Fatal("unknown user accepted")
	}
	c := connect(t, dsn(addr, "analyst", "s3cret"), pgx.QueryExecModeCacheStatement)
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Errorf("SELECT 1 = %d, %v", n, err)
	}
}

func TestSimpleProtocolMessages(t *testing.T) {
	addr, _ := startServer(t, Config{})
	ctx := context.Background()
	c := connect(t, dsn(addr, "analyst", ""), pgx.QueryExecModeSimpleProtocol)
	results, err := c.PgConn().Exec(ctx, `SELECT 1 AS a; ; SELECT 'x' AS b; SHOW TimeZone`).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || string(results[0].Rows[0][0]) != "1" || string(results[1].Rows[0][0]) != "x" || string(results[2].Rows[0][0]) != "UTC" {
		t.Errorf("multi-statement results: %+v", results)
	}
	// An error stops the rest of the string, as in PostgreSQL.
	_, err = c.PgConn().Exec(ctx, `SELECT 1; SELECT * FROM no_such_table; SELECT 3`).ReadAll()
	if err == nil {
		t.Error("error in multi-statement string not reported")
	}
	if _, err := c.PgConn().Exec(ctx, ``).ReadAll(); err != nil {
		t.Errorf("empty query: %v", err)
	}
	var s string
	if err := c.QueryRow(ctx, "SELECT 'still usable'").Scan(&s); err != nil {
		t.Errorf("after errors: %v", err)
	}
}
