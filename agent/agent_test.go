package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

const labFeed = `name: lab_results
version: 1
table: lab_results
match:
  glob: "*lab_results*"
format:
  type: csv
keys: [lab_id]
columns:
  - {name: lab_id, type: string, required: true}
  - {name: patient_id, type: string}
  - {name: result_value, type: float}
`

var hubSeq atomic.Int64

// playHub is the test's hub: it decodes every batch and answers with the ack that
// decide returns (nil holds the ack back).
type playHub struct {
	tb     testing.TB
	client mqtt.Client

	mu       sync.Mutex
	received map[string][]string // batch id → source files, one per delivery
	entries  map[string][]string // batch id → entries its rows come from
	order    []string            // batch ids in arrival order, with repeats
	decide   func(protocol.BatchHeader) *protocol.Ack
	statuses []protocol.Status
	rejects  map[string]int64 // reject batch id → rows
	rows     map[string]int64 // every batch id → rows
	// archives are the source files' chunks by SHA-256 and part; holdArchives keeps
	// their acks back.
	archives     map[string]map[int][]byte
	archiveParts map[string]int
	holdArchives bool
	positions    map[string][]int64 // every batch id → its _row values
}

func newPlayHub(tb testing.TB, broker string) *playHub {
	tb.Helper()
	h := &playHub{tb: tb, received: map[string][]string{}, entries: map[string][]string{}, rejects: map[string]int64{}, rows: map[string]int64{}, positions: map[string][]int64{},
		archives: map[string]map[int][]byte{}, archiveParts: map[string]int{}}
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("play-hub-%d", hubSeq.Add(1))).SetCleanSession(true).SetOrderMatters(false)
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
			tb.Errorf("hub: undecodable batch on %s: %v", m.Topic(), err)
			return
		}
		if b.Header.Table == protocol.ArchiveTable {
			// The source file itself, kept whole: stored and acknowledged at once.
			h.mu.Lock()
			if h.archives[b.Header.SourceSHA256] == nil {
				h.archives[b.Header.SourceSHA256] = map[int][]byte{}
			}
			h.archives[b.Header.SourceSHA256][b.Header.Part] = b.Payload
			h.archiveParts[b.Header.SourceSHA256] = b.Header.Parts
			hold := h.holdArchives
			h.mu.Unlock()
			if !hold {
				h.ack(protocol.Ack{BatchID: b.Header.BatchID, Status: protocol.AckCommitted, Table: b.Header.Table})
			}
			return
		}
		entries := map[string]bool{}
		var positions []int64
		if sc, recs, err := protocol.DecodeRecords(b.Payload, nil); err != nil {
			tb.Errorf("hub: batch %s payload: %v", b.Header.BatchID, err)
		} else {
			col := sc.FieldIndices(feed.ColSourceFile)
			for _, r := range recs {
				if len(col) == 1 {
					src := r.Column(col[0]).(*array.String)
					for i := range src.Len() {
						entries[src.Value(i)] = true
					}
				}
				if rc, ok := r.Column(int(r.NumCols()) - 1).(*array.Int64); ok {
					positions = append(positions, rc.Int64Values()...)
				}
				r.Release()
			}
		}
		h.mu.Lock()
		h.entries[b.Header.BatchID] = slices.Sorted(maps.Keys(entries))
		if b.Header.Table == feed.RejectsTable {
			h.rejects[b.Header.BatchID] = b.Header.Rows
		}
		h.rows[b.Header.BatchID] = b.Header.Rows
		h.positions[b.Header.BatchID] = positions
		h.received[b.Header.BatchID] = append(h.received[b.Header.BatchID], b.Header.SourceFile)
		h.order = append(h.order, b.Header.BatchID)
		decide := h.decide
		h.mu.Unlock()
		if decide != nil {
			if a := decide(b.Header); a != nil {
				h.ack(*a)
			}
		}
	})
	sub("medlake/v1/+/+/+/status", func(_ mqtt.Client, m mqtt.Message) {
		st, err := protocol.DecodeStatus(m.Payload())
		if err != nil {
			tb.Errorf("hub: undecodable status: %v", err)
			return
		}
		h.mu.Lock()
		h.statuses = append(h.statuses, st)
		h.mu.Unlock()
	})
	return h
}

func (h *playHub) setDecide(fn func(protocol.BatchHeader) *protocol.Ack) {
	h.mu.Lock()
	h.decide = fn
	h.mu.Unlock()
}

