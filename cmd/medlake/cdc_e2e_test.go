package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/hub/maintain"
	"github.com/medlake/medlake/protocol"
)

var cdcSeed = flag.Uint64("cdc-seed", 5, "seed of TestCDCDifferential's workload")

// cdcFeeds are the differential test's tables: patients (upsert by mrn, highest ver
// wins) and admits (cdc: op I/U/D, highest ver wins).
var cdcFeeds = map[string]string{
	"patients.yaml": `name: patients
version: 1
table: patients
match: {glob: "patients_*.csv"}
format: {type: csv}
mode: upsert
keys: [mrn]
sequence: ver
columns:
  - {name: mrn, type: string, required: true}
  - {name: name, type: string}
  - {name: ver, type: int, required: true}
`,
	"admits.yaml": `name: admits
version: 1
table: admits
match: {glob: "admits_*.csv"}
format: {type: csv}
mode: cdc
keys: [mrn]
sequence: ver
op: {column: op}
columns:
  - {name: mrn, type: string, required: true}
  - {name: name, type: string}
  - {name: ver, type: int, required: true}
  - {name: op, type: string, required: true, enum: [I, U, D]}
`,
}

// cdcRow is one source row of the workload.
type cdcRow struct {
	mrn, name string
	ver       int64
	op        string // I, U or D (admits); "" for patients
}

// cdcModel is the reference the lake is checked against: per table and
// "facility|mrn", the row with the highest ver; a delete removes the key.
type cdcModel map[string]map[string]cdcRow

func (m cdcModel) apply(table, fac string, r cdcRow) {
	if m[table] == nil {
		m[table] = map[string]cdcRow{}
	}
	k := fac + "|" + r.mrn
	if cur, ok := m[table][k]; !ok || r.ver > cur.ver {
		m[table][k] = r
	}
}

// state is the model's current rows of table as "facility|mrn|name|ver".
func (m cdcModel) state(table string) []string {
	var out []string
	for k, r := range m[table] {
		if r.op != "D" {
			out = append(out, fmt.Sprintf("%s|%s|%d", k, r.name, r.ver))
		}
	}
	slices.Sort(out)
	return out
}

// cdcWorkload generates the rows: versions are unique per key (normal rows take the next
// multiple of 10, late rows a value just below the key's newest), so the model's answer
// does not depend on the order files arrive in.
type cdcWorkload struct {
	rng     *rand.Rand
	counter int64
	newest  map[string]int64          // table|facility|mrn → newest ver generated
	used    map[string]map[int64]bool // table|facility|mrn → vers generated
	emitted map[string][]cdcRow       // table|facility → rows generated
}

func (w *cdcWorkload) rows(table, fac string, n int) []cdcRow {
	var out []cdcRow
	for range n {
		mrn := fmt.Sprintf("M%02d", w.rng.IntN(25))
		k := table + "|" + fac + "|" + mrn
		if w.used[k] == nil {
			w.used[k] = map[int64]bool{}
		}
		prev := w.emitted[table+"|"+fac]
		p := w.rng.Float64()
		switch {
		case p < 0.1 && len(prev) > 0: // an identical record exported again
			out = append(out, prev[w.rng.IntN(len(prev))])
			continue
		case p < 0.3 && w.newest[k] >= 10: // a late row, older than the key's newest
			v := w.newest[k] - 1 - int64(w.rng.IntN(9))
			if v > 0 && !w.used[k][v] {
				r := cdcRow{mrn: mrn, name: fmt.Sprintf("late-%d", v), ver: v, op: w.op(table)}
				w.used[k][v] = true
				out = append(out, r)
				w.emitted[table+"|"+fac] = append(w.emitted[table+"|"+fac], r)
				continue
			}
		}
		w.counter++
		v := w.counter * 10
		r := cdcRow{mrn: mrn, name: fmt.Sprintf("n%d", w.rng.IntN(1000)), ver: v, op: w.op(table)}
		w.used[k][v] = true
		w.newest[k] = v
		out = append(out, r)
		w.emitted[table+"|"+fac] = append(w.emitted[table+"|"+fac], r)
	}
	return out
}

func (w *cdcWorkload) op(table string) string {
	if table != "admits" {
		return ""
	}
	switch p := w.rng.Float64(); {
	case p < 0.25:
		return "D"
	case p < 0.6:
		return "U"
	}
	return "I"
}

