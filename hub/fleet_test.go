package hub

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// TestDeliveryVisibility checks what the hub makes of an agent's status and a batch's
// times: the fleet view and its gauges, the commit lag and freshness histograms, the
// last-commit gauge and the snapshot's oldest source mtime for the query role.
func TestDeliveryVisibility(t *testing.T) {
	brokerURL := embeddedBroker(t)
	cat, err := catalog.Open(context.Background(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	dir := feedsDir(t)
	defs, err := feed.ParseFS(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	in := runIngester(t, Config{Broker: brokerURL, ClientID: "hub-fleet", FeedsDir: dir, CommitInterval: 100 * time.Millisecond}, cat, reg)

	now := time.Now().UTC().Truncate(time.Millisecond)
	st := protocol.Status{Agent: goldenTopic.Agent, Tenant: goldenTopic.Tenant, Facility: goldenTopic.Facility,
		State: protocol.StateOnline, Time: now, SpoolBatches: 2, SpoolBytes: 4096, FilesWaiting: 3,
		OldestUnacked: now.Add(-90 * time.Second), Quarantined: 1}
	payload, err := protocol.EncodeStatus(st)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("status-publisher"))
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(protocol.StatusTopic(goldenTopic.Tenant, goldenTopic.Facility, goldenTopic.Agent), 1, false, payload); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	mtime, created := now.Add(-5*time.Second), now.Add(-2*time.Second)
	frame := labFrame(t, defs[0], goldenTopic, "fresh", 1, 10, func(h *protocol.BatchHeader) {
		h.SourceModTime, h.CreatedAt = mtime, created
	})
	ag := newAgent(t, brokerURL, goldenTopic)
	ag.send(frame)
	ack := ag.await(batchID(t, frame))[batchID(t, frame)]
	if ack.Status != protocol.AckCommitted {
		t.Fatalf("ack = %+v", ack)
	}

	var fleet []AgentStatus
	for deadline := time.Now().Add(waitLimit); len(fleet) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		fleet = in.Fleet()
	}
	if len(fleet) != 1 {
		t.Fatalf("fleet = %+v, want the one agent", fleet)
	}
	a := fleet[0]
	if a.Agent != goldenTopic.Agent || a.SpoolBatches != 2 || a.FilesWaiting != 3 || a.Quarantined != 1 || a.State != protocol.StateOnline {
		t.Errorf("fleet entry = %+v", a)
	}
	if age := a.OldestUnackedAge(time.Now()); age < 90*time.Second || age > 90*time.Second+waitLimit {
		t.Errorf("oldest unacked age = %s, want 90 s plus the time since the status", age)
	}

	got := gather(t, reg)
	if v := got["medlake_hub_agent_oldest_unacked_age_seconds"]; v < 90 {
		t.Errorf("oldest unacked age gauge = %v, want >= 90", v)
	}
	if v := got["medlake_hub_agent_files_waiting"]; v != 3 {
		t.Errorf("files waiting gauge = %v, want 3", v)
	}
	if v := got["medlake_hub_freshness_committed_seconds_count"]; v != 1 {
		t.Errorf("freshness observations = %v, want 1", v)
	}
	// The commit came after the batch was created, so freshness is at least the 5 s
	// between the file's mtime and now, and commit lag at least the 2 s since created_at.
	if v := got["medlake_hub_freshness_committed_seconds_sum"]; v < 5 || v > 5+waitLimit.Seconds() {
		t.Errorf("freshness = %v s, want 5 s plus the commit's delay", v)
	}
	if v := got["medlake_hub_commit_lag_seconds_sum"]; v < 2 || v > 2+waitLimit.Seconds() {
		t.Errorf("commit lag = %v s, want 2 s plus the commit's delay", v)
	}
	if v := got["medlake_hub_table_last_commit_timestamp_seconds"]; v < float64(now.Unix()) {
		t.Errorf("last commit = %v, want after %d", v, now.Unix())
	}
	if _, ok := got["medlake_hub_commit_pending_age_seconds"]; !ok {
		t.Errorf("no pending age for the table")
	}
	if p := in.Pending()["lab_results"]; !p.IsZero() {
		t.Errorf("pending since %s after the commit, want none", p)
	}

	tbl, err := cat.Iceberg().LoadTable(context.Background(), cat.TableIdent("lab_results"))
	if err != nil {
		t.Fatal(err)
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil || snap.Summary == nil || snap.Summary.Properties[PropSourceMtimeMin] != strconv.FormatInt(mtime.UnixMilli(), 10) {
		t.Errorf("snapshot summary = %+v, want %s = %d", snap, PropSourceMtimeMin, mtime.UnixMilli())
	}
}

// gather returns every gauge and counter, and each histogram's _count and _sum, summed
// over labels.
func gather(tb testing.TB, reg *prometheus.Registry) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetHistogram() != nil:
				out[mf.GetName()+"_count"] += float64(m.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"] += m.GetHistogram().GetSampleSum()
			case m.GetGauge() != nil:
				out[mf.GetName()] += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[mf.GetName()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}
