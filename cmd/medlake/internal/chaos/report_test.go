package chaos

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLongestGap(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	commits := []Commit{{At: at(1)}, {At: at(2)}, {At: at(7)}, {At: at(8)}, {At: at(20)}}
	tests := []struct {
		name     string
		from, to float64
		want     time.Duration
	}{
		{"whole run", 0, 20, 12 * time.Second},
		{"gap before the first commit in the window", 2.5, 8, 4500 * time.Millisecond},
		{"gap after the last commit in the window", 7, 10, 2 * time.Second},
		{"no commit in the window", 9, 12, 3 * time.Second},
		{"empty window", 5, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LongestGap(commits, at(tt.from), at(tt.to)); got != tt.want {
				t.Errorf("LongestGap(%v, %v) = %s, want %s", tt.from, tt.to, got, tt.want)
			}
		})
	}
}

func TestFaultSettle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	commits := []Commit{
		{At: at(1), Agent: "agent-f1"}, {At: at(2), Agent: "agent-f2"},
		{At: at(9), Agent: "agent-f2"}, {At: at(11), Agent: "agent-f1"}, {At: at(12), Agent: "agent-f2"},
	}
	ids := map[string]string{"agent-1": "agent-f1", "agent-2": "agent-f2"}
	tests := []struct {
		name          string
		fault         Fault
		injected, res float64
		recovered     bool
		recovery, gap time.Duration
	}{
		{"agent recovers by its own commit", Fault{Kind: KindAgentKill, Target: "agent-1"}, 3, 5, true, 6 * time.Second, 6 * time.Second},
		{"hub recovers by any commit", Fault{Kind: KindHubKill, Target: "hub-1"}, 3, 5, true, 4 * time.Second, 6 * time.Second},
		{"broker", Fault{Kind: KindBrokerRestart}, 2.5, 8, true, time.Second, 6500 * time.Millisecond},
		{"no commit after the restore", Fault{Kind: KindPostgresRestart}, 12.5, 13, false, 0, 0},
	}
	// A fault whose recovery runs past the next fault: its alone gap stops there.
	r := FaultResult{Fault: Fault{Kind: KindHubKill, Target: "hub-1"}, Injected: at(2.5), Restored: at(3), Next: at(5)}
	r.Settle(commits, ids)
	if r.Gap != 6500*time.Millisecond || r.AloneGap != 2500*time.Millisecond {
		t.Errorf("gap %s, alone %s; want 6.5s, alone 2.5s (up to the next fault)", r.Gap, r.AloneGap)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := FaultResult{Fault: tt.fault, Injected: at(tt.injected), Restored: at(tt.res)}
			r.Settle(commits, ids)
			if r.Recovered != tt.recovered || r.Recovery != tt.recovery || r.Gap != tt.gap {
				t.Errorf("recovered %v in %s, gap %s; want %v in %s, gap %s", r.Recovered, r.Recovery, r.Gap, tt.recovered, tt.recovery, tt.gap)
			}
		})
	}
}

func TestReport(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := func() *Report {
		r := &Report{RecordsIn: 10, RecordsOut: 10, SpoolsDrained: true,
			Tables: []TableResult{{Table: "vitals", Expected: 10, Rows: 10, Distinct: 10, KeyChecksumOK: true, RowChecksumOK: true}}}
		for i, k := range Kinds() {
			r.Faults = append(r.Faults, FaultResult{Fault: Fault{Seq: i + 1, Kind: k}, Injected: t0, Restored: t0,
				Recovered: true, Recovery: time.Duration(i) * time.Second, Gap: time.Duration(10-i) * time.Second,
				AloneGap: time.Duration(10-i) * time.Second / 2})
		}
		return r
	}
	tests := []struct {
		name  string
		spoil func(*Report)
		ok    bool
	}{
		{"clean", func(*Report) {}, true},
		{"lost", func(r *Report) { r.Lost, r.RecordsOut = 1, 9 }, false},
		{"duplicated", func(r *Report) { r.Duplicated, r.RecordsOut = 1, 11 }, false},
		{"row checksum differs", func(r *Report) { r.Tables[0].RowChecksumOK = false }, false},
		{"spool left", func(r *Report) { r.SpoolsDrained = false }, false},
		{"fault never recovered", func(r *Report) { r.Faults[2].Recovered = false }, false},
		{"fault failed", func(r *Report) { r.Faults[0].Err = "restart failed" }, false},
		{"problem", func(r *Report) { r.Problems = []string{"x"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.spoil(r)
			if r.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v", r.OK(), tt.ok)
			}
			var b bytes.Buffer
			r.Write(&b)
			want := "result: PASS"
			if !tt.ok {
				want = "result: FAIL"
			}
			if !strings.Contains(b.String(), want) {
				t.Errorf("report does not say %q:\n%s", want, b.String())
			}
		})
	}
	r := good()
	s := r.Summaries()
	if len(s) != len(Kinds()) || s[1].Kind != KindHubKill || s[1].MaxRecovery != time.Second || s[1].MaxGap != 9*time.Second {
		t.Errorf("summaries %+v", s)
	}
	if g := r.HubDownGap(); g != 4500*time.Millisecond {
		t.Errorf("HubDownGap = %s, want 4.5s (the gap before the next fault)", g)
	}
}

func TestTableSettle(t *testing.T) {
	tests := []struct {
		name                   string
		expected, rows, unique int64
		lost, dup              int64
	}{
		{"exact", 10, 10, 10, 0, 0},
		{"two doubled", 10, 12, 10, 0, 2},
		{"three lost", 10, 7, 7, 3, 0},
		{"lost and doubled", 10, 10, 9, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := TableResult{Expected: tt.expected, Rows: tt.rows, Distinct: tt.unique}
			tr.Settle()
			if tr.Lost != tt.lost || tr.Duplicated != tt.dup {
				t.Errorf("lost %d duplicated %d, want %d and %d", tr.Lost, tr.Duplicated, tt.lost, tt.dup)
			}
		})
	}
}
