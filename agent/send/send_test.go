package send

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/medlake/medlake/agent/spool"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
)

const (
	tenant   = "t1"
	facility = "fac1"
	agentID  = "agent-send-test"
)

var hubSeq atomic.Int64

// testHub plays the hub: it receives batch frames and publishes acks.
type testHub struct {
	tb     testing.TB
	client mqtt.Client
	frames chan *protocol.Batch
	status chan protocol.Status
}

func newTestHub(tb testing.TB, broker string) *testHub {
	tb.Helper()
	h := &testHub{tb: tb, frames: make(chan *protocol.Batch, 100), status: make(chan protocol.Status, 100)}
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("test-hub-%d", hubSeq.Add(1))).SetCleanSession(true)
	h.client = mqtt.NewClient(o)
	if tok := h.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("hub connect: %v", tok.Error())
	}
	tb.Cleanup(func() { h.client.Disconnect(100) })
	sub := func(topic string, fn mqtt.MessageHandler) {
		if tok := h.client.Subscribe(topic, 1, fn); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			tb.Fatalf("hub subscribe %s: %v", topic, tok.Error())
		}
	}
	sub("medlake/v1/+/+/+/batch", func(_ mqtt.Client, m mqtt.Message) {
		b, err := protocol.DecodeBatch(m.Payload())
		if err != nil {
			tb.Errorf("hub: undecodable batch: %v", err)
			return
		}
		h.frames <- b
	})
	sub(protocol.StatusTopic(tenant, facility, agentID), func(_ mqtt.Client, m mqtt.Message) {
		st, err := protocol.DecodeStatus(m.Payload())
		if err != nil {
			tb.Errorf("hub: undecodable status: %v", err)
			return
		}
		h.status <- st
	})
	return h
}

func (h *testHub) ack(a protocol.Ack) {
	h.tb.Helper()
	b, err := protocol.EncodeAck(a)
	if err != nil {
		h.tb.Fatal(err)
	}
	if tok := h.client.Publish(protocol.AckTopic(tenant, facility, agentID), 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		h.tb.Fatalf("hub publish ack: %v", tok.Error())
	}
}

func (h *testHub) next() *protocol.Batch {
	h.tb.Helper()
	select {
	case b := <-h.frames:
		return b
	case <-time.After(30 * time.Second):
		h.tb.Fatal("hub: no batch within 30s")
		return nil
	}
}

func fillSpool(tb testing.TB, sp *spool.Spool, n int) []string {
	tb.Helper()
	sum := sha256.Sum256([]byte(tb.Name()))
	src := hex.EncodeToString(sum[:])
	var ids []string
	for part := 1; part <= n; part++ {
		id := protocol.BatchID(src, "lab_results", 1, part)
		frame, err := protocol.EncodeBatch(protocol.BatchHeader{
			BatchID: id, Tenant: tenant, Facility: facility, Agent: agentID, Feed: "lab_results", FeedVersion: 1,
			Table: "lab_results", SourceFile: "x.csv", SourceSHA256: src, Part: part, Parts: n, Rows: 1, CreatedAt: time.Now().UTC(),
		}, []byte(strings.Repeat("p", part)))
		if err != nil {
			tb.Fatal(err)
		}
		if err := sp.Put(context.Background(), id, frame); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

type ackLog struct {
	mu   sync.Mutex
	acks []protocol.Ack
}

func (l *ackLog) record(_ context.Context, a protocol.Ack) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks = append(l.acks, a)
	return nil
}

func (l *ackLog) ids() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.acks {
		out = append(out, a.BatchID)
	}
	return out
}

func startSender(tb testing.TB, cfg Config, sp Spool, onAck AckFunc) (*Sender, func()) {
	tb.Helper()
	s, err := New(cfg, sp, onAck, func() protocol.Status { return protocol.Status{SpoolBatches: len(sp.List())} }, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("sender run: %v", err)
		}
	}
	tb.Cleanup(func() {
		select {
		case <-ctx.Done():
		default:
			stop()
		}
	})
	return s, stop
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testConfig(broker string) Config {
	c := DefaultConfig()
	c.Broker, c.Tenant, c.Facility, c.Agent = broker, tenant, facility, agentID
	return c
}

