package query

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/internal/testlake"
)

// TestCommitNoticeRefreshes checks the commit notice path on real mosquitto: with a
// poll interval of an hour, only a hub's notice can make a new commit queryable, and
// it must within seconds; a malformed notice is counted and ignored.
func TestCommitNoticeRefreshes(t *testing.T) {
	ctx := context.Background()
	brokerURL := stack.Mosquitto(t)
	dir := t.TempDir()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	testlake.CreateLabTable(t, cat.Iceberg(), "lab_results")
	testlake.AppendLabRows(t, cat.Iceberg(), "lab_results", 0, 100)

	reg := prometheus.NewRegistry()
	cfg := Config{Listen: "127.0.0.1:0", CacheDir: filepath.Join(dir, "cache"), RefreshInterval: time.Hour}
	svc, err := New(ctx, cfg, cat.Iceberg(), catalog.DefaultNamespace, slog.New(slog.DiscardHandler), reg,
		WithTableLocator(cat), WithCommitNotices(NoticeConfig{Broker: brokerURL}))
	if err != nil {
		t.Fatal(err)
	}
	defer runService(ctx, t, svc)()

	hub := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("test-hub").SetCleanSession(true))
	if tok := hub.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer hub.Disconnect(100)
	publish := func(topic string, payload []byte) {
		t.Helper()
		if tok := hub.Publish(topic, 0, false, payload); tok.Wait() && tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	count := func() int64 {
		rows, err := svc.Engine().Query(ctx, "SELECT count(*) FROM lab_results")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var n int64
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	// The listener subscribes asynchronously: wait until it has, as its counter shows
	// once a first notice arrives.
	notice, err := protocol.EncodeCommitNotice(protocol.CommitNotice{Table: "lab_results", Hub: "test-hub", CommittedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for counterValue(t, svc.noticesIn.WithLabelValues("ok")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the query node received no commit notice within 15s")
		}
		publish(protocol.CommitNoticeTopic("lab_results"), notice)
		time.Sleep(100 * time.Millisecond)
	}

	testlake.AppendLabRows(t, cat.Iceberg(), "lab_results", 100, 150)
	start := time.Now()
	publish(protocol.CommitNoticeTopic("lab_results"), notice)
	for count() != 150 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("commit not queryable 5s after its notice (poll interval 1h): %d rows", count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("queryable %s after the notice", time.Since(start).Round(time.Millisecond))

	publish(protocol.CommitNoticeTopic("lab_results"), []byte(`{"v":"1.1","table":"other"}`))
	deadline = time.Now().Add(5 * time.Second)
	for counterValue(t, svc.noticesIn.WithLabelValues("malformed")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a notice naming another table than its topic was not counted as malformed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, err := svc.refreshes.GetMetricWithLabelValues(engine.TriggerNotice)
	if err != nil {
		t.Fatal(err)
	}
	if n := histogramCount(t, h.(prometheus.Histogram)); n == 0 {
		t.Error("refresh_duration_seconds{trigger=notice} has no sample")
	}
}

func histogramCount(tb testing.TB, h prometheus.Histogram) uint64 {
	tb.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
