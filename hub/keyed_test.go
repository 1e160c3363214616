package hub

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

const patientsUpsert = `
name: patients
version: 1
table: patients
match: {glob: "patients*.csv"}
format: {type: csv}
drift: ignore
mode: upsert
keys: [mrn]
sequence: ver
columns:
  - {name: mrn, type: string, required: true}
  - {name: name, type: string}
  - {name: ver, type: int}
`

const patientsCDC = `
name: admits
version: 1
table: admits
match: {glob: "admits*.csv"}
format: {type: csv}
drift: ignore
mode: cdc
keys: [mrn]
sequence: ver
op: {column: op}
columns:
  - {name: mrn, type: string, required: true}
  - {name: name, type: string}
  - {name: ver, type: int}
  - {name: op, type: string}
`

const patientsDrop = `
name: visits
version: 1
table: visits
match: {glob: "visits*.csv"}
format: {type: csv}
drift: ignore
duplicates: drop
keys: [mrn]
columns:
  - {name: mrn, type: string, required: true}
  - {name: name, type: string}
  - {name: ver, type: int}
`

const patientsNoSeq = `
name: beds
version: 1
table: beds
match: {glob: "beds*.csv"}
format: {type: csv}
drift: ignore
mode: upsert
keys: [mrn]
columns:
  - {name: mrn, type: string, required: true}
  - {name: name, type: string}
  - {name: ver, type: int}
`

// prow is one source row of the test feeds; op is used by the cdc feed only.
type prow struct {
	mrn, name string
	ver       int64
	op        string
}

// keyedBatch builds a validated batch of rows from facility fac, as the message
// handler hands it to a committer.
func keyedBatch(tb testing.TB, def *feed.Definition, fac, id string, rows []prow) *batch {
	tb.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, def.BatchSchema())
	defer b.Release()
	for i, r := range rows {
		for j, f := range def.BatchSchema().Fields() {
			switch f.Name {
			case "mrn":
				b.Field(j).(*array.StringBuilder).Append(r.mrn)
			case "name":
				b.Field(j).(*array.StringBuilder).Append(r.name)
			case "ver":
				b.Field(j).(*array.Int64Builder).Append(r.ver)
			case "op":
				b.Field(j).(*array.StringBuilder).Append(r.op)
			case feed.ColSourceFile:
				b.Field(j).(*array.StringBuilder).Append(id + ".csv")
			case feed.ColRow:
				b.Field(j).(*array.Int64Builder).Append(int64(i + 1))
			default:
				tb.Fatalf("unexpected column %s", f.Name)
			}
		}
	}
	rec := b.NewRecordBatch()
	topic := protocol.Topic{Tenant: "acme", Facility: fac, Agent: "agent-" + fac}
	return &batch{topic: topic, def: def, recs: []arrow.RecordBatch{rec}, rows: int64(len(rows)), received: time.Now(),
		hdr: protocol.BatchHeader{BatchID: id, Tenant: topic.Tenant, Facility: fac, Agent: topic.Agent, Feed: def.Name,
			FeedVersion: def.Version, Table: def.Table, SourceFile: id + ".csv", SourceSHA256: fmt.Sprintf("%064d", len(id)),
			Part: 1, Parts: 1, Rows: int64(len(rows)), CreatedAt: time.Now()}}
}

// testCommitter is a committer of def's table whose acks are collected.
type testCommitter struct {
	*committer
	mu   sync.Mutex
	acks []protocol.Ack
}

func newTestCommitter(tb testing.TB, def *feed.Definition, cat *catalog.Catalog, hubID string) *testCommitter {
	tb.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	tc := &testCommitter{}
	tc.committer = newCommitter(def, cat, hubID, Config{CommitInterval: time.Second, CommitMaxRows: 1 << 20, CommitMaxBytes: 1 << 30},
		testLogger(tb), m, func(_ context.Context, acks []ackOut) {
			tc.mu.Lock()
			defer tc.mu.Unlock()
			for _, a := range acks {
				tc.acks = append(tc.acks, a.ack)
			}
		})
	return tc
}

