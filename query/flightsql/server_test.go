package flightsql

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	arrowflightsql "github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	_ "github.com/apache/arrow-go/v18/arrow/flight/flightsql/driver" // registers "flightsql" for database/sql
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/internal/testlake"
)

const labRows = 1000

func startServer(t *testing.T) string {
	addr, _ := startServerWith(t, false)
	return addr
}

func startServerWith(t *testing.T, trust bool) (string, *catalog.Catalog) {
	t.Helper()
	cat := testlake.QueryLake(t, labRows)
	e, err := engine.New(context.Background(), engine.Config{CacheDir: filepath.Join(t.TempDir(), "cache")}, cat, testlake.Namespace, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	store := testlake.Logins(t)
	meta, err := catalog.Open(t.Context(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	srv, err := New(Config{Listen: "127.0.0.1:0", BatchRows: 100, TrustLoopback: trust}, store, e, meta, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	addr, err := srv.Addr(actx)
	if err != nil {
		t.Fatal(err)
	}
	return addr.String(), meta
}

func dial(t *testing.T, addr string) *arrowflightsql.Client {
	t.Helper()
	c, err := arrowflightsql.NewClient(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll fetches every endpoint of info and returns its rows' first column
// as text, and the number of rows.
func readAll(t *testing.T, ctx context.Context, c *arrowflightsql.Client, info *flight.FlightInfo) ([]string, *arrow.Schema) {
	t.Helper()
	var out []string
	var schema *arrow.Schema
	for _, ep := range info.Endpoint {
		r, err := c.DoGet(ctx, ep.Ticket)
		if err != nil {
			t.Fatal(err)
		}
		schema = r.Schema()
		for r.Next() {
			rec := r.RecordBatch()
			for i := 0; i < int(rec.NumRows()); i++ {
				out = append(out, rec.Column(0).ValueStr(i))
			}
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		r.Release()
	}
	return out, schema
}

func TestQueries(t *testing.T) {
	addr := startServer(t)
	c := dial(t, addr)
	ctx, err := c.Client.AuthenticateBasicToken(context.Background(), "ana", testlake.Password)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}

	t.Run("statement", func(t *testing.T) {
		info, err := c.Execute(ctx, "SELECT lab_id, facility, collected_at FROM lab_results ORDER BY lab_id")
		if err != nil {
			t.Fatal(err)
		}
		ids, schema := readAll(t, ctx, c, info)
		if len(ids) != labRows || ids[0] != "1" || ids[labRows-1] != fmt.Sprint(labRows) {
			t.Errorf("%d rows, first %v", len(ids), ids[:min(3, len(ids))])
		}
		if schema.Field(2).Type.String() != "timestamp[us, tz=UTC]" {
			t.Errorf("schema %s", schema)
		}
		infoSchema, err := flight.DeserializeSchema(info.Schema, memory.DefaultAllocator)
		if err != nil || !infoSchema.Equal(schema) {
			t.Errorf("FlightInfo schema %v (%v) differs from the stream's %v", infoSchema, err, schema)
		}
	})

	t.Run("prepared with a parameter", func(t *testing.T) {
		prep, err := c.Prepare(ctx, "SELECT facility FROM lab_results WHERE lab_id = $1")
		if err != nil {
			t.Fatal(err)
		}
		defer prep.Close(ctx)
		if got := prep.ParameterSchema().Field(0).Type.String(); got != "int64" {
			t.Errorf("parameter type %s, want int64", got)
		}
		for _, id := range []int64{2, 3} {
			b := array.NewRecordBuilder(memory.DefaultAllocator, prep.ParameterSchema())
			b.Field(0).(*array.Int64Builder).Append(id)
			rec := b.NewRecordBatch()
			prep.SetParameters(rec)
			info, err := prep.Execute(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := readAll(t, ctx, c, info)
			_, fac, _, _, _, _, _ := testlake.LabRow(int(id - 1))
			if len(got) != 1 || got[0] != fac {
				t.Errorf("lab_id %d: %v, want [%s]", id, got, fac)
			}
			rec.Release()
			b.Release()
		}
	})

	t.Run("tables with schema", func(t *testing.T) {
		info, err := c.GetTables(ctx, &arrowflightsql.GetTablesOpts{IncludeSchema: true})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.DoGet(ctx, info.Endpoint[0].Ticket)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		found := false
		for r.Next() {
			rec := r.RecordBatch()
			names := rec.Column(2).(*array.String)
			for i := 0; i < names.Len(); i++ {
				if names.Value(i) != "lab_results" {
					continue
				}
				found = true
				sc, err := flight.DeserializeSchema(rec.Column(4).(*array.Binary).Value(i), memory.DefaultAllocator)
				if err != nil || sc.NumFields() == 0 || sc.Field(0).Name != "lab_id" {
					t.Errorf("lab_results schema %v, %v", sc, err)
				}
			}
		}
		if !found {
			t.Error("lab_results not listed")
		}
	})

	t.Run("errors carry SQLSTATE", func(t *testing.T) {
		for _, tt := range []struct {
			sql   string
			code  codes.Code
			state string
		}{
			{"SELECT * FROM nope", codes.NotFound, "42P01"},
			{"SELEC 1", codes.InvalidArgument, "42601"},
			{"DROP TABLE lab_results", codes.PermissionDenied, "25006"},
		} {
			_, err := c.Execute(ctx, tt.sql)
			st, _ := status.FromError(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.state) {
				t.Errorf("%s: %v, want %s with %s", tt.sql, err, tt.code, tt.state)
			}
		}
	})
}

// A tenant's user sees only its tenant's rows, and cannot read files; both
// statements are in the audit log.
func TestTenantScope(t *testing.T) {
	addr, meta := startServerWith(t, false)
	c := dial(t, addr)
	ctx, err := c.Client.AuthenticateBasicToken(context.Background(), "tina", testlake.Password)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Execute(ctx, "SELECT id FROM visits ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := readAll(t, ctx, c, info); strings.Join(ids, ",") != "1,3" {
		t.Errorf("tenant t1 read ids %v, want 1,3", ids)
	}
	if _, err := c.Execute(ctx, "SELECT * FROM read_parquet('/etc/passwd')"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("file function: %v, want PermissionDenied", err)
	}
	entries, err := meta.AuditLog(t.Context(), catalog.AuditFilter{User: "tina"})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, e := range entries {
		outcomes[e.Outcome]++
		if e.Protocol != "flightsql" || e.Tenant != "t1" {
			t.Errorf("audit entry %+v", e)
		}
		if e.Outcome == catalog.AuditOK && e.Rows != 2 {
			t.Errorf("audited rows %d, want 2", e.Rows)
		}
	}
	// The FlightInfo call prepares the statement too: refusals are logged
	// where they happen, the run where it runs.
	if outcomes[catalog.AuditOK] != 1 || outcomes[catalog.AuditRefused] < 1 {
		t.Errorf("audit outcomes %v", outcomes)
	}
}

// With TrustLoopback an unknown name logs in from loopback as an admin; a
// known user still proves its password.
func TestTrustLoopback(t *testing.T) {
	addr, _ := startServerWith(t, true)
	c := dial(t, addr)
	ctx, err := c.Client.AuthenticateBasicToken(context.Background(), "stranger", "")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Execute(ctx, "SELECT count(*) FROM visits")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := readAll(t, ctx, c, info); len(n) != 1 || n[0] != "3" {
		t.Errorf("trusted admin counted %v, want 3", n)
	}
	if _, err := c.Client.AuthenticateBasicToken(context.Background(), "tina", "wrong"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("known user, wrong password: %v", err)
	}
}

func TestLogins(t *testing.T) {
	addr := startServer(t)
	c := dial(t, addr)
	for _, tt := range []struct{ user, pass string }{{"ana", "wrong"}, {"nobody", testlake.Password}, {"off", testlake.Password}} {
		if _, err := c.Client.AuthenticateBasicToken(context.Background(), tt.user, tt.pass); status.Code(err) != codes.Unauthenticated {
			t.Errorf("login %s/%s: %v, want Unauthenticated", tt.user, tt.pass, err)
		}
	}
	if _, err := c.Execute(context.Background(), "SELECT 1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no credentials: %v, want Unauthenticated", err)
	}
	bogus := metadataCtx("authorization", "Bearer not-a-token")
	if _, err := c.Execute(bogus, "SELECT 1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("unknown token: %v, want Unauthenticated", err)
	}
}

// arrow-go's database/sql driver sends Basic credentials on every call.
func TestDatabaseSQLDriver(t *testing.T) {
	addr := startServer(t)
	db, err := sql.Open("flightsql", "flightsql://ana:right@"+addr+"?timeout=30s")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	var maxFac string
	if err := db.QueryRow("SELECT count(*), max(facility) FROM lab_results WHERE lab_id <= $1", int64(10)).Scan(&n, &maxFac); err != nil {
		t.Fatal(err)
	}
	if n != 10 || maxFac != "fac0003" {
		t.Errorf("count %d, max facility %s", n, maxFac)
	}
	bad, err := sql.Open("flightsql", "flightsql://ana:wrong@"+addr+"?timeout=30s")
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.QueryRow("SELECT 1").Scan(&n); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v", err)
	}
}

func metadataCtx(kv ...string) context.Context {
	return metadata.NewOutgoingContext(context.Background(), metadata.Pairs(kv...))
}
