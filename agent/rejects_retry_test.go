package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/medlake/medlake/agent/quarantine"
	"github.com/medlake/medlake/agent/state"
)

const intLabsFeed = `name: labs
version: 1
table: labs
match:
  glob: "labs_*.csv"
format:
  type: csv
columns:
  - {name: lab_id, type: string, required: true}
  - {name: value, type: int}
`

// TestRejectsRetry re-runs a file's rejected rows after its definition is fixed: only
// those rows are sent, under their own batch ids; an unchanged definition re-runs nothing.
func TestRejectsRetry(t *testing.T) {
	f := newAgentFixture(t, "labs.yaml", intLabsFeed)
	content := []byte("lab_id,value\nL1,1\nL2,2.5\nL3,3.5\nL4,4\n")
	writeFile(t, filepath.Join(f.exports, "labs_1.csv"), content)
	sha := hashOf(content)
	rejectsDir := filepath.Join(f.state, "rejects")
	jsonl := filepath.Join(rejectsDir, sha+".jsonl")
	sum := func(ids []string) (n int64) {
		f.hub.mu.Lock()
		defer f.hub.mu.Unlock()
		for _, id := range ids {
			n += f.hub.rows[id]
		}
		return n
	}

	ag := startAgent(t, f.config())
	waitFor(t, "file done", func() bool { return ag.status(t, sha) == state.StatusDone })
	if d, r := f.hub.batchesOf("labs_1.csv"), f.hub.rejectsOf("labs_1.csv"); len(d) != 1 || sum(d) != 2 || len(r) != 1 || sum(r) != 2 {
		t.Fatalf("first ingest: %d data batches with %d rows, %d reject batches with %d rows; want 1/2 and 1/2", len(d), sum(d), len(r), sum(r))
	}

	// The definition has not changed: nothing is re-run and the rejects stay.
	if err := quarantine.RequestRetry(rejectsDir, sha); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unchanged-definition retry request taken", func() bool {
		p, _ := quarantine.PendingRetries(rejectsDir)
		return len(p) == 0
	})
	if b, err := os.ReadFile(jsonl); err != nil || strings.Count(string(b), "\n") != 2 {
		t.Fatalf("rejects after a refused retry: %q %v", b, err)
	}
	ag.stop()

	// Fixed: value is a float, version 2. Rows 2 and 3 are re-run, and only they.
	writeFile(t, filepath.Join(f.feeds, "labs.yaml"), []byte(strings.Replace(strings.Replace(intLabsFeed, "type: int", "type: float", 1), "version: 1", "version: 2", 1)))
	if err := quarantine.RequestRetry(rejectsDir, sha); err != nil {
		t.Fatal(err)
	}
	ag = startAgent(t, f.config())
	waitFor(t, "rejected rows re-run and committed", func() bool {
		p, _ := quarantine.PendingRetries(rejectsDir)
		return len(p) == 0 && ag.status(t, sha) == state.StatusDone && len(f.hub.batchesOf("labs_1.csv")) == 2
	})
	var rows []int64
	ids := f.hub.batchesOf("labs_1.csv")
	f.hub.mu.Lock()
	for _, id := range ids {
		rows = append(rows, f.hub.positions[id]...)
	}
	f.hub.mu.Unlock()
	slices.Sort(rows)
	if !slices.Equal(rows, []int64{1, 2, 3, 4}) {
		t.Errorf("data batches hold source rows %v, want 1..4 once each", rows)
	}
	if r := f.hub.rejectsOf("labs_1.csv"); len(r) != 1 {
		t.Errorf("reject batches %v, want only the first ingest's (nothing is rejected now)", r)
	}
	if _, err := os.Stat(jsonl); !os.IsNotExist(err) {
		t.Errorf("rejects JSONL of a fully resolved file still there: %v", err)
	}
	rec, _, _ := ag.File(sha)
	if rec.Rows != 4 || rec.Rejects != 0 || len(rec.Batches) != 4 {
		t.Errorf("record after retry: rows %d, rejects %d, %d batches; want 4, 0, 4 (data, rejects, retry, archive chunk)", rec.Rows, rec.Rejects, len(rec.Batches))
	}

	// Nothing left to re-run: a second request changes nothing.
	if err := quarantine.RequestRetry(rejectsDir, sha); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second retry request taken", func() bool {
		p, _ := quarantine.PendingRetries(rejectsDir)
		return len(p) == 0
	})
	if d := f.hub.batchesOf("labs_1.csv"); len(d) != 2 {
		t.Errorf("a retry with nothing to re-run sent batches: %v", d)
	}
}
