package hub

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/hub/broker"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

func TestMain(m *testing.M) { stack.Main(m) }

// waitLimit bounds how long a test waits for an ack before failing instead of hanging;
// it is a deadline, not a timing assertion.
const waitLimit = 2 * time.Minute

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// embeddedBroker runs hub/broker on a free loopback port until the test ends.
func embeddedBroker(tb testing.TB) string {
	tb.Helper()
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0"}, testLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("broker: %v", err)
		}
	})
	<-b.Ready()
	return b.URL()
}

func feedsDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lab_results.yaml"), readGolden(tb, "lab_results.yaml"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return dir
}

type hubUnderTest struct {
	cat *catalog.Catalog
	reg *prometheus.Registry
	def *feed.Definition
}

// startHub opens the catalog and runs an Ingester until the test ends.
func startHub(tb testing.TB, brokerURL string, catCfg catalog.Config) *hubUnderTest {
	tb.Helper()
	return startHubID(tb, brokerURL, catCfg, "hub-test")
}

func startHubID(tb testing.TB, brokerURL string, catCfg catalog.Config, clientID string) *hubUnderTest {
	tb.Helper()
	return startHubFeeds(tb, brokerURL, catCfg, clientID, feedsDir(tb))
}

// startHubFeeds is startHubID with the feed definitions in dir; def is the first of them.
func startHubFeeds(tb testing.TB, brokerURL string, catCfg catalog.Config, clientID, dir string) *hubUnderTest {
	tb.Helper()
	defs, err := feed.ParseFS(os.DirFS(dir))
	if err != nil {
		tb.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), catCfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cat.Close() })
	reg := prometheus.NewRegistry()
	runIngester(tb, Config{Broker: brokerURL, ClientID: clientID, FeedsDir: dir, CommitInterval: 200 * time.Millisecond}, cat, reg)
	return &hubUnderTest{cat: cat, reg: reg, def: defs[0]}
}

// runIngester starts a hub with cfg on cat, stops it when the test ends (before cleanups
// registered earlier, such as closing cat) and returns once it is subscribed.
func runIngester(tb testing.TB, cfg Config, cat *catalog.Catalog, reg prometheus.Registerer) *Ingester {
	tb.Helper()
	in, err := New(cfg, cat, testLogger(tb), reg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("hub Run: %v", err)
		}
	})
	// A batch published before the hub subscribes reaches no one; a real agent re-sends
	// it, a test's stand-in does not.
	select {
	case <-in.Ready():
	case <-time.After(30 * time.Second):
		tb.Fatal("hub not subscribed 30 s after start")
	}
	return in
}

// agent is a paho client standing in for an agent's sender: it publishes frames and
// collects acks. (The real agent is tested on its own side.)
type agent struct {
	tb    testing.TB
	c     paho.Client
	topic protocol.Topic
	mu    sync.Mutex
	acks  map[string]protocol.Ack
	got   chan struct{}
}

func newAgent(tb testing.TB, brokerURL string, topic protocol.Topic) *agent {
	tb.Helper()
	a := &agent{tb: tb, topic: topic, acks: map[string]protocol.Ack{}, got: make(chan struct{}, 1000)}
	o := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(topic.Agent).SetCleanSession(true)
	a.c = paho.NewClient(o)
	if tok := a.c.Connect(); tok.Wait() && tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
	tb.Cleanup(func() { a.c.Disconnect(100) })
	tok := a.c.Subscribe(protocol.AckTopic(topic.Tenant, topic.Facility, topic.Agent), 1, func(_ paho.Client, m paho.Message) {
		ack, err := protocol.DecodeAck(m.Payload())
		if err != nil {
			tb.Errorf("undecodable ack %q: %v", m.Payload(), err)
			return
		}
		a.mu.Lock()
		a.acks[ack.BatchID] = ack
		a.mu.Unlock()
		a.got <- struct{}{}
	})
	if tok.Wait() && tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
	return a
}

func (a *agent) send(frames ...[]byte) {
	a.tb.Helper()
	for _, f := range frames {
		tok := a.c.Publish(protocol.BatchTopic(a.topic.Tenant, a.topic.Facility, a.topic.Agent), 1, false, f)
		if tok.Wait() && tok.Error() != nil {
			a.tb.Fatal(tok.Error())
		}
	}
}

