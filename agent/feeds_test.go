package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
)

// labFeedV is labFeed at another version, with a column added from version 2 on so the
// batches tell the versions apart.
func labFeedV(version int) string {
	s := strings.Replace(labFeed, "version: 1", fmt.Sprintf("version: %d", version), 1)
	if version >= 2 {
		s += "  - {name: unit, type: string}\n"
	}
	return s
}

const vitalsFeed = `name: vitals
version: 1
table: vitals
match:
  glob: "*vitals*"
format:
  type: csv
columns:
  - {name: patient_id, type: string, required: true}
  - {name: pulse, type: int}
`

// headerLog records the headers of the batches the play hub commits.
type headerLog struct {
	mu      sync.Mutex
	headers []protocol.BatchHeader
}

func (l *headerLog) decide(h protocol.BatchHeader) *protocol.Ack {
	l.mu.Lock()
	l.headers = append(l.headers, h)
	l.mu.Unlock()
	return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted, Table: h.Table, SnapshotID: 1}
}

// versionOf returns the feed version of the batches whose source file starts with
// prefix, or 0 before any arrived.
func (l *headerLog) versionOf(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.headers {
		if strings.HasPrefix(h.SourceFile, prefix) {
			return h.FeedVersion
		}
	}
	return 0
}

// lastConfig returns the config state of the newest status the play hub saw.
func (h *playHub) lastConfig() *protocol.ConfigState {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.statuses) - 1; i >= 0; i-- {
		if c := h.statuses[i].Config; c != nil {
			return c
		}
	}
	return nil
}

func (h *playHub) pushConfig(tb testing.TB, feeds ...protocol.ConfigFeed) string {
	tb.Helper()
	b, err := protocol.EncodeConfig(protocol.Config{Time: time.Now().UTC(), Feeds: feeds})
	if err != nil {
		tb.Fatal(err)
	}
	if tok := h.client.Publish(protocol.ConfigTopic("t1", "fac1", "agent-e2e"), 1, true, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("publishing config: %v", tok.Error())
	}
	return protocol.ConfigRevision(feeds)
}

func running(c *protocol.ConfigState) string {
	var parts []string
	for _, f := range c.Feeds {
		parts = append(parts, fmt.Sprintf("%s@%d/%s", f.Name, f.Version, f.Source))
	}
	return strings.Join(parts, " ")
}

// TestPushedConfig pushes feed definitions to a running agent through a real broker: a
// good config is applied and the next file uses the new version; a config with one bad
// feed applies the good one, keeps the last good version of the bad one and reports the
// error; a restart without a broker runs the last good set.
func TestPushedConfig(t *testing.T) {
	srv := stack.Start(t, stack.NameMosquitto)
	broker := srv.Get("MQTT_URL")
	f := &agentFixture{hub: newPlayHub(t, broker), broker: broker, root: t.TempDir()}
	var log headerLog
	f.hub.setDecide(log.decide)
	f.exports, f.feeds, f.state = filepath.Join(f.root, "exports"), filepath.Join(f.root, "feeds"), filepath.Join(f.root, "state")
	for _, d := range []string{f.exports, f.feeds} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(f.feeds, "lab_results.yaml"), []byte(labFeedV(1)))
	cfg := f.config()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	ag := runAgent(t, a)

	writeFile(t, filepath.Join(f.exports, "lab_results_1.csv"), []byte("lab_id,patient_id,result_value\nL1,P1,1\n"))
	waitFor(t, "file 1 at the hub", func() bool { return log.versionOf("lab_results_1.csv") != 0 })
	if v := log.versionOf("lab_results_1.csv"); v != 1 {
		t.Fatalf("file 1 read with version %d, want the local version 1", v)
	}

	// A good config: version 2 overrides the local version 1.
	rev2 := f.hub.pushConfig(t, protocol.NewConfigFeed("lab_results", 2, labFeedV(2)))
	waitFor(t, "config 2 applied in status", func() bool { c := f.hub.lastConfig(); return c != nil && c.Applied == rev2 })
	if got := running(f.hub.lastConfig()); got != "lab_results@2/pushed" {
		t.Errorf("running %q", got)
	}
	writeFile(t, filepath.Join(f.exports, "lab_results_2.csv"), []byte("lab_id,patient_id,result_value,unit\nL2,P2,2,g/dL\n"))
	waitFor(t, "file 2 at the hub", func() bool { return log.versionOf("lab_results_2.csv") != 0 })
	if v := log.versionOf("lab_results_2.csv"); v != 2 {
		t.Fatalf("file 2 read with version %d, want the pushed version 2", v)
	}

	// A config with a bad lab_results version 3 and a good new feed.
	bad := strings.Replace(labFeedV(3), "type: float", "type: blob", 1)
	rev3 := f.hub.pushConfig(t, protocol.NewConfigFeed("lab_results", 3, bad), protocol.NewConfigFeed("vitals", 1, vitalsFeed))
	waitFor(t, "config 3 refused in status", func() bool { c := f.hub.lastConfig(); return c != nil && c.Refused == rev3 })
	c := f.hub.lastConfig()
	if c.Applied != rev3 || len(c.Errors) != 1 || c.Errors[0].Feed != "lab_results" || c.Errors[0].Version != 3 ||
		!strings.Contains(c.Errors[0].Error, "blob") {
		t.Errorf("config state %+v", c)
	}
	if got := running(c); got != "lab_results@2/pushed vitals@1/pushed" {
		t.Errorf("running %q, want the last good lab_results and the new vitals", got)
	}
	waitFor(t, "config_refused event", func() bool { return f.hub.sawEvent(protocol.EventConfigRefused, "") })
	writeFile(t, filepath.Join(f.exports, "lab_results_3.csv"), []byte("lab_id,patient_id,result_value,unit\nL3,P3,3,g/dL\n"))
	writeFile(t, filepath.Join(f.exports, "vitals_1.csv"), []byte("patient_id,pulse\nP1,70\n"))
	waitFor(t, "file 3 and vitals at the hub", func() bool {
		return log.versionOf("lab_results_3.csv") != 0 && log.versionOf("vitals_1.csv") != 0
	})
	if v := log.versionOf("lab_results_3.csv"); v != 2 {
		t.Errorf("file 3 read with version %d, want the last good version 2", v)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			label := ""
			for _, l := range m.GetLabel() {
				label += l.GetName() + "=" + l.GetValue()
			}
			got[mf.GetName()] = fmt.Sprintf("%s %v", label, v)
		}
	}
	if got["medlake_agent_configs_refused_total"] != " 1" || got["medlake_agent_config_revision_info"] != "revision="+rev3+" 1" ||
		got["medlake_agent_configs_applied_total"] != " 2" {
		t.Errorf("config metrics: refused %q, revision %q, applied %q", got["medlake_agent_configs_refused_total"],
			got["medlake_agent_config_revision_info"], got["medlake_agent_configs_applied_total"])
	}

	// Restart with the broker down: the last good set runs from state_dir.
	ag.stop()
	srv.Stop(t)
	a2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	cs := a2.configState()
	if got := running(cs); got != "lab_results@2/pushed vitals@1/pushed" {
		t.Errorf("after restart running %q", got)
	}
	if cs.Applied != rev3 || cs.Refused != rev3 || len(cs.Errors) != 1 {
		t.Errorf("after restart config state %+v", cs)
	}
}

