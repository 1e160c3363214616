package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestBucketQuantile(t *testing.T) {
	bounds := []float64{1, 2, 5, 10, math.Inf(1)}
	tests := []struct {
		name string
		q    float64
		cum  []uint64
		want float64
	}{
		{"all in the first bucket", 0.5, []uint64{10, 10, 10, 10, 10}, 0.5},
		{"interpolated inside 2..5", 0.5, []uint64{0, 0, 10, 10, 10}, 3.5},
		{"p99 in the last finite bucket", 0.99, []uint64{50, 50, 50, 100, 100}, 9.9},
		{"above every finite bound", 0.99, []uint64{0, 0, 0, 0, 10}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bucketQuantile(tt.q, bounds, tt.cum, tt.cum[len(tt.cum)-1]); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("q%.2f = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

// TestWindowQuantiles checks that the window subtracts what was observed before it.
func TestWindowQuantiles(t *testing.T) {
	bounds := []float64{1, 10, math.Inf(1)}
	base := hist{count: 100, bounds: bounds, cum: []uint64{100, 100, 100}} // 100 fast ones, long ago
	cur := hist{count: 110, bounds: bounds, cum: []uint64{100, 110, 110}}  // then 10 slow ones
	q := windowQuantiles(cur, base)
	if q.Count != 10 || q.P50 == nil || *q.P50 <= 1 || *q.P99 > 10 {
		t.Fatalf("window = %+v (p50 %v), want 10 observations between 1 and 10 s", q, deref(q.P50))
	}
	if q := windowQuantiles(hist{bounds: bounds, cum: []uint64{0, 0, 0}}, hist{}); q.Count != 0 || q.P50 != nil {
		t.Errorf("empty window = %+v, want no percentiles", q)
	}
}

func deref(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)
	age, p50, p99 := 90.0, 1.5, 8.25
	r := StatusReport{Time: now, WindowSeconds: 300,
		Agents: []AgentReport{{Tenant: "t0001", Facility: "f000001", Agent: "agent-f000001", State: "online", LastSeen: now.Add(-4 * time.Second),
			SpoolBatches: 3, SpoolBytes: 3 << 20, SpoolFull: true, FilesWaiting: 2, OldestUnackedSeconds: &age, Quarantined: 1}},
		Tables: []TableReport{{Table: "lab_results", LastCommit: now.Add(-2 * time.Second), PendingSeconds: 12,
			FreshnessCommitted: Quantiles{Count: 5, P50: &p50, P99: &p99}}},
	}
	var out bytes.Buffer
	if err := printStatus(&out, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"agent-f000001", "t0001/f000001", "online (spool full)", "4s ago", "3 batches, 3.0 MiB", "1m30s",
		"lab_results", "2s ago", "12s", "1.5s / 8.25s", "percentiles over the last 5m0s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}
