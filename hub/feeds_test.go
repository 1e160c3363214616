package hub

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// configWatcher subscribes to an agent's config topic, as the agent's sender does.
type configWatcher struct {
	mu      sync.Mutex
	configs []protocol.Config
}

func watchConfig(tb testing.TB, c paho.Client, t protocol.Topic) *configWatcher {
	tb.Helper()
	w := &configWatcher{}
	tok := c.Subscribe(protocol.ConfigTopic(t.Tenant, t.Facility, t.Agent), 1, func(_ paho.Client, m paho.Message) {
		cfg, err := protocol.DecodeConfig(m.Payload())
		if err != nil {
			tb.Errorf("undecodable config: %v", err)
			return
		}
		w.mu.Lock()
		w.configs = append(w.configs, cfg)
		w.mu.Unlock()
	})
	if tok.Wait() && tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
	return w
}

// await returns the first config received carrying feed name at version.
func (w *configWatcher) await(tb testing.TB, name string, version int) protocol.Config {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		for _, c := range w.configs {
			for _, f := range c.Feeds {
				if f.Name == name && f.Version == version {
					w.mu.Unlock()
					return c
				}
			}
		}
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("no config with feed %s version %d within %s", name, version, waitLimit)
	return protocol.Config{}
}

func publishStatus(tb testing.TB, c paho.Client, t protocol.Topic, cs *protocol.ConfigState) {
	tb.Helper()
	b, err := protocol.EncodeStatus(protocol.Status{Agent: t.Agent, Tenant: t.Tenant, Facility: t.Facility,
		State: protocol.StateOnline, Time: time.Now().UTC(), Config: cs})
	if err != nil {
		tb.Fatal(err)
	}
	if tok := c.Publish(protocol.StatusTopic(t.Tenant, t.Facility, t.Agent), 1, true, b); tok.Wait() && tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
}

// TestFeedsFromCatalog: the hub seeds the catalog from feeds_dir, pushes the newest
// definitions to an agent it learns from its status, picks up a version applied to the
// catalog after it started, pushes it, and accepts batches of the new and the old
// version while rejecting an unknown one.
func TestFeedsFromCatalog(t *testing.T) {
	brokerURL := embeddedBroker(t)
	cat, err := catalog.Open(context.Background(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	ctx := context.Background()
	runIngester(t, Config{Broker: brokerURL, ClientID: "hub-feeds", FeedsDir: feedsDir(t),
		CommitInterval: 100 * time.Millisecond, FeedsPollInterval: 100 * time.Millisecond}, cat, prometheus.NewRegistry())

	v3 := loadGoldenFeed(t)[0]
	if fv, ok, err := cat.Feed(ctx, v3.Name, 0); err != nil || !ok || fv.Version != v3.Version {
		t.Fatalf("feeds_dir not seeded into the catalog: %+v %v %v", fv, ok, err)
	}
	topic := protocol.Topic{Tenant: "t0001", Facility: "f000001", Agent: "agent-f000001", Kind: protocol.KindBatch}
	ag := newAgent(t, brokerURL, topic)
	w := watchConfig(t, ag.c, topic)
	publishStatus(t, ag.c, topic, &protocol.ConfigState{})
	first := w.await(t, v3.Name, 3)

	// A new version applied while the hub runs: same columns, another mapping.
	text := strings.Replace(string(readGolden(t, "lab_results.yaml")), "version: 3", "version: 4", 1) + "# version 4: reviewed\n"
	v4, err := feed.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cat.ApplyFeed(ctx, catalog.FeedVersion{Name: v4.Name, Version: 4, Table: v4.Table, Definition: text, AppliedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	second := w.await(t, v4.Name, 4)
	if second.Revision == first.Revision || second.Feeds[0].Definition != text {
		t.Errorf("second config %+v", second)
	}

	// The agent reports the new revision: the hub does not publish again.
	publishStatus(t, ag.c, topic, &protocol.ConfigState{Applied: second.Revision})

	newFrame := labFrame(t, v4, topic, "new-version", 1, 5, nil)
	oldFrame := labFrame(t, v3, topic, "old-version", 1, 5, nil)
	unknown := labFrame(t, v4, topic, "unknown-version", 1, 5, func(h *protocol.BatchHeader) {
		h.FeedVersion = 9
		h.BatchID = protocol.BatchID(h.SourceSHA256, h.Feed, 9, 1)
	})
	ag.send(newFrame, oldFrame, unknown)
	acks := ag.await(batchID(t, newFrame), batchID(t, oldFrame), batchID(t, unknown))
	for _, f := range [][]byte{newFrame, oldFrame} {
		if a := acks[batchID(t, f)]; a.Status != protocol.AckCommitted {
			t.Errorf("batch %s: %+v", batchID(t, f), a)
		}
	}
	if a := acks[batchID(t, unknown)]; a.Status != protocol.AckRejected || !strings.Contains(a.Reason, "version 9 is not in the catalog") {
		t.Errorf("unknown version: %+v", a)
	}
	_, _, at := scanTable(t, cat, "lab_results")
	if got := distinct(t, at, feed.ColFeedVersion); !got["3"] || !got["4"] || len(got) != 2 {
		t.Errorf("%s values %v, want 3 and 4", feed.ColFeedVersion, got)
	}
	w.mu.Lock()
	n := len(w.configs)
	w.mu.Unlock()
	if n != 2 {
		t.Errorf("agent got %d configs, want 2 (one per revision)", n)
	}

	// Another hub starting with the same, now older, feeds_dir leaves the catalog's
	// newer version in place.
	in2, err := New(Config{Broker: brokerURL, ClientID: "hub-feeds-2", FeedsDir: feedsDir(t)}, cat, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("a feeds_dir older than the catalog must not stop the hub: %v", err)
	}
	if d := in2.fs.Load().byName[v4.Name]; d == nil || d.Version != 4 {
		t.Errorf("after seeding an older feeds_dir the newest version is %v, want 4", d)
	}
}

// TestUnknownVersionReloads: a batch naming a version applied after the hub's last
// catalog read (another hub pushed it first) makes the hub reload instead of rejecting.
func TestUnknownVersionReloads(t *testing.T) {
	brokerURL := embeddedBroker(t)
	cat, err := catalog.Open(context.Background(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	ctx := context.Background()
	runIngester(t, Config{Broker: brokerURL, ClientID: "hub-reload", FeedsDir: feedsDir(t),
		CommitInterval: 100 * time.Millisecond, FeedsPollInterval: time.Hour}, cat, prometheus.NewRegistry())
	text := strings.Replace(string(readGolden(t, "lab_results.yaml")), "version: 3", "version: 5", 1)
	v5, err := feed.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(minRefreshGap) // the start's load is not recent any more
	if _, err := cat.ApplyFeed(ctx, catalog.FeedVersion{Name: v5.Name, Version: 5, Table: v5.Table, Definition: text}); err != nil {
		t.Fatal(err)
	}
	topic := protocol.Topic{Tenant: "t0001", Facility: "f000001", Agent: "agent-f000001", Kind: protocol.KindBatch}
	ag := newAgent(t, brokerURL, topic)
	frame := labFrame(t, v5, topic, "just-applied", 1, 5, nil)
	ag.send(frame)
	if a := ag.await(batchID(t, frame))[batchID(t, frame)]; a.Status != protocol.AckCommitted {
		t.Fatalf("batch of a version applied after the hub's last poll: %+v", a)
	}
}