func csvOf(table string, rows []cdcRow) string {
	var b strings.Builder
	if table == "admits" {
		b.WriteString("mrn,name,ver,op\n")
	} else {
		b.WriteString("mrn,name,ver\n")
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "%s,%s,%d", r.mrn, r.name, r.ver)
		if table == "admits" {
			b.WriteString("," + r.op)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestCDCDifferential drives a seeded random workload of inserts, updates, deletes,
// late (out-of-order) rows, identical records exported again, re-sent files and re-sent
// batches through agents, mosquitto, a hub writing to MinIO with a PostgreSQL catalog,
// and the query role; after every round the current state read through the pgwire port
// equals the test's reference model and equals iceberg-go's own scan of the table, and
// re-sent files and batches leave every table's snapshot unchanged.
func TestCDCDifferential(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers; run without -short")
	}
	s3 := stack.MinIO(t)
	runCDCDifferential(t, e2eSetup{broker: stack.Mosquitto(t), catalog: stack.Postgres(t), warehouse: "s3://" + s3.Bucket + "/warehouse", s3: s3})
}

// TestCDCDifferentialEmbedded is the same run on what `medlake demo` uses: the embedded
// broker, a SQLite catalog (key state included) and a local warehouse.
func TestCDCDifferentialEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system; run without -short")
	}
	runCDCDifferential(t, e2eSetup{})
}