// commitBatches buffers bs and flushes them as one commit.
func (tc *testCommitter) commitBatches(tb testing.TB, bs ...*batch) error {
	tb.Helper()
	for _, b := range bs {
		tc.buf = append(tc.buf, b)
		tc.bufRows += b.rows
	}
	return tc.flush(context.Background())
}

// currentState reads the table through iceberg-go's scan (deletes applied) as
// "facility/mrn" → "name@ver", failing on a key held twice.
func currentState(tb testing.TB, cat *catalog.Catalog, name string) (map[string]string, int64) {
	tb.Helper()
	_, _, at := scanTable(tb, cat, name)
	out := map[string]string{}
	col := func(n string) []arrow.Array {
		idx := at.Schema().FieldIndices(n)
		if len(idx) != 1 {
			tb.Fatalf("table %s has no column %s", name, n)
		}
		return at.Column(idx[0]).Data().Chunks()
	}
	facs, mrns, names, vers := col(feed.ColFacility), col("mrn"), col("name"), col("ver")
	for c := range facs {
		for i := range facs[c].Len() {
			k := facs[c].(*array.String).Value(i) + "/" + mrns[c].(*array.String).Value(i)
			v := names[c].(*array.String).Value(i) + "@" + fmt.Sprint(vers[c].(*array.Int64).Value(i))
			if prev, dup := out[k]; dup {
				tb.Fatalf("table %s holds key %s twice: %s and %s", name, k, prev, v)
			}
			out[k] = v
		}
	}
	tbl, err := cat.Iceberg().LoadTable(context.Background(), cat.TableIdent(name))
	if err != nil {
		tb.Fatal(err)
	}
	var snap int64
	if s := tbl.CurrentSnapshot(); s != nil {
		snap = s.SnapshotID
	}
	return out, snap
}

func parseDef(tb testing.TB, text string) *feed.Definition {
	tb.Helper()
	def, err := feed.Parse([]byte(text))
	if err != nil {
		tb.Fatal(err)
	}
	return def
}

func TestKeyedSQLite(t *testing.T) {
	testKeyed(t, catalog.Config{DataDir: t.TempDir()})
}