// await waits for an ack of each id and returns them; a previous ack for an id is
// forgotten first so re-sends are awaited afresh.
func (a *agent) await(ids ...string) map[string]protocol.Ack {
	a.tb.Helper()
	deadline := time.After(waitLimit)
	for {
		a.mu.Lock()
		out := map[string]protocol.Ack{}
		for _, id := range ids {
			if ack, ok := a.acks[id]; ok {
				out[id] = ack
			}
		}
		a.mu.Unlock()
		if len(out) == len(ids) {
			a.mu.Lock()
			for _, id := range ids {
				delete(a.acks, id)
			}
			a.mu.Unlock()
			return out
		}
		select {
		case <-a.got:
		case <-deadline:
			a.tb.Fatalf("acks for %d of %d batches after %s; have %v", len(out), len(ids), waitLimit, out)
		}
	}
}

// scanTable reads the whole table and returns rows per _batch_id and the records.
func scanTable(tb testing.TB, cat *catalog.Catalog, name string) (int64, map[string]int64, arrow.Table) {
	tb.Helper()
	ctx := context.Background()
	tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(name))
	if err != nil {
		tb.Fatalf("loading table %s: %v", name, err)
	}
	at, err := tbl.Scan().ToArrowTable(ctx)
	if err != nil {
		tb.Fatalf("scanning table %s: %v", name, err)
	}
	tb.Cleanup(at.Release)
	perBatch := map[string]int64{}
	idx := at.Schema().FieldIndices(feed.ColBatchID)
	if len(idx) != 1 {
		tb.Fatalf("table %s has no %s column: %s", name, feed.ColBatchID, at.Schema())
	}
	for _, chunk := range at.Column(idx[0]).Data().Chunks() {
		s := chunk.(*array.String)
		for i := range s.Len() {
			perBatch[s.Value(i)]++
		}
	}
	return at.NumRows(), perBatch, at
}

// column returns the distinct string values of a column.
func distinct(tb testing.TB, at arrow.Table, col string) map[string]bool {
	tb.Helper()
	out := map[string]bool{}
	idx := at.Schema().FieldIndices(col)
	for _, chunk := range at.Column(idx[0]).Data().Chunks() {
		switch a := chunk.(type) {
		case *array.String:
			for i := range a.Len() {
				out[a.Value(i)] = true
			}
		case *array.Int64:
			for i := range a.Len() {
				out[a.ValueStr(i)] = true
			}
		}
	}
	return out
}

func TestIngestEmbeddedSQLite(t *testing.T) {
	dir := t.TempDir()
	testIngest(t, embeddedBroker(t), catalog.Config{DataDir: dir})
}

func TestIngestMosquittoPostgresMinIO(t *testing.T) {
	mqttURL := stack.Mosquitto(t)
	dsn := stack.Postgres(t)
	s3 := stack.MinIO(t)
	testIngest(t, mqttURL, catalog.Config{URI: dsn, Warehouse: "s3://" + s3.Bucket + "/lake",
		S3Endpoint: s3.Endpoint, S3Region: s3.Region, S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey})
}