func (h *playHub) ack(a protocol.Ack) {
	b, err := protocol.EncodeAck(a)
	if err != nil {
		h.tb.Errorf("encoding ack: %v", err)
		return
	}
	h.client.Publish(protocol.AckTopic("t1", "fac1", "agent-e2e"), 1, false, b)
}

// archive returns the source file with this SHA-256 as its chunks arrived, nil until
// every chunk has.
func (h *playHub) archive(sha string) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	parts := h.archives[sha]
	if len(parts) == 0 || len(parts) != h.archiveParts[sha] {
		return nil
	}
	var out []byte
	for i := 1; i <= len(parts); i++ {
		out = append(out, parts[i]...)
	}
	return out
}

// entriesOf returns the entries (the rows' _source_file values) in a received batch.
func (h *playHub) entriesOf(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.entries[id]
}

// batchesOf returns the distinct data batch ids received whose source file starts with prefix.
func (h *playHub) batchesOf(prefix string) []string { return h.idsOf(prefix, false) }

// rejectsOf returns the distinct reject batch ids received whose source file starts with prefix.
func (h *playHub) rejectsOf(prefix string) []string { return h.idsOf(prefix, true) }

// rejectRows sums the rows of reject batches whose source file starts with prefix.
func (h *playHub) rejectRows(prefix string) int64 {
	var n int64
	for _, id := range h.rejectsOf(prefix) {
		h.mu.Lock()
		n += h.rejects[id]
		h.mu.Unlock()
	}
	return n
}

