package query

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/internal/testlake"
	"github.com/medlake/medlake/query/pgwire"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults need cache dir", Default(), "cache_dir is required"},
		{"ok", Config{CacheDir: "/tmp/x"}, ""},
		{"bad listen", Config{CacheDir: "/x", Listen: "nope"}, "listen"},
		{"user without password", Config{CacheDir: "/x", Users: []pgwire.User{{Name: "a"}}}, "users[0]"},
		{"negative refresh parallelism", Config{CacheDir: "/x", RefreshParallel: -1}, "refresh_parallel -1"},
		{"negative manifest cache", Config{CacheDir: "/x", ManifestCacheBytes: -1}, "manifest_cache_bytes -1"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestServiceOverCatalog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("catalog.Open: %v", err)
	}
	defer cat.Close()
	testlake.CreateLabTable(t, cat.Iceberg(), "lab_results")
	testlake.AppendLabRows(t, cat.Iceberg(), "lab_results", 0, 2000)

	reg := prometheus.NewRegistry()
	cfg := Config{Listen: "127.0.0.1:0", CacheDir: filepath.Join(dir, "cache")}
	svc, err := New(ctx, cfg, cat.Iceberg(), catalog.DefaultNamespace, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer runService(ctx, t, svc)()
	addr, err := svc.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, "postgres://analyst@"+addr.String()+"/medlake?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM lab_results WHERE facility = $1`, "fac0001").Scan(&n); err != nil || n != 667 {
		t.Fatalf("count = %d, %v; want 667", n, err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM lab_results`); err == nil {
		t.Error("DELETE accepted")
	}
	// A new snapshot shows up after a refresh.
	testlake.AppendLabRows(t, cat.Iceberg(), "lab_results", 2000, 2100)
	if err := svc.Engine().Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM lab_results`).Scan(&n); err != nil || n != 2100 {
		t.Fatalf("count after append = %d, %v; want 2100", n, err)
	}
	if got := counterValue(t, svc.queries.WithLabelValues("ok")); got < 2 {
		t.Errorf("queries_total{outcome=ok} = %v, want >= 2", got)
	}
	if got := counterValue(t, svc.queries.WithLabelValues("refused")); got != 1 {
		t.Errorf("queries_total{outcome=refused} = %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "medlake_query_query_duration_seconds" {
			found = mf.GetMetric()[0].GetHistogram().GetSampleCount() >= 2
		}
	}
	if !found {
		t.Error("query_duration_seconds missing or empty")
	}
}

func counterValue(tb testing.TB, c prometheus.Counter) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// runService runs svc until the returned function is called, which stops it and waits.
func runService(ctx context.Context, t *testing.T, svc *Service) (stop func()) {
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := svc.Run(runCtx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