func runCDCDifferential(t *testing.T, setup e2eSetup) {
	const rounds, filesPerRound, rowsPerFile = 5, 2, 14
	bin := buildBinaries(t)
	work := t.TempDir()
	feedsDir := filepath.Join(work, "feeds")
	if err := os.MkdirAll(feedsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range cdcFeeds {
		writeFile(t, filepath.Join(feedsDir, name), text)
	}
	pgAddr, httpAddr := freeAddr(t), freeAddr(t)
	dataDir := filepath.Join(work, "hub")
	args := []string{"serve", "--data-dir", dataDir, "--feeds", feedsDir, "--pg-listen", pgAddr, "--http-listen", httpAddr, "--log-format", "json"}
	brokerURL := setup.broker
	if brokerURL == "" {
		brokerAddr := freeAddr(t)
		args = append(args, "--broker-listen", brokerAddr)
		brokerURL = "tcp://" + brokerAddr
	} else {
		args = append(args, "--broker-url", brokerURL)
	}
	// The test's own view of the catalog, for iceberg-go's scan and snapshot ids.
	catCfg := catalog.Config{DataDir: dataDir}
	if setup.catalog != "" {
		args = append(args, "--catalog", setup.catalog)
		catCfg.URI = setup.catalog
	}
	var env []string
	if setup.warehouse != "" {
		args = append(args, "--warehouse", setup.warehouse, "--s3-endpoint", setup.s3.Endpoint)
		env = append(env, "MEDLAKE_CATALOG_S3_ACCESS_KEY="+setup.s3.AccessKey,
			"MEDLAKE_CATALOG_S3_SECRET_KEY="+setup.s3.SecretKey, "MEDLAKE_CATALOG_S3_REGION="+setup.s3.Region)
		catCfg.Warehouse, catCfg.S3Endpoint, catCfg.S3Region = setup.warehouse, setup.s3.Endpoint, setup.s3.Region
		catCfg.S3AccessKey, catCfg.S3SecretKey = setup.s3.AccessKey, setup.s3.SecretKey
	}
	start(t, "serve", env, filepath.Join(bin, "medlake"), args...)
	waitReady(t, "http://"+httpAddr+"/readyz")
	cat, err := catalog.Open(context.Background(), catCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()

	// A client seeing every batch the agents send and every ack the hub sends, to
	// re-send batches as an agent does after a lost ack.
	var mu sync.Mutex
	frames := map[string][]byte{} // batch id → frame
	frameTopic := map[string]string{}
	var frameIDs []string
	acks := map[string]int{} // batch id → acks seen
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("cdc-test-observer").SetCleanSession(true)
	obs := mqtt.NewClient(opts)
	if tok := obs.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	defer obs.Disconnect(250)
	if tok := obs.Subscribe("medlake/v1/+/+/+/"+protocol.KindBatch, 1, func(_ mqtt.Client, m mqtt.Message) {
		id := protocol.PeekBatchID(m.Payload())
		mu.Lock()
		defer mu.Unlock()
		if _, ok := frames[id]; !ok && id != "" {
			frames[id] = slices.Clone(m.Payload())
			frameTopic[id] = m.Topic()
			frameIDs = append(frameIDs, id)
		}
	}); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	if tok := obs.Subscribe("medlake/v1/+/+/+/"+protocol.KindAck, 1, func(_ mqtt.Client, m mqtt.Message) {
		if a, err := protocol.DecodeAck(m.Payload()); err == nil && a.Status == protocol.AckCommitted {
			mu.Lock()
			acks[a.BatchID]++
			mu.Unlock()
		}
	}); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}

	// Two facilities of two tenants, with overlapping mrns: a key is scoped to its
	// facility.
	facs := []struct{ tenant, id string }{{"acme", "fac01"}, {"globex", "fac02"}}
	watchRoot := filepath.Join(work, "exports")
	for _, f := range facs {
		startAgent(t, bin, work, e2eAgent{tenant: f.tenant, facility: f.id, broker: brokerURL, feedsDir: feedsDir, move: true})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	conn := connect(ctx, t, pgAddr)
	drop := func(fac, name, data string) {
		dst := filepath.Join(watchRoot, fac, name)
		writeFile(t, dst+".tmp", data)
		if err := os.Rename(dst+".tmp", dst); err != nil {
			t.Fatal(err)
		}
	}
	waitDone := func() {
		t.Helper()
		waitFor(ctx, t, "dropped files moved to done", func() bool {
			left := 0
			_ = filepath.WalkDir(watchRoot, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.Contains(p, ".medlake-done") {
					left++
				}
				return nil
			})
			return left == 0
		})
	}
	tables := []string{"admits", "patients"}
	snapshots := func() map[string]int64 {
		t.Helper()
		out := map[string]int64{}
		for _, n := range tables {
			tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(n))
			if err != nil {
				t.Fatalf("loading %s: %v", n, err)
			}
			if s := tbl.CurrentSnapshot(); s != nil {
				out[n] = s.SnapshotID
			}
		}
		return out
	}

	w := &cdcWorkload{rng: rand.New(rand.NewPCG(*cdcSeed, 1)), newest: map[string]int64{}, used: map[string]map[int64]bool{}, emitted: map[string][]cdcRow{}}
	model := cdcModel{}
	type sent struct{ fac, name, data string }
	var files []sent
	type checkpoint struct {
		snaps map[string]int64
		state map[string][]string
	}
	var checkpoints []checkpoint
	expiredCheckpoints := 0 // the first ones, whose snapshots expiry removed
	for round := range rounds {
		// Files of new rows; the order rows and files arrive in does not matter to the
		// model, only every row's ver.
		for _, f := range facs {
			for _, table := range tables {
				for i := range filesPerRound {
					rows := w.rows(table, f.id, rowsPerFile)
					for _, r := range rows {
						model.apply(table, f.id, r)
					}
					s := sent{f.id, fmt.Sprintf("%s_r%d_%d.csv", table, round, i), csvOf(table, rows)}
					files = append(files, s)
					drop(s.fac, s.name, s.data)
				}
			}
		}
		waitDone()
		checkCDCState(ctx, t, conn, cat, model, tables, fmt.Sprintf("round %d", round))
		checkpoints = append(checkpoints, checkpoint{snapshots(), map[string][]string{"admits": model.state("admits"), "patients": model.state("patients")}})

		// Re-sent file (same bytes, a new name) and re-sent batch (a captured frame
		// published again on its agent's topic): nothing changes, no snapshot is made.
		before := snapshots()
		old := files[w.rng.IntN(len(files))]
		drop(old.fac, "resent_"+old.name, old.data)
		mu.Lock()
		id := frameIDs[w.rng.IntN(len(frameIDs))]
		frame, topic, seen := frames[id], frameTopic[id], acks[id]
		mu.Unlock()
		if tok := obs.Publish(topic, 1, false, frame); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("re-sending batch %s: %v", id, tok.Error())
		}
		waitFor(ctx, t, "the hub's ack of re-sent batch "+id, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return acks[id] > seen
		})
		waitDone()
		if after := snapshots(); !maps.Equal(before, after) {
			t.Errorf("round %d: re-sent file %s and batch %s changed snapshots %v → %v", round, old.name, id, before, after)
		}
		checkCDCState(ctx, t, conn, cat, model, tables, fmt.Sprintf("round %d after re-sends", round))

		if round == rounds/2 {
			// Table maintenance in the middle of the workload changes no answer: the
			// current state read at the compaction's own snapshot (which only its
			// rewritten files hold) and the state the hubs keep deciding against
			// stay the model's; expiry removes the history before the second checkpoint
			// and keeps the rest.
			compacted := maintainCDCTables(ctx, t, cat, tables, checkpoints[1].snaps)
			expiredCheckpoints = 1
			for _, n := range tables {
				got, err := pgRows(ctx, conn, fmt.Sprintf("SELECT _facility || '|' || mrn || '|' || name || '|' || ver FROM %s AT (VERSION => %d) ORDER BY 1", n, compacted[n]))
				if want := model.state(n); err != nil || !slices.Equal(got, want) {
					t.Fatalf("%s at compaction snapshot %d: %v, %v; want %v", n, compacted[n], got, err, want)
				}
			}
			checkCDCState(ctx, t, conn, cat, model, tables, fmt.Sprintf("round %d after compaction and expiry", round))
		}
	}
	for _, n := range tables {
		t.Logf("%s: %d live keys after %d rounds (seed %d)", n, len(model.state(n)), rounds, *cdcSeed)
	}

	// History through pgwire: every checkpoint's snapshot reads as the model did then,
	// and table_changes between the first and the last lists exactly the keys whose
	// row differs.
	for i, cp := range checkpoints {
		for _, n := range tables {
			got, err := pgRows(ctx, conn, fmt.Sprintf("SELECT _facility || '|' || mrn || '|' || name || '|' || ver FROM %s AT (VERSION => %d) ORDER BY 1", n, cp.snaps[n]))
			if i < expiredCheckpoints {
				if err == nil {
					t.Errorf("%s at checkpoint %d (snapshot %d, expired): %d rows, want an error", n, i, cp.snaps[n], len(got))
				}
				continue
			}
			if err != nil || !slices.Equal(got, cp.state[n]) {
				t.Errorf("%s at checkpoint %d (snapshot %d): %v, %v; want %v", n, i, cp.snaps[n], got, err, cp.state[n])
			}
		}
	}
	first, last := checkpoints[expiredCheckpoints], checkpoints[len(checkpoints)-1]
	for _, n := range tables {
		want := diffStates(first.state[n], last.state[n])
		got, err := pgRows(ctx, conn, fmt.Sprintf(`SELECT op || ' ' || _facility || '|' || mrn FROM table_changes('%s', %d, %d) ORDER BY 1`, n, first.snaps[n], last.snaps[n]))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("table_changes of %s between checkpoints: %v, %v; want %v", n, got, err, want)
		} else {
			t.Logf("table_changes of %s: %d keys changed between the first and last checkpoint", n, len(got))
		}
	}

	// The workload reached every path: late rows dropped as stale, identical records
	// creating no version, cdc deletes.
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []struct{ table, outcome string }{
		{"patients", "stale"}, {"patients", "unchanged"}, {"patients", "upserted"},
		{"admits", "stale"}, {"admits", "deleted"}, {"admits", "upserted"},
	} {
		re := regexp.MustCompile(`(?m)^medlake_hub_keyed_rows_total\{outcome="` + want.outcome + `",table="` + want.table + `"\} ([0-9.e+]+)$`)
		m := re.FindSubmatch(metrics)
		if m == nil || string(m[1]) == "0" {
			t.Errorf("no %s rows of %s counted (medlake_hub_keyed_rows_total): the workload missed that path", want.outcome, want.table)
		} else {
			t.Logf("%s %s rows: %s", want.table, want.outcome, m[1])
		}
	}
}

