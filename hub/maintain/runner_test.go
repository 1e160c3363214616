package maintain

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// TestRunnerPostgresMinIO runs maintenance passes the way production does, on
// PostgreSQL (the CockroachDB stand-in) and MinIO, from two nodes: only the lease
// holder works, and its pass compacts, expires and cleans.
func TestRunnerPostgresMinIO(t *testing.T) {
	s3 := stack.MinIO(t)
	ccfg := catalog.Config{URI: stack.Postgres(t), Warehouse: "s3://" + s3.Bucket + "/lake", S3Endpoint: s3.Endpoint,
		S3Region: s3.Region, S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey}
	cat := openTestCatalog(t, ccfg)
	createTestTable(t, cat, "labs")
	all := smallFiles(t, cat, "labs", 8, 25)
	before, _ := tableFiles(t, cat, "labs")

	cfg := DefaultConfig()
	cfg.TargetFileSize = 8 << 20
	cfg.RetainLast = 2
	cfg.MaxSnapshotAge = 0
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg1, reg2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	r1, err := New(cfg, cat, "node-1", log, reg1)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := New(cfg, openTestCatalog(t, ccfg), "node-2", log, reg2)
	if err != nil {
		t.Fatal(err)
	}

	// node-2 holds the lease: node-1's pass does nothing.
	if ok, err := cat.ClaimLease(t.Context(), LeaseName, "node-2", time.Now(), time.Now().Add(time.Minute)); !ok || err != nil {
		t.Fatalf("claiming lease for node-2: %v %v", ok, err)
	}
	if ran, err := r1.Pass(t.Context()); ran || err != nil {
		t.Fatalf("pass while another node holds the lease = %v, %v; want false", ran, err)
	}
	if got, _ := tableFiles(t, cat, "labs"); len(got) != len(before) {
		t.Fatalf("table changed by a node without the lease: %d files, had %d", len(got), len(before))
	}
	if err := cat.ReleaseLease(t.Context(), LeaseName, "node-2"); err != nil {
		t.Fatal(err)
	}

	if ran, err := r1.Pass(t.Context()); !ran || err != nil {
		t.Fatalf("pass = %v, %v; want it to run", ran, err)
	}
	after, deletes := tableFiles(t, cat, "labs")
	if len(after) != 4 || len(deletes) != 0 {
		t.Errorf("after the pass: %d data files, %d delete files; want 4 and 0 (had %d)", len(after), len(deletes), len(before))
	}
	tbl, _ := CatalogTables(cat).Load(t.Context(), "labs")
	if n := len(tbl.Metadata().Snapshots()); n != 2 {
		t.Errorf("%d snapshots after the pass, want 2 (retain_last)", n)
	}
	if got := scanRows(t, cat, "labs"); len(got) != len(all) {
		t.Fatalf("scan after the pass has %d rows, want %d", len(got), len(all))
	}
	for _, c := range []struct {
		job, outcome string
		want         float64
	}{{JobCompact, "ok", 1}, {JobExpire, "ok", 1}, {JobOrphans, "nothing", 1}} {
		if got := metricValue(t, r1.m.runs.WithLabelValues(c.job, c.outcome)); got != c.want {
			t.Errorf("steps_total{job=%s,outcome=%s} = %v, want %v", c.job, c.outcome, got, c.want)
		}
	}
	// Orphan cleanup lists the whole location: once per orphan_interval on a node.
	if err := r1.Table(t.Context(), "labs"); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, r1.m.runs.WithLabelValues(JobOrphans, "nothing")); got != 1 {
		t.Errorf("orphan cleanup ran %v times in two runs within orphan_interval, want 1", got)
	}
	if got := metricValue(t, r1.m.filesRewritten.WithLabelValues("labs")); got != float64(len(before)) {
		t.Errorf("data_files_rewritten_total = %v, want %d", got, len(before))
	}
	if n := seriesCount(t, reg1, "medlake_maintenance_step_duration_seconds"); n != 3 {
		t.Errorf("step duration series %d, want 3", n)
	}
	// node-1 keeps the lease for an interval: node-2 waits, until node-1 stops (releases
	// it); then node-2's pass runs, and finds nothing to do.
	if ran, err := r2.Pass(t.Context()); ran || err != nil {
		t.Fatalf("node-2 pass right after node-1's = %v, %v; want false", ran, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r1.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if ran, err := r2.Pass(t.Context()); !ran || err != nil {
		t.Fatalf("node-2 pass = %v, %v; want it to run", ran, err)
	}
	if got := metricValue(t, r2.m.runs.WithLabelValues(JobCompact, "nothing")); got != 1 {
		t.Errorf("node-2 compaction outcome nothing = %v, want 1", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"orphan age too short", func(c *Config) { c.OrphanMinAge = time.Minute }, "orphan_min_age"},
		{"no interval", func(c *Config) { c.Interval = 0 }, "interval"},
		{"no orphan interval", func(c *Config) { c.OrphanInterval = 0 }, "orphan_interval"},
		{"retain none", func(c *Config) { c.RetainLast = 0 }, "retain_last"},
		{"tiny files", func(c *Config) { c.TargetFileSize = 1000 }, "target_file_size_bytes"},
		{"one input file", func(c *Config) { c.MinInputFiles = 1 }, "min_input_files"},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.edit(&c)
		err := c.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Validate() = %v, want error containing %q", tt.name, err, tt.want)
		}
	}
}

func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", c.Desc())
	return 0
}

func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}