// TestNoFeedsWaitsForConfig: an agent without local feeds takes no file until the hub
// pushes definitions, so nothing is quarantined as matching no feed.
func TestNoFeedsWaitsForConfig(t *testing.T) {
	f := newAgentFixture(t, "README.txt", "no feeds here\n")
	var log headerLog
	f.hub.setDecide(log.decide)
	cfg := f.config()
	cfg.FeedsDir = ""
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a)
	content := []byte("patient_id,pulse\nP1,70\n")
	writeFile(t, filepath.Join(f.exports, "vitals_1.csv"), content)
	time.Sleep(time.Second) // several quiet periods and rescans
	if st, _, _ := a.File(hashOf(content)); st.Status != "" {
		t.Fatalf("file taken with no feeds: %s %s", st.Status, st.Reason)
	}
	f.hub.pushConfig(t, protocol.NewConfigFeed("vitals", 1, vitalsFeed))
	waitFor(t, "vitals at the hub", func() bool { return log.versionOf("vitals_1.csv") == 1 })
}

func runAgent(tb testing.TB, a *Agent) runningAgent {
	tb.Helper()
	ra := runningAgent{Agent: a}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	ra.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("agent run: %v", err)
			}
		})
	}
	tb.Cleanup(ra.stop)
	return ra
}

// TestResumeKeepsStartedVersion: a file interrupted while spooling under version 1 is
// re-read after a restart with version 1, though version 2 was pushed meanwhile, so
// its batch ids are the ones already sent and nothing reaches the hub twice.
func TestResumeKeepsStartedVersion(t *testing.T) {
	f := newAgentFixture(t, "lab_results.yaml", labFeedV(1))
	var log headerLog
	f.hub.setDecide(nil) // hold acks: the spool fills
	cfg := f.config()
	cfg.BatchRows, cfg.SpoolMaxBatches = 1, 1
	writeFile(t, filepath.Join(f.exports, "lab_results.csv"), []byte("lab_id,patient_id,result_value\nL1,P1,1\nL2,P2,2\nL3,P3,3\n"))
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ag := runAgent(t, a)
	waitFor(t, "first batch sent and the spool full", func() bool {
		return len(f.hub.batchesOf("lab_results.csv")) == 1 && a.spool.Stats().Full
	})
	rev := f.hub.pushConfig(t, protocol.NewConfigFeed("lab_results", 2, labFeedV(2)))
	waitFor(t, "version 2 applied", func() bool { return a.configState().Applied == rev })
	ag.stop()

	f.hub.setDecide(log.decide)
	cfg.SpoolMaxBatches = 100
	a2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := running(a2.configState()); got != "lab_results@2/pushed" {
		t.Fatalf("after restart running %q", got)
	}
	runAgent(t, a2)
	sha := hashOf([]byte("lab_id,patient_id,result_value\nL1,P1,1\nL2,P2,2\nL3,P3,3\n"))
	waitFor(t, "file done", func() bool { st, _, _ := a2.File(sha); return st.Status == "done" })
	if ids := f.hub.batchesOf("lab_results.csv"); len(ids) != 3 {
		t.Errorf("hub saw %d distinct batches, want 3 (one per row, version 1 throughout)", len(ids))
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, h := range log.headers {
		if h.FeedVersion != 1 {
			t.Errorf("batch %s part %d sent with version %d, want 1", h.BatchID, h.Part, h.FeedVersion)
		}
	}
}