func testIngest(t *testing.T, brokerURL string, catCfg catalog.Config) {
	h := startHub(t, brokerURL, catCfg)
	def := h.def
	ag := newAgent(t, brokerURL, goldenTopic)

	// Two files, three batches.
	a1 := labFrame(t, def, goldenTopic, "fileA", 1, 1000, nil)
	a2 := labFrame(t, def, goldenTopic, "fileA", 2, 500, nil)
	b1 := labFrame(t, def, goldenTopic, "fileB", 1, 7, nil)
	ids := []string{batchID(t, a1), batchID(t, a2), batchID(t, b1)}
	ag.send(a1, a2, b1)
	acks := ag.await(ids...)
	for id, ack := range acks {
		if ack.Status != protocol.AckCommitted || ack.SnapshotID == 0 || ack.Table != "lab_results" {
			t.Errorf("ack of %s = %+v, want committed to lab_results with a snapshot", id, ack)
		}
	}
	n, perBatch, at := scanTable(t, h.cat, "lab_results")
	if n != 1507 || perBatch[ids[0]] != 1000 || perBatch[ids[1]] != 500 || perBatch[ids[2]] != 7 {
		t.Fatalf("table has %d rows, per batch %v; want 1507 = 1000+500+7", n, perBatch)
	}
	for col, want := range map[string]string{feed.ColTenant: "t0001", feed.ColFacility: "f000001", feed.ColAgent: "agent-f000001",
		feed.ColFeed: def.Name, feed.ColFeedVersion: "3"} {
		if got := distinct(t, at, col); len(got) != 1 || !got[want] {
			t.Errorf("column %s has values %v, want only %q", col, got, want)
		}
	}
	if got := distinct(t, at, feed.ColSourceFile); len(got) != 2 || !got["fileA.csv.gz"] || !got["fileB.csv.gz"] {
		t.Errorf("column %s has %v, want fileA.csv.gz and fileB.csv.gz", feed.ColSourceFile, got)
	}

	// Rejections come back on the topic's ack topic, naming the batch.
	bad := map[string][]byte{
		"unknown protocol version": readGolden(t, "batch_unknown_major.bin"),
		"arrow":                    readGolden(t, "batch_corrupt_arrow.bin"),
		"unknown table":            readGolden(t, "batch_unknown_table.bin"),
	}
	for want, frame := range bad {
		ag.send(frame)
		id := batchID(t, frame)
		ack := ag.await(id)[id]
		if ack.Status != protocol.AckRejected || !strings.Contains(ack.Reason, want) {
			t.Errorf("ack of bad batch %s = %+v, want rejected with reason containing %q", id, ack, want)
		}
	}

	// A re-sent batch is acked again, from the ledger, without new rows.
	ag.send(a1)
	again := ag.await(ids[0])[ids[0]]
	if again.Status != protocol.AckCommitted || again.SnapshotID != acks[ids[0]].SnapshotID {
		t.Errorf("re-sent batch ack = %+v, want committed with the first snapshot %d", again, acks[ids[0]].SnapshotID)
	}

	// A hub that died after its Iceberg commit but before the ledger write left a
	// snapshot naming batch c1 but no ledger entry: re-sending c1 must not add rows.
	c1 := labFrame(t, def, goldenTopic, "fileC", 1, 11, nil)
	cid := batchID(t, c1)
	commitWithoutLedger(t, h.cat, c1)
	ag.send(c1)
	if ack := ag.await(cid)[cid]; ack.Status != protocol.AckCommitted {
		t.Errorf("re-sent crashed batch ack = %+v, want committed", ack)
	}
	n, perBatch, _ = scanTable(t, h.cat, "lab_results")
	if n != 1518 || perBatch[ids[0]] != 1000 || perBatch[cid] != 11 {
		t.Fatalf("after re-sends table has %d rows, per batch %v; want 1518 with each batch once", n, perBatch)
	}
	got, err := h.cat.CommittedBatches(context.Background(), append(ids, cid))
	if err != nil || len(got) != 4 {
		t.Fatalf("ledger has %d of 4 batches (%v): %v", len(got), err, got)
	}

	if v := counterSum(t, h.reg, "medlake_hub_batches_rejected_total"); v != 3 {
		t.Errorf("batches_rejected_total = %v, want 3", v)
	}
	if v := counterSum(t, h.reg, "medlake_hub_rows_committed_total"); v != 1507 {
		t.Errorf("rows_committed_total = %v, want 1507", v)
	}
}

// counterSum sums a counter family over its labels.
func counterSum(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// commitWithoutLedger appends a frame's rows the way a committer does, including the
// snapshot summary, but writes no ledger entry: the state a crash leaves.
func commitWithoutLedger(tb testing.TB, cat *catalog.Catalog, frame []byte) {
	tb.Helper()
	fs := goldenFeeds(tb)
	b, rej := decodeBatch(goldenTopic, frame, fs, memory.DefaultAllocator)
	if rej != nil {
		tb.Fatal(rej.reason)
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	c := newCommitter(b.def, cat, "crashed-hub", Config{}.WithDefaults(), testLogger(tb), m, nil)
	c.buf = []*batch{b}
	ctx := context.Background()
	tbl, err := c.loadOrCreate(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	at, err := c.tableRecords(c.tableSchema(), time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	defer at.Release()
	txn := tbl.NewTransaction()
	if err := txn.AppendTable(ctx, at, 1<<20, iceberg.Properties{PropBatchIDs: b.hdr.BatchID}); err != nil {
		tb.Fatal(err)
	}
	if _, err := txn.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	c.clearBuffer()
}
