package catalog

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medlake/medlake/deploy/local/stack"
)

func TestReportsSQLite(t *testing.T) {
	c, err := Open(t.Context(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testReports(t, c)
}

func TestReportsPostgres(t *testing.T) {
	c, err := Open(t.Context(), Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testReports(t, c)
}

func testReports(t *testing.T, c *Catalog) {
	ctx := t.Context()
	r := Report{Name: "daily_census", Cron: "0 6 * * *", SQL: "SELECT 1", Format: "csv", Owner: "ana", Enabled: true}
	if err := c.PutReport(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.SQL = "SELECT 2"
	if err := c.PutReport(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := c.PutReport(ctx, Report{Name: "weekly", Cron: "@weekly", SQL: "SELECT 3", Format: "parquet", Owner: "bo"}); err != nil {
		t.Fatal(err)
	}
	all, err := c.Reports(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "daily_census" || all[0].SQL != "SELECT 2" || !all[0].Enabled || all[1].Enabled {
		t.Fatalf("Reports = %+v, %v", all, err)
	}
	if err := c.SetReportEnabled(ctx, "weekly", true); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Report(ctx, "weekly"); err != nil || !got.Enabled || got.Format != "parquet" {
		t.Fatalf("Report(weekly) = %+v, %v", got, err)
	}
	if err := c.DeleteReport(ctx, "weekly"); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{c.DeleteReport(ctx, "weekly"), c.SetReportEnabled(ctx, "nope", true)} {
		if !errors.Is(err, ErrNoReport) {
			t.Errorf("got %v, want ErrNoReport", err)
		}
	}
	if _, err := c.Report(ctx, "weekly"); !errors.Is(err, ErrNoReport) {
		t.Errorf("deleted report: %v", err)
	}

	sched := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	t0 := sched.Add(time.Second)
	claim := func(node string, now time.Time) (int, bool) {
		t.Helper()
		a, ok, err := c.ClaimRun(ctx, r.Name, sched, node, now, now.Add(time.Minute), now.Add(-30*time.Second), 3)
		if err != nil {
			t.Fatal(err)
		}
		return a, ok
	}
	if a, ok := claim("n1", t0); !ok || a != 1 {
		t.Fatalf("first claim = %d, %v", a, ok)
	}
	if _, ok := claim("n2", t0.Add(30*time.Second)); ok {
		t.Fatal("a second node took a run whose lease holds")
	}
	// n1 dies; its lease lapses; n2 takes over as attempt 2.
	if a, ok := claim("n2", t0.Add(2*time.Minute)); !ok || a != 2 {
		t.Fatalf("takeover = %d, %v", a, ok)
	}
	if ok, err := c.FinishRun(ctx, ReportRun{Report: r.Name, ScheduledFor: sched, Node: "n1", Attempt: 1, Status: RunDone, FinishedAt: t0}); err != nil || ok {
		t.Fatalf("the lapsed node recorded its outcome: %v, %v", ok, err)
	}
	failedAt := t0.Add(3 * time.Minute)
	if ok, err := c.FinishRun(ctx, ReportRun{Report: r.Name, ScheduledFor: sched, Node: "n2", Attempt: 2, Status: RunFailed, FinishedAt: failedAt, Error: "boom"}); err != nil || !ok {
		t.Fatalf("FinishRun failed: %v, %v", ok, err)
	}
	if _, ok := claim("n3", failedAt.Add(10*time.Second)); ok {
		t.Fatal("a failed run was retried before its backoff")
	}
	if a, ok := claim("n3", failedAt.Add(time.Minute)); !ok || a != 3 {
		t.Fatalf("retry = %d, %v", a, ok)
	}
	if ok, err := c.FinishRun(ctx, ReportRun{Report: r.Name, ScheduledFor: sched, Node: "n3", Attempt: 3, Status: RunFailed, FinishedAt: failedAt.Add(2 * time.Minute), Error: "boom again"}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, ok := claim("n1", failedAt.Add(time.Hour)); ok {
		t.Fatal("a run was tried more than max attempts")
	}
	runs, err := c.ReportRuns(ctx, r.Name, 10)
	if err != nil || len(runs) != 1 || runs[0].Status != RunFailed || runs[0].Attempt != 3 || runs[0].Error != "boom again" || runs[0].Node != "n3" {
		t.Fatalf("runs = %+v, %v", runs, err)
	}

	// Many nodes racing for one occurrence: exactly one wins.
	next := sched.Add(24 * time.Hour)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			now := next.Add(time.Second)
			_, ok, err := c.ClaimRun(ctx, r.Name, next, fmt.Sprintf("racer%d", i), now, now.Add(time.Minute), now, 3)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d nodes claimed one occurrence", wins.Load())
	}
}
