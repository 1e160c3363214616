package reports

import (
	"context"
	"database/sql"
	"encoding/csv"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/internal/testlake"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type fixture struct {
	cat       *catalog.Catalog
	warehouse string
	clock     *clock
	newSched  func(node string) *Scheduler
}

const labRows = 300

func newFixture(t *testing.T) fixture {
	t.Helper()
	lake := testlake.QueryLake(t, labRows)
	e, err := engine.New(context.Background(), engine.Config{CacheDir: filepath.Join(t.TempDir(), "cache")}, lake, testlake.Namespace, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cat, err := catalog.Open(t.Context(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	logins := testlake.Logins(t)
	wh := t.TempDir()
	clk := &clock{t: time.Date(2026, 12, 2, 6, 0, 30, 0, time.UTC)}
	return fixture{cat: cat, warehouse: wh, clock: clk, newSched: func(node string) *Scheduler {
		s, err := New(Config{Node: node, Now: clk.Now, RetryBackoff: time.Minute, MaxAttempts: 2}, cat, logins, e,
			Warehouse{Root: wh}, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}
}

func (f fixture) runs(t *testing.T, report string) []catalog.ReportRun {
	t.Helper()
	runs, err := f.cat.ReportRuns(t.Context(), report, 100)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func TestScheduledRuns(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	add := func(r catalog.Report) {
		r.Enabled = true
		if err := f.cat.PutReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	add(catalog.Report{Name: "census", Cron: "0 6 * * *", Format: "csv", Owner: "ana",
		SQL: "SELECT facility, count(*) AS n FROM lab_results GROUP BY facility ORDER BY facility"})
	add(catalog.Report{Name: "labs_parquet", Cron: "@hourly", Format: "parquet", Owner: "ana", SQL: "SELECT lab_id, facility FROM lab_results"})
	add(catalog.Report{Name: "orphaned", Cron: "0 6 * * *", Format: "csv", Owner: "off", SQL: "SELECT 1"})
	add(catalog.Report{Name: "tenant_visits", Cron: "0 6 * * *", Format: "csv", Owner: "tina", SQL: "SELECT id FROM visits ORDER BY id"})
	add(catalog.Report{Name: "broken", Cron: "0 6 * * *", Format: "csv", Owner: "ana", SQL: "SELECT * FROM no_such_table"})

	// Two nodes tick at once: each occurrence runs on exactly one.
	var wg sync.WaitGroup
	for _, node := range []string{"q1", "q2"} {
		s := f.newSched(node)
		wg.Go(func() {
			if err := s.Tick(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	census := f.runs(t, "census")
	if len(census) != 1 || census[0].Status != catalog.RunDone || census[0].Rows != 3 || census[0].Attempt != 1 {
		t.Fatalf("census runs = %+v", census)
	}
	if want := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC); !census[0].ScheduledFor.Equal(want) {
		t.Errorf("census ran for %s, want %s", census[0].ScheduledFor, want)
	}
	wantPath := filepath.Join(f.warehouse, "reports", "census", "20261202T060000Z.csv")
	if census[0].Location != wantPath {
		t.Errorf("location %s, want %s", census[0].Location, wantPath)
	}
	fh, err := os.Open(wantPath)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(fh).ReadAll()
	fh.Close()
	if err != nil || len(recs) != 4 || strings.Join(recs[1], ",") != "fac0001,100" {
		t.Errorf("census.csv = %v, %v", recs, err)
	}

	parquetRuns := f.runs(t, "labs_parquet")
	if len(parquetRuns) != 1 || parquetRuns[0].Status != catalog.RunDone {
		t.Fatalf("labs_parquet runs = %+v", parquetRuns)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(`SELECT count(DISTINCT lab_id) FROM read_parquet(?)`, parquetRuns[0].Location).Scan(&n); err != nil || n != labRows {
		t.Errorf("parquet result has %d labs (%v), want %d", n, err, labRows)
	}

	// A report runs as its owner: a tenant's report holds only its rows.
	if r := f.runs(t, "tenant_visits"); len(r) != 1 || r[0].Rows != 2 {
		t.Errorf("tenant_visits runs = %+v, want one run of 2 rows", r)
	} else if data, err := os.ReadFile(r[0].Location); err != nil || string(data) != "id\n1\n3\n" {
		t.Errorf("tenant_visits result %q, %v", data, err)
	}
	if r := f.runs(t, "orphaned"); len(r) != 1 || r[0].Status != catalog.RunFailed || !strings.Contains(r[0].Error, "disabled") {
		t.Errorf("orphaned runs = %+v", r)
	}
	broken := f.runs(t, "broken")
	if len(broken) != 1 || broken[0].Status != catalog.RunFailed || !strings.Contains(broken[0].Error, "no_such_table") {
		t.Fatalf("broken runs = %+v", broken)
	}

	// Ticking again changes nothing before the retry backoff; after it the
	// failed occurrence is retried once more (MaxAttempts 2), then left.
	s := f.newSched("q1")
	f.clock.Set(f.clock.Now().Add(10 * time.Second))
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.runs(t, "broken"); r[0].Attempt != 1 {
		t.Errorf("retried before backoff: %+v", r)
	}
	for range 3 {
		f.clock.Set(f.clock.Now().Add(2 * time.Minute))
		if err := s.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if r := f.runs(t, "broken"); len(r) != 1 || r[0].Attempt != 2 || r[0].Status != catalog.RunFailed {
		t.Errorf("broken after retries = %+v", r)
	}
	if r := f.runs(t, "census"); len(r) != 1 {
		t.Errorf("census ran again for the same occurrence: %+v", r)
	}

	// The next day's occurrence runs and keeps the first as history.
	f.clock.Set(time.Date(2026, 12, 3, 6, 1, 0, 0, time.UTC))
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.runs(t, "census"); len(r) != 2 || r[0].Status != catalog.RunDone || !strings.HasSuffix(r[0].Location, "20261203T060000Z.csv") {
		t.Errorf("census runs after a day = %+v", r)
	}
	if _, err := os.Stat(wantPath); err != nil {
		t.Errorf("the first day's result is gone: %v", err)
	}
}

func TestLatestOccurrence(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	tests := []struct {
		cron string
		want string // "" for none in the window
	}{
		{"0 6 * * *", "2026-12-02T06:00:00Z"},
		{"30 10 * * *", "2026-12-02T10:30:00Z"},
		{"@weekly", ""}, // last Sunday midnight is before the 24h window
		{"*/15 * * * *", "2026-12-02T10:30:00Z"},
		{"0 0 1 1 *", ""},
	}
	for _, tt := range tests {
		sched, err := ParseSchedule(tt.cron)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := latest(sched, now.Add(-24*time.Hour), now)
		if tt.want == "" {
			if ok {
				t.Errorf("%s: got %s, want none", tt.cron, got)
			}
			continue
		}
		if !ok || got.Format(time.RFC3339) != tt.want {
			t.Errorf("%s: got %s, want %s", tt.cron, got, tt.want)
		}
	}
	if _, err := ParseSchedule("61 * * * *"); err == nil {
		t.Error("minute 61 accepted")
	}
}
