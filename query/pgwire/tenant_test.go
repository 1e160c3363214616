package pgwire

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/internal/testlake"
)

// pinnedPrincipal opens every session as one principal, whoever logs in: it stands in
// for catalog logins so these tests see a tenant user's session over the wire.
type pinnedPrincipal struct {
	eng *engine.Engine
	p   auth.Principal
}

func (o pinnedPrincipal) Session(ctx context.Context, _ auth.Principal) (*engine.Session, error) {
	return o.eng.Session(ctx, o.p)
}

// TestTenantOverWire checks a tenant user's statements are scoped and refusals reach
// the client as SQLSTATE 42501, and both are audited under the tenant.
func TestTenantOverWire(t *testing.T) {
	ctx := context.Background()
	lake := testlake.Catalog(t)
	testlake.CreateTenantTable(t, lake, "encounters", []testlake.TenantRow{
		{ID: 1, Tenant: "acme", Facility: "a1"}, {ID: 2, Tenant: "globex", Facility: "g1"}, {ID: 3, Tenant: "acme", Facility: "a2"},
	})
	logger := slog.New(slog.DiscardHandler)
	eng, err := engine.New(ctx, engine.Config{CacheDir: filepath.Join(t.TempDir(), "cache"),
		Setup: CatalogSetup(), MetadataSchemas: []string{CatalogSchema}}, lake, testlake.Namespace, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	srv, err := New(Config{Listen: "127.0.0.1:0"}, pinnedPrincipal{eng, auth.Principal{User: "alice", Tenant: "acme"}}, logger, WithAuditor(cat))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Run(runCtx) })
	defer func() { cancel(); wg.Wait() }()
	addr, err := srv.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := connect(t, dsn(addr.String(), "alice", "x"), mode)
		rows, err := c.Query(ctx, `SELECT id FROM encounters WHERE _tenant = $1 OR true ORDER BY id`, "globex")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil || !slices.Equal(ids, []int64{1, 3}) {
			t.Errorf("mode %v: ids = %v, %v; want [1 3]", mode, ids, err)
		}
		// The catalog probes BI drivers send work for tenant users too: the
		// emulated catalog holds names, never rows.
		var tables []string
		rows, err = c.Query(ctx, `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r','p','v') AND pg_catalog.pg_table_is_visible(c.oid) AND n.nspname = 'public' ORDER BY 1`)
		if err == nil {
			tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil || !slices.Equal(tables, []string{"encounters"}) {
			t.Errorf("mode %v: catalog probe: %v, %v", mode, tables, err)
		}
		var searchPath string
		if err := c.QueryRow(ctx, `SELECT current_setting('search_path')`).Scan(&searchPath); err != nil || searchPath == "" {
			t.Errorf("mode %v: current_setting: %q, %v", mode, searchPath, err)
		}
		for _, q := range []string{`SELECT * FROM read_parquet('x')`, `SELECT sql FROM duckdb_views()`, `COPY encounters TO 'x'`} {
			_, err := c.Exec(ctx, q)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42501" {
				t.Errorf("mode %v: %s: %v, want SQLSTATE 42501", mode, q, err)
			}
		}
	}
	log, err := cat.AuditLog(ctx, catalog.AuditFilter{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, e := range log {
		if e.Tenant != "acme" {
			t.Errorf("audit entry %+v: tenant %q, want acme", e, e.Tenant)
		}
		outcomes[e.Outcome]++
	}
	if outcomes[catalog.AuditOK] != 6 || outcomes[catalog.AuditRefused] != 6 {
		t.Errorf("audit outcomes = %v, want 6 ok and 6 refused", outcomes)
	}
}