// maintainCDCTables compacts every table, folding its equality deletes, then expires
// the snapshots committed before the one keep names per table. It returns each table's
// compaction snapshot.
func maintainCDCTables(ctx context.Context, t *testing.T, cat *catalog.Catalog, tables []string, keep map[string]int64) map[string]int64 {
	t.Helper()
	ts := maintain.CatalogTables(cat)
	out := map[string]int64{}
	for _, n := range tables {
		res, err := maintain.Compact(ctx, ts, n, maintain.CompactOptions{TargetFileSize: 64 << 20, MinInputFiles: 2, DeleteFileThreshold: 1, CommitRetries: 5})
		if err != nil {
			t.Fatalf("compacting %s: %v", n, err)
		}
		if res.SnapshotID == 0 || res.FilesRemoved == 0 || res.DeleteFilesRemoved == 0 {
			t.Fatalf("compacting %s rewrote nothing: %+v", n, res)
		}
		t.Logf("compacted %s: %d data files into %d, %d delete files folded", n, res.FilesRemoved, res.FilesAdded, res.DeleteFilesRemoved)
		out[n] = res.SnapshotID

		tbl, err := ts.Load(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		kept := tbl.SnapshotByID(keep[n])
		if kept == nil {
			t.Fatalf("%s: snapshot %d to keep is gone before expiry", n, keep[n])
		}
		age := time.Since(time.UnixMilli(kept.TimestampMs)) + time.Second
		exp, err := maintain.Expire(ctx, ts, cat, n, maintain.Retention{RetainLast: 1, MaxAge: age}, 5)
		if err != nil {
			t.Fatalf("expiring %s: %v", n, err)
		}
		if exp.SnapshotsExpired == 0 {
			t.Fatalf("expiring %s before snapshot %d removed nothing: %+v", n, keep[n], exp)
		}
		t.Logf("expired %s: %d of %d snapshots", n, exp.SnapshotsExpired, exp.SnapshotsBefore)
	}
	return out
}

// checkCDCState waits until every table read through pgwire equals the model, then
// checks iceberg-go's scan of the table equals it too.
func checkCDCState(ctx context.Context, t *testing.T, conn *pgx.Conn, cat *catalog.Catalog, model cdcModel, tables []string, when string) {
	t.Helper()
	for _, n := range tables {
		want := model.state(n)
		var got []string
		var lastErr error
		deadline := time.Now().Add(90 * time.Second)
		for {
			got, lastErr = pgState(ctx, conn, n)
			if lastErr == nil && slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s through pgwire (err %v):\n%v\nwant (model):\n%v", when, n, lastErr, got, want)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if ice := icebergState(t, cat, n); !slices.Equal(ice, want) {
			t.Fatalf("%s: %s through iceberg-go's scan:\n%v\nwant (model):\n%v", when, n, ice, want)
		}
	}
}

func pgState(ctx context.Context, conn *pgx.Conn, table string) ([]string, error) {
	return pgRows(ctx, conn, "SELECT _facility || '|' || mrn || '|' || name || '|' || ver FROM "+table+" ORDER BY 1")
}

func pgRows(ctx context.Context, conn *pgx.Conn, q string) ([]string, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// diffStates lists "op facility|mrn" for the keys whose row differs between two
// states of "facility|mrn|name|ver" rows, sorted.
func diffStates(before, after []string) []string {
	split := func(rows []string) map[string]string {
		m := map[string]string{}
		for _, r := range rows {
			p := strings.SplitN(r, "|", 3)
			m[p[0]+"|"+p[1]] = p[2]
		}
		return m
	}
	a, b := split(before), split(after)
	var out []string
	for k, v := range b {
		switch old, ok := a[k]; {
		case !ok:
			out = append(out, "insert "+k)
		case old != v:
			out = append(out, "update "+k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, "delete "+k)
		}
	}
	slices.Sort(out)
	return out
}

func icebergState(t *testing.T, cat *catalog.Catalog, table string) []string {
	t.Helper()
	ctx := context.Background()
	tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(table))
	if err != nil {
		t.Fatal(err)
	}
	at, err := tbl.Scan().ToArrowTable(ctx)
	if err != nil {
		t.Fatalf("scanning %s: %v", table, err)
	}
	defer at.Release()
	rd := array.NewTableReader(at, -1)
	defer rd.Release()
	idx := func(n string) int {
		i := at.Schema().FieldIndices(n)
		if len(i) != 1 {
			t.Fatalf("%s has no column %s", table, n)
		}
		return i[0]
	}
	fac, mrn, name, ver := idx("_facility"), idx("mrn"), idx("name"), idx("ver")
	var out []string
	for rd.Next() {
		r := rd.RecordBatch()
		for i := range int(r.NumRows()) {
			out = append(out, strings.Join([]string{r.Column(fac).ValueStr(i), r.Column(mrn).ValueStr(i),
				r.Column(name).ValueStr(i), r.Column(ver).ValueStr(i)}, "|"))
		}
	}
	slices.Sort(out)
	return out
}