func TestSendWindowAcksAndDeadLetter(t *testing.T) {
	broker := stack.Mosquitto(t)
	hub := newTestHub(t, broker)
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(dir, "spool"), DeadLetterDir: filepath.Join(dir, "dead"), MaxBytes: 1 << 20, MaxBatches: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := fillSpool(t, sp, 5)
	cfg := testConfig(broker)
	cfg.MaxInflight = 2
	var log ackLog
	s, stop := startSender(t, cfg, sp, log.record)

	// The window holds: two batches out, none acked, the rest wait in the spool.
	first := []*protocol.Batch{hub.next(), hub.next()}
	if st := s.Stats(); st.InFlight != 2 || st.Published != 2 {
		t.Fatalf("stats with a full window = %+v, want 2 in flight and 2 published", st)
	}
	if got := []string{first[0].Header.BatchID, first[1].Header.BatchID}; !slices.Equal(got, ids[:2]) {
		t.Fatalf("first batches %v, want oldest %v", got, ids[:2])
	}
	rejected := ids[1]
	seen := map[string]bool{}
	for b := range slices.Values(first) {
		seen[b.Header.BatchID] = true
	}
	hub.ack(protocol.Ack{BatchID: ids[0], Status: protocol.AckCommitted, Table: "lab_results", SnapshotID: 1})
	hub.ack(protocol.Ack{BatchID: rejected, Status: protocol.AckRejected, Reason: "column lab_id: required value missing"})
	// An ack for a batch this agent never had is ignored.
	hub.ack(protocol.Ack{BatchID: "feedfacefeedfacefeedfacefeedface", Status: protocol.AckCommitted})
	for len(seen) < 5 {
		b := hub.next()
		if !seen[b.Header.BatchID] {
			seen[b.Header.BatchID] = true
			hub.ack(protocol.Ack{BatchID: b.Header.BatchID, Status: protocol.AckCommitted})
		}
	}
	waitFor(t, "spool to drain", func() bool { st := s.Stats(); return len(sp.List()) == 0 && st.Committed+st.Rejected == 5 })
	waitFor(t, "unknown ack to be ignored", func() bool { return s.Stats().Ignored >= 1 })
	if got := log.ids(); len(got) != 5 {
		t.Fatalf("ack callback saw %v, want the 5 spooled batches once each", got)
	}
	reason, err := os.ReadFile(filepath.Join(dir, "dead", rejected+".reason.txt"))
	if err != nil || !strings.Contains(string(reason), "required value missing") {
		t.Fatalf("dead-letter reason %q: %v", reason, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dead", rejected+".mlb")); err != nil {
		t.Fatalf("rejected batch not in dead-letter: %v", err)
	}
	st := s.Stats()
	if st.Committed != 4 || st.Rejected != 1 || st.InFlight != 0 {
		t.Fatalf("stats = %+v", st)
	}
	// The dead_letter event reaches the hub in a status report.
	for found := false; !found; {
		select {
		case status := <-hub.status:
			for _, ev := range status.Events {
				if ev.Kind == protocol.EventDeadLetter && ev.BatchID == rejected {
					found = true
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no status with the dead_letter event")
		}
	}
	stop()
	// A graceful stop leaves a retained offline status.
	fresh := newTestHub(t, broker)
	for {
		select {
		case status := <-fresh.status:
			if status.State == protocol.StateOffline {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no retained offline status after stop")
		}
	}
}

func TestResendWithoutHubAck(t *testing.T) {
	broker := stack.Mosquitto(t)
	hub := newTestHub(t, broker)
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(dir, "spool"), DeadLetterDir: filepath.Join(dir, "dead"), MaxBytes: 1 << 20, MaxBatches: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := fillSpool(t, sp, 1)
	cfg := testConfig(broker)
	cfg.AckTimeout = 100 * time.Millisecond
	var log ackLog
	s, _ := startSender(t, cfg, sp, log.record)

	// The broker delivered it (PUBACK done) but the hub never answers: the agent must
	// send it again, and keep it until the hub's ack arrives.
	if b := hub.next(); b.Header.BatchID != ids[0] {
		t.Fatalf("got %s", b.Header.BatchID)
	}
	if b := hub.next(); b.Header.BatchID != ids[0] {
		t.Fatalf("re-send got %s", b.Header.BatchID)
	}
	// The second copy may be the broker's own redelivery on a slow machine: wait for the
	// sender's re-send itself.
	waitFor(t, "the sender to re-send after the ack timeout", func() bool { return s.Stats().Resent >= 1 })
	if !sp.Has(ids[0]) {
		t.Fatal("batch left the spool without a hub ack")
	}
	hub.ack(protocol.Ack{BatchID: ids[0], Status: protocol.AckCommitted})
	waitFor(t, "committed batch to leave the spool", func() bool { return !sp.Has(ids[0]) && s.Stats().Committed == 1 })
	if st := s.Stats(); st.Resent < 1 || st.Committed != 1 {
		t.Fatalf("stats = %+v", st)
	}
	// A duplicate ack (the hub answered both copies) is ignored.
	hub.ack(protocol.Ack{BatchID: ids[0], Status: protocol.AckCommitted})
	waitFor(t, "duplicate ack to be ignored", func() bool { return s.Stats().Ignored >= 1 })
	if got := log.ids(); len(got) != 1 {
		t.Fatalf("ack callback called %d times, want 1", len(got))
	}
}

func TestConfigValidate(t *testing.T) {
	base := testConfig("tcp://127.0.0.1:1")
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"bad agent", func(c *Config) { c.Agent = "a/b" }},
		{"no broker", func(c *Config) { c.Broker = "" }},
		{"no window", func(c *Config) { c.MaxInflight = 0 }},
		{"no timeout", func(c *Config) { c.AckTimeout = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			if _, err := New(c, &spool.Spool{}, nil, nil, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestSlowHubNoResendStorm: a hub that is alive but answers each batch only after ten
// times the ack timeout floor. Re-sends back off per batch, so each batch is re-sent a
// handful of times rather than once per floor, and every batch is committed once.
func TestSlowHubNoResendStorm(t *testing.T) {
	broker := stack.Mosquitto(t)
	hub := newTestHub(t, broker)
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(dir, "spool"), DeadLetterDir: filepath.Join(dir, "dead"), MaxBytes: 1 << 20, MaxBatches: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const batches, floor, answerAfter = 4, 100 * time.Millisecond, time.Second
	ids := fillSpool(t, sp, batches)
	cfg := testConfig(broker)
	cfg.AckTimeout, cfg.AckTimeoutMax = floor, 10*time.Second
	var log ackLog
	s, _ := startSender(t, cfg, sp, log.record)

	// The hub answers every copy it receives, answerAfter after the first copy of a batch.
	first := map[string]time.Time{}
	copies := map[string]int{}
	var answers sync.WaitGroup
	defer answers.Wait()
	deadline := time.After(30 * time.Second)
	for len(log.ids()) < batches {
		select {
		case b := <-hub.frames:
			id := b.Header.BatchID
			if !slices.Contains(ids, id) {
				continue // another test's batch, redelivered by the shared broker
			}
			copies[id]++
			if _, ok := first[id]; !ok {
				first[id] = time.Now()
				answers.Go(func() {
					time.Sleep(answerAfter)
					hub.ack(protocol.Ack{BatchID: id, Status: protocol.AckCommitted})
				})
			}
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("acked %d of %d batches in 30 s", len(log.ids()), batches)
		}
	}
	// Without backoff a batch would go out answerAfter/floor = 10 times; with it the
	// waits are 0.1, 0.1, 0.2, 0.4, 0.8 s (±20%): at most 6 sends in the first second.
	for _, id := range ids {
		if copies[id] > 6 {
			t.Errorf("batch %s sent %d times in %s, want at most 6", id, copies[id], answerAfter)
		}
	}
	waitFor(t, "every batch committed", func() bool { return s.Stats().Committed == batches })
	if st := s.Stats(); st.Resent > 5*batches {
		t.Errorf("stats = %+v, want %d committed and at most %d re-sends", st, batches, 5*batches)
	}
	if len(sp.List()) != 0 {
		t.Errorf("spool still holds %v", sp.List())
	}
}