func (h *playHub) idsOf(prefix string, rejects bool) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for id, srcs := range h.received {
		if _, rj := h.rejects[id]; rj != rejects {
			continue
		}
		if strings.HasPrefix(srcs[0], prefix) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (h *playHub) sawEvent(kind, needle string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.statuses {
		for _, ev := range st.Events {
			if ev.Kind == kind && (strings.Contains(ev.File, needle) || strings.Contains(ev.BatchID, needle)) {
				return true
			}
		}
	}
	return false
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func gz(tb testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

type runningAgent struct {
	*Agent
	stop func()
}

func startAgent(tb testing.TB, cfg Config) runningAgent {
	tb.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := New(cfg, logger, WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		tb.Fatalf("new agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("agent run: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return runningAgent{a, stop}
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (r runningAgent) status(tb testing.TB, sha string) state.Status {
	tb.Helper()
	f, ok, err := r.File(sha)
	if err != nil {
		tb.Fatal(err)
	}
	if !ok {
		return ""
	}
	return f.Status
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestAgentEndToEnd(t *testing.T) {
	broker := stack.Mosquitto(t)
	hub := newPlayHub(t, broker)
	root := t.TempDir()
	exports := filepath.Join(root, "exports")
	feeds := filepath.Join(root, "feeds")
	stateDir := filepath.Join(root, "state")
	for _, d := range []string{exports, feeds} {
		os.MkdirAll(d, 0o755)
	}
	writeFile(t, filepath.Join(feeds, "lab_results.yaml"), []byte(labFeed))

	cfg := DefaultConfig()
	cfg.ID, cfg.Tenant, cfg.Facility, cfg.Broker = "agent-e2e", "t1", "fac1", broker
	cfg.StateDir, cfg.FeedsDir = stateDir, feeds
	cfg.Watch = []WatchConfig{{Path: exports, Recursive: true, Done: DoneMove}}
	cfg.QuietPeriod, cfg.RescanInterval = 100*time.Millisecond, 500*time.Millisecond
	cfg.BatchRows = 2
	cfg.AckTimeout = 10 * time.Minute // no re-sends in this test: every repeat is a finding
	cfg.StatusInterval = time.Hour

	files := map[string][]byte{
		"a_lab_results.csv":    []byte("lab_id,patient_id,result_value\nL1,P1,1.5\nL2,P2,2.5\nL3,P3,3.5\n"),
		"b_lab_results.csv.gz": gz(t, []byte("lab_id,patient_id,result_value\nL4,P4,4\nL5,P5,not-a-number\nL6,P6,6\n")),
		"c_lab_results.csv":    []byte("lab_id,patient_id,result_value\nL7,P7,7\n"),
		"d_lab_results.csv":    []byte("lab_id,patient_id,result_value\nL8,P8,8\n"),
		"notes.txt":            []byte("not a feed\n"),
	}
	os.MkdirAll(filepath.Join(exports, "sub"), 0o755)
	for name, b := range files {
		p := filepath.Join(exports, name)
		if name == "a_lab_results.csv" {
			p = filepath.Join(exports, "sub", name)
		}
		writeFile(t, p, b)
	}
	sha := func(name string) string { return hashOf(files[name]) }

	// Phase 1: the hub holds every ack until it has every batch.
	ag := startAgent(t, cfg)
	waitFor(t, "all batches at the hub", func() bool {
		return len(hub.batchesOf("a_")) == 2 && len(hub.batchesOf("b_")) == 1 && len(hub.batchesOf("c_")) == 1 && len(hub.batchesOf("d_")) == 1 &&
			len(hub.rejectsOf("b_")) == 1
	})
	// b's rejected row travels as a batch of the rejects table; the other files have none.
	if n, all := hub.rejectRows("b_"), len(hub.rejectsOf("")); n != 1 || all != 1 {
		t.Errorf("reject batches: %d rows of b, %d batches in all; want 1 and 1", n, all)
	}
	waitFor(t, "notes.txt quarantined", func() bool { return ag.status(t, sha("notes.txt")) == state.StatusQuarantined })
	for _, name := range []string{"a_lab_results.csv", "b_lab_results.csv.gz", "c_lab_results.csv", "d_lab_results.csv"} {
		if st := ag.status(t, sha(name)); st != state.StatusInProgress {
			t.Fatalf("%s is %q before any ack, want in_progress", name, st)
		}
	}
	if !exists(filepath.Join(exports, "sub", "a_lab_results.csv")) {
		t.Fatal("file moved before the hub acked its batches")
	}
	// Quarantine: a copy with its reason; the original is untouched.
	qName := sha("notes.txt")[:16] + "_notes.txt"
	reason, err := os.ReadFile(filepath.Join(stateDir, "quarantine", qName+".reason.txt"))
	if err != nil || !strings.Contains(string(reason), "matches no feed") {
		t.Fatalf("quarantine reason %q: %v", reason, err)
	}
	if b, err := os.ReadFile(filepath.Join(exports, "notes.txt")); err != nil || string(b) != "not a feed\n" {
		t.Fatalf("quarantined original changed: %q %v", b, err)
	}
	// Row rejects of b are kept with their position and reason.
	rj, err := os.ReadFile(filepath.Join(stateDir, "rejects", sha("b_lab_results.csv.gz")+".jsonl"))
	if err != nil || strings.Count(string(rj), "\n") != 1 || !strings.Contains(string(rj), `"row":2`) || !strings.Contains(string(rj), "result_value") {
		t.Fatalf("rejects of b: %q %v", rj, err)
	}

	// Phase 2: commit a and b, reject c, keep holding d.
	cID := hub.batchesOf("c_")[0]
	dID := hub.batchesOf("d_")[0]
	decide := func(h protocol.BatchHeader) *protocol.Ack {
		switch {
		case h.BatchID == cID:
			return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckRejected, Reason: "table lab_results: test rejection"}
		case h.BatchID == dID:
			return nil
		}
		return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted, Table: "lab_results", SnapshotID: 1}
	}
	hub.setDecide(decide)
	for _, id := range append(append(append(hub.batchesOf("a_"), hub.batchesOf("b_")...), hub.rejectsOf("b_")...), cID) {
		h := protocol.BatchHeader{BatchID: id}
		hub.ack(*decide(h))
	}
	done := filepath.Join(exports, ".medlake-done")
	waitFor(t, "a and b done", func() bool {
		return ag.status(t, sha("a_lab_results.csv")) == state.StatusDone && ag.status(t, sha("b_lab_results.csv.gz")) == state.StatusDone
	})
	for _, p := range []string{filepath.Join(done, "sub", "a_lab_results.csv"), filepath.Join(done, "b_lab_results.csv.gz")} {
		if !exists(p) {
			t.Errorf("%s not in done dir", p)
		}
	}
	if exists(filepath.Join(exports, "sub", "a_lab_results.csv")) {
		t.Error("done file still in the export folder")
	}
	waitFor(t, "c quarantined after its rejection", func() bool { return ag.status(t, sha("c_lab_results.csv")) == state.StatusQuarantined })
	dl, err := os.ReadFile(filepath.Join(stateDir, "dead-letter", cID+".reason.txt"))
	if err != nil || !strings.Contains(string(dl), "test rejection") {
		t.Fatalf("dead-letter reason of %s: %q %v", cID, dl, err)
	}
	if !exists(filepath.Join(stateDir, "dead-letter", cID+".mlb")) {
		t.Fatal("rejected batch not kept in dead-letter")
	}
	if !exists(filepath.Join(exports, "c_lab_results.csv")) {
		t.Fatal("file with a rejected batch was moved")
	}
	waitFor(t, "status events", func() bool {
		return hub.sawEvent(protocol.EventDeadLetter, cID) && hub.sawEvent(protocol.EventQuarantine, "notes.txt") && hub.sawEvent(protocol.EventFileDone, "a_lab_results.csv")
	})
	if st := ag.status(t, sha("d_lab_results.csv")); st != state.StatusInProgress {
		t.Fatalf("d is %q without an ack", st)
	}
	ag.stop()

	// Phase 3: restart on the same state. d is still owed and must go out again; a and
	// b are acked and must not. A copy of a's content under a new name is not ingested again.
	hub.mu.Lock()
	before := len(hub.order)
	hub.mu.Unlock()
	writeFile(t, filepath.Join(exports, "a_copy_lab_results.csv"), files["a_lab_results.csv"])
	hub.setDecide(func(h protocol.BatchHeader) *protocol.Ack {
		return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted}
	})
	ag2 := startAgent(t, cfg)
	waitFor(t, "d done after restart", func() bool { return ag2.status(t, sha("d_lab_results.csv")) == state.StatusDone })
	// Every file done reached the hub whole as well, for the warehouse.
	for _, name := range []string{"a_lab_results.csv", "b_lab_results.csv.gz", "d_lab_results.csv"} {
		if got := hub.archive(sha(name)); !bytes.Equal(got, files[name]) {
			t.Errorf("archive of %s at the hub: %d bytes, want the file's %d", name, len(got), len(files[name]))
		}
	}
	waitFor(t, "duplicate content moved without sending", func() bool { return !exists(filepath.Join(exports, "a_copy_lab_results.csv")) })
	if !exists(filepath.Join(done, "d_lab_results.csv")) || !exists(filepath.Join(done, "a_copy_lab_results.csv")) {
		t.Error("d or the duplicate not in done dir")
	}
	ag2.stop()
	hub.mu.Lock()
	after := append([]string(nil), hub.order[before:]...)
	hub.mu.Unlock()
	for _, id := range after {
		if id != dID {
			t.Errorf("batch %s sent again after restart; only %s was unacked", id, dID)
		}
	}
	if len(after) == 0 {
		t.Error("unacked batch of d was not sent after restart")
	}
	// Nothing is left behind: spool empty, c still dead-lettered.
	left, _ := os.ReadDir(filepath.Join(stateDir, "spool"))
	for _, de := range left {
		if !de.IsDir() {
			t.Errorf("spool still holds %s", de.Name())
		}
	}
}

// TestRestartResumesInterruptedSpooling stops the agent while a file's batches are only
// partly spooled (the spool is full, intake paused) and checks that the next run parses the
// file again and sends every batch, without losing the one already spooled.
func TestRestartResumesInterruptedSpooling(t *testing.T) {
	broker := stack.Mosquitto(t)
	hub := newPlayHub(t, broker)
	root := t.TempDir()
	exports, feeds, stateDir := filepath.Join(root, "exports"), filepath.Join(root, "feeds"), filepath.Join(root, "state")
	os.MkdirAll(exports, 0o755)
	os.MkdirAll(feeds, 0o755)
	writeFile(t, filepath.Join(feeds, "lab_results.yaml"), []byte(labFeed))
	content := []byte("lab_id,patient_id,result_value\nL1,P1,1\nL2,P2,2\nL3,P3,3\n")
	writeFile(t, filepath.Join(exports, "lab_results.csv"), content)
	sha := hashOf(content)

	cfg := DefaultConfig()
	cfg.ID, cfg.Tenant, cfg.Facility, cfg.Broker = "agent-e2e", "t1", "fac1", broker
	cfg.StateDir, cfg.FeedsDir = stateDir, feeds
	cfg.Watch = []WatchConfig{{Path: exports, Done: DoneKeep}}
	cfg.QuietPeriod, cfg.RescanInterval = 100*time.Millisecond, 500*time.Millisecond
	cfg.BatchRows = 1
	cfg.AckTimeout = 10 * time.Minute
	cfg.SpoolMaxBatches = 1

	ag := startAgent(t, cfg)
	waitFor(t, "first batch at the hub and the spool full", func() bool {
		return len(hub.batchesOf("lab_results.csv")) == 1 && ag.spool.Stats().Full
	})
	if st := ag.status(t, sha); st != state.StatusInProgress {
		t.Fatalf("status %q", st)
	}
	ag.stop()
	f, _, _ := func() (state.File, bool, error) {
		db, err := state.Open(filepath.Join(stateDir, "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		return db.Get(sha)
	}()
	if f.Spooled || len(f.Batches) != 4 {
		t.Fatalf("after interruption: spooled %v, %d batches; want unspooled with 4 (3 of rows, 1 archive chunk)", f.Spooled, len(f.Batches))
	}

	hub.setDecide(func(h protocol.BatchHeader) *protocol.Ack {
		return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted}
	})
	cfg.SpoolMaxBatches = 100
	ag2 := startAgent(t, cfg)
	waitFor(t, "file done after restart", func() bool { return ag2.status(t, sha) == state.StatusDone })
	if got := hub.batchesOf("lab_results.csv"); len(got) != 3 {
		t.Fatalf("hub saw %d distinct batches, want 3", len(got))
	}
	if !exists(filepath.Join(exports, "lab_results.csv")) {
		t.Fatal("done: keep moved the file")
	}
}

// agentFixture is a facility folder layout under one temp dir, a feed, and a play hub
// that commits every batch: the setup most agent tests share.
type agentFixture struct {
	hub                                       *playHub
	broker, root, exports, feeds, state, work string
}

func newAgentFixture(t *testing.T, feedName, feedYAML string) *agentFixture {
	t.Helper()
	broker := stack.Mosquitto(t)
	f := &agentFixture{hub: newPlayHub(t, broker), broker: broker, root: t.TempDir()}
	f.hub.setDecide(func(h protocol.BatchHeader) *protocol.Ack {
		return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted, Table: h.Table, SnapshotID: 1}
	})
	f.exports, f.feeds = filepath.Join(f.root, "exports"), filepath.Join(f.root, "feeds")
	f.state, f.work = filepath.Join(f.root, "state"), filepath.Join(f.root, "work")
	for _, d := range []string{f.exports, f.feeds, f.work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(f.feeds, feedName), []byte(feedYAML))
	return f
}

// TestFileDoneOnlyWithArchive: a file whose rows are all committed stays in progress
// while the hub has not acknowledged its archive chunks (a file over one chunk here),
// and is done once it has; the chunks put together are the file.
func TestFileDoneOnlyWithArchive(t *testing.T) {
	f := newAgentFixture(t, "lab_results.yaml", labFeed)
	f.hub.mu.Lock()
	f.hub.holdArchives = true
	f.hub.mu.Unlock()
	var b bytes.Buffer
	b.WriteString("lab_id,patient_id,result_value\n")
	for i := 0; b.Len() <= protocol.ArchiveChunkBytes+1000; i++ {
		fmt.Fprintf(&b, "L%d,P%d,%d.5\n", i, i, i)
	}
	content := b.Bytes()
	writeFile(t, filepath.Join(f.exports, "big_lab_results.csv"), content)
	sha := hashOf(content)
	cfg := f.config()
	cfg.AckTimeout = time.Second
	ag := startAgent(t, cfg)
	waitFor(t, "every chunk at the hub", func() bool {
		f.hub.mu.Lock()
		defer f.hub.mu.Unlock()
		return len(f.hub.archives[sha]) == 2
	})
	time.Sleep(2 * time.Second) // rows long committed; the archive is not
	if st := ag.status(t, sha); st != state.StatusInProgress {
		t.Fatalf("file %s with its archive unacknowledged, want %s", st, state.StatusInProgress)
	}
	f.hub.mu.Lock()
	f.hub.holdArchives = false
	f.hub.mu.Unlock()
	waitFor(t, "file done once its archive is acknowledged", func() bool { return ag.status(t, sha) == state.StatusDone })
	if got := f.hub.archive(sha); !bytes.Equal(got, content) {
		t.Errorf("archive at the hub: %d bytes, want the file's %d", len(got), len(content))
	}
}

// config is an agent watching the fixture's exports with short test timings.
func (f *agentFixture) config() Config {
	cfg := DefaultConfig()
	cfg.ID, cfg.Tenant, cfg.Facility, cfg.Broker = "agent-e2e", "t1", "fac1", f.broker
	cfg.StateDir, cfg.FeedsDir = f.state, f.feeds
	cfg.Watch = []WatchConfig{{Path: f.exports, Done: DoneKeep}}
	cfg.QuietPeriod, cfg.RescanInterval = 100*time.Millisecond, 500*time.Millisecond
	cfg.AckTimeout = 10 * time.Minute
	cfg.StatusInterval = time.Hour
	return cfg
}

// TestTornSpoolFrameReparsed: a spooled frame torn on disk (a power loss cutting its
// tail) is detected when the agent starts again, kept aside in dead-letter with its
// reason, and the file it came from is read again, so the batch still reaches the hub
// and the file is done. Nothing is lost and nothing sent twice under another id.
func TestTornSpoolFrameReparsed(t *testing.T) {
	broker := stack.Mosquitto(t)
	hub := newPlayHub(t, broker)
	root := t.TempDir()
	exports, feeds, stateDir := filepath.Join(root, "exports"), filepath.Join(root, "feeds"), filepath.Join(root, "state")
	os.MkdirAll(exports, 0o755)
	os.MkdirAll(feeds, 0o755)
	writeFile(t, filepath.Join(feeds, "lab_results.yaml"), []byte(labFeed))
	content := []byte("lab_id,patient_id,result_value\nL1,P1,1\nL2,P2,2\nL3,P3,3\n")
	writeFile(t, filepath.Join(exports, "torn_lab_results.csv"), content)
	sha := hashOf(content)

	cfg := DefaultConfig()
	cfg.ID, cfg.Tenant, cfg.Facility, cfg.Broker = "agent-e2e", "t1", "fac1", broker // the play hub acks this agent
	cfg.StateDir, cfg.FeedsDir = stateDir, feeds
	cfg.Watch = []WatchConfig{{Path: exports, Done: DoneKeep}}
	cfg.QuietPeriod, cfg.RescanInterval = 100*time.Millisecond, 500*time.Millisecond
	cfg.BatchRows = 1
	cfg.AckTimeout = 10 * time.Minute
	cfg.ArchiveRaw = false // three frames of rows; an archive chunk's frame is no different

	ag := startAgent(t, cfg)
	waitFor(t, "three batches at the hub", func() bool { return len(hub.batchesOf("torn_")) == 3 })
	ag.stop()

	frames, err := filepath.Glob(filepath.Join(stateDir, "spool", "*.mlb"))
	if err != nil || len(frames) != 3 {
		t.Fatalf("spool holds %v (%v), want 3 frames", frames, err)
	}
	torn := frames[1]
	st, err := os.Stat(torn)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(torn, st.Size()-7); err != nil {
		t.Fatal(err)
	}
	tornID := strings.TrimSuffix(filepath.Base(torn), ".mlb")

	hub.setDecide(func(h protocol.BatchHeader) *protocol.Ack {
		return &protocol.Ack{BatchID: h.BatchID, Status: protocol.AckCommitted}
	})
	ag2 := startAgent(t, cfg)
	defer func() {
		if t.Failed() {
			hub.mu.Lock()
			t.Logf("hub saw %v", hub.order)
			hub.mu.Unlock()
			f, _, _ := ag2.File(sha)
			t.Logf("state %+v; spool %v", f, ag2.spool.List())
		}
	}()
	waitFor(t, "file done after the torn frame", func() bool { return ag2.status(t, sha) == state.StatusDone })
	if got := hub.batchesOf("torn_"); len(got) != 3 || !slices.Contains(got, tornID) {
		t.Fatalf("hub saw batches %v, want the same 3 ids, %s among them", got, tornID)
	}
	reasons, _ := filepath.Glob(filepath.Join(stateDir, "dead-letter", "corrupt-*"+tornID+".reason.txt"))
	if len(reasons) != 1 {
		t.Fatalf("no dead-letter reason for the torn frame %s", tornID)
	}
	if b, _ := os.ReadFile(reasons[0]); !strings.Contains(string(b), "corrupt spool frame") {
		t.Errorf("reason = %q", b)
	}
	if n := len(ag2.spool.List()); n != 0 {
		t.Errorf("spool holds %d batches after the file is done", n)
	}
}