func TestKeyedPostgres(t *testing.T) {
	testKeyed(t, catalog.Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
}

// keyedStep is one commit of testKeyed: batches (id → rows from fac0001) and the
// table's state after it.
type keyedStep struct {
	name    string
	batches map[string][]prow
	crash   bool // the hub dies between the lake commit and the state update
	want    map[string]string
	// newSnapshot says whether the step must create a snapshot.
	newSnapshot bool
}

func testKeyed(t *testing.T, cfg catalog.Config) {
	cat, err := catalog.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	tables := []struct {
		def   string
		steps []keyedStep
	}{
		{patientsUpsert, []keyedStep{
			{name: "insert", batches: map[string][]prow{"u1": {{"A", "ann", 1, ""}, {"B", "bob", 1, ""}}},
				want: map[string]string{"fac0001/A": "ann@1", "fac0001/B": "bob@1"}, newSnapshot: true},
			{name: "update and a late row", batches: map[string][]prow{"u2": {{"A", "anna", 2, ""}, {"B", "bobby", 0, ""}}},
				want: map[string]string{"fac0001/A": "anna@2", "fac0001/B": "bob@1"}, newSnapshot: true},
			{name: "identical record re-sent in a new file", batches: map[string][]prow{"u3": {{"A", "anna", 2, ""}}},
				want: map[string]string{"fac0001/A": "anna@2", "fac0001/B": "bob@1"}},
			{name: "batch re-sent", batches: map[string][]prow{"u2": {{"A", "anna", 2, ""}, {"B", "bobby", 0, ""}}},
				want: map[string]string{"fac0001/A": "anna@2", "fac0001/B": "bob@1"}},
			{name: "out of order in one commit", batches: map[string][]prow{"u4": {{"A", "a4", 4, ""}, {"A", "a3", 3, ""}}, "u5": {{"C", "cy", 1, ""}}},
				want: map[string]string{"fac0001/A": "a4@4", "fac0001/B": "bob@1", "fac0001/C": "cy@1"}, newSnapshot: true},
			{name: "crash after the lake commit", batches: map[string][]prow{"u6": {{"B", "b5", 5, ""}}}, crash: true,
				want: map[string]string{"fac0001/A": "a4@4", "fac0001/B": "b5@5", "fac0001/C": "cy@1"}, newSnapshot: true},
			{name: "after the crash, a late row of the repaired key", batches: map[string][]prow{"u7": {{"B", "b2", 2, ""}, {"C", "c2", 2, ""}}},
				want: map[string]string{"fac0001/A": "a4@4", "fac0001/B": "b5@5", "fac0001/C": "c2@2"}, newSnapshot: true},
		}},
		{patientsCDC, []keyedStep{
			{name: "inserts", batches: map[string][]prow{"c1": {{"A", "ann", 1, "I"}, {"B", "bob", 1, "I"}, {"C", "cy", 1, "I"}}},
				want: map[string]string{"fac0001/A": "ann@1", "fac0001/B": "bob@1", "fac0001/C": "cy@1"}, newSnapshot: true},
			{name: "delete and update", batches: map[string][]prow{"c2": {{"A", "", 2, "D"}, {"B", "bobby", 2, "U"}}},
				want: map[string]string{"fac0001/B": "bobby@2", "fac0001/C": "cy@1"}, newSnapshot: true},
			{name: "late insert of a deleted key", batches: map[string][]prow{"c3": {{"A", "ann", 1, "I"}}},
				want: map[string]string{"fac0001/B": "bobby@2", "fac0001/C": "cy@1"}},
			{name: "delete of an absent key", batches: map[string][]prow{"c4": {{"Z", "", 9, "delete"}}},
				want: map[string]string{"fac0001/B": "bobby@2", "fac0001/C": "cy@1"}},
			{name: "reinsert newer than the delete", batches: map[string][]prow{"c5": {{"A", "again", 3, "I"}, {"C", "", 2, "D"}, {"C", "cz", 3, "I"}}},
				want: map[string]string{"fac0001/A": "again@3", "fac0001/B": "bobby@2", "fac0001/C": "cz@3"}, newSnapshot: true},
		}},
		{patientsDrop, []keyedStep{
			{name: "first rows", batches: map[string][]prow{"d1": {{"A", "ann", 1, ""}, {"A", "ann2", 2, ""}, {"B", "bob", 1, ""}}},
				want: map[string]string{"fac0001/A": "ann@1", "fac0001/B": "bob@1"}, newSnapshot: true},
			{name: "seen keys dropped", batches: map[string][]prow{"d2": {{"A", "x", 5, ""}, {"C", "cy", 1, ""}}},
				want: map[string]string{"fac0001/A": "ann@1", "fac0001/B": "bob@1", "fac0001/C": "cy@1"}, newSnapshot: true},
		}},
		{patientsNoSeq, []keyedStep{
			{name: "insert", batches: map[string][]prow{"n1": {{"A", "ann", 7, ""}}},
				want: map[string]string{"fac0001/A": "ann@7"}, newSnapshot: true},
			{name: "arrival order wins", batches: map[string][]prow{"n2": {{"A", "older", 1, ""}, {"A", "newest", 0, ""}}},
				want: map[string]string{"fac0001/A": "newest@0"}, newSnapshot: true},
		}},
	}
	for _, tt := range tables {
		def := parseDef(t, tt.def)
		t.Run(def.Table, func(t *testing.T) {
			tc := newTestCommitter(t, def, cat, "hub-a")
			if _, err := tc.loadOrCreate(t.Context()); err != nil {
				t.Fatal(err)
			}
			_, prev := currentState(t, cat, def.Table)
			for _, st := range tt.steps {
				var bs []*batch
				for _, id := range slices.Sorted(maps.Keys(st.batches)) {
					bs = append(bs, keyedBatch(t, def, "fac0001", def.Table+"-"+id, st.batches[id]))
				}
				if st.crash {
					tc.crashAfterLakeCommit = func() bool { return true }
					if err := tc.commitBatches(t, bs...); err == nil {
						t.Fatalf("%s: the injected crash did not stop the commit", st.name)
					}
					// The dead hub's buffer is gone; another hub commits next.
					tc.clearBuffer()
					tc = newTestCommitter(t, def, cat, "hub-b")
				} else if err := tc.commitBatches(t, bs...); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				got, snap := currentState(t, cat, def.Table)
				if !maps.Equal(got, st.want) {
					t.Errorf("%s: state %v, want %v", st.name, got, st.want)
				}
				if (snap != prev) != st.newSnapshot {
					t.Errorf("%s: new snapshot = %v, want %v", st.name, snap != prev, st.newSnapshot)
				}
				prev = snap
			}
		})
	}
}

// TestKeyedTwoHubs: two hubs commit updates of the same keys to one upsert table at
// once, each with rising sequences interleaved with the other's; the table ends with
// the highest sequence of every key, whoever committed it and in whatever order.
func TestKeyedTwoHubs(t *testing.T) {
	cat, err := catalog.Open(t.Context(), catalog.Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	def := parseDef(t, patientsUpsert)
	keys := []string{"A", "B", "C", "D"}
	const rounds = 12
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for h := range 2 {
		tc := newTestCommitter(t, def, cat, fmt.Sprintf("hub-%d", h))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// hub 0 sends even sequences rising, hub 1 odd ones falling: late rows race
			// newer ones.
			for r := range rounds {
				var rows []prow
				for _, k := range keys {
					v := int64(2 * r)
					if h == 1 {
						v = int64(2*(rounds-1-r) + 1)
					}
					rows = append(rows, prow{k, fmt.Sprintf("h%d-%s", h, k), v, ""})
				}
				if err := tc.commitBatches(t, keyedBatch(t, def, "fac0001", fmt.Sprintf("two-%d-%d", h, r), rows)); err != nil {
					errs <- fmt.Errorf("hub %d round %d: %w", h, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _ := currentState(t, cat, def.Table)
	want := map[string]string{}
	for _, k := range keys {
		want["fac0001/"+k] = fmt.Sprintf("h1-%s@%d", k, 2*(rounds-1)+1)
	}
	if !maps.Equal(got, want) {
		t.Errorf("state %v, want %v", got, want)
	}
}

// TestKeyedTableRecreated: a keyed table dropped and created again starts with no
// keys, whatever state its former self left in the catalog.
func TestKeyedTableRecreated(t *testing.T) {
	cat, err := catalog.Open(t.Context(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	def := parseDef(t, patientsUpsert)
	tc := newTestCommitter(t, def, cat, "hub-a")
	if err := tc.commitBatches(t, keyedBatch(t, def, "fac0001", "first", []prow{{"A", "ann", 5, ""}})); err != nil {
		t.Fatal(err)
	}
	if err := cat.Iceberg().DropTable(t.Context(), cat.TableIdent(def.Table)); err != nil {
		t.Fatal(err)
	}
	tc = newTestCommitter(t, def, cat, "hub-a")
	// An older version of A: against the old state it would be stale.
	if err := tc.commitBatches(t, keyedBatch(t, def, "fac0001", "again", []prow{{"A", "anew", 1, ""}})); err != nil {
		t.Fatal(err)
	}
	if got, _ := currentState(t, cat, def.Table); !maps.Equal(got, map[string]string{"fac0001/A": "anew@1"}) {
		t.Errorf("recreated table holds %v, want A anew@1", got)
	}
}
