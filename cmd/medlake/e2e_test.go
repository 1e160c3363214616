package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/apache/arrow-go/v18/arrow/flight/flightsql/driver" // registers "flightsql" for database/sql
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/query/reports"
)

// e2eSetup says which real components the central side runs on. Empty fields mean the
// embedded defaults: mochi broker, SQLite catalog, local warehouse.
type e2eSetup struct {
	broker    string
	catalog   string
	warehouse string
	s3        stack.S3
}

// TestEndToEnd runs medlake serve and one medlake-agent per facility as separate
// processes on real mosquitto, MinIO and PostgreSQL, drops generated CSV and TXT archives
// (CSV, TXT and XML) into the watched folders, and checks through pgx on the pgwire port that every table
// holds exactly the generated rows: count and key checksum equal gen's manifest.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers; run without -short")
	}
	s3 := stack.MinIO(t)
	runEndToEnd(t, e2eSetup{
		broker:    stack.Mosquitto(t),
		catalog:   stack.Postgres(t),
		warehouse: "s3://" + s3.Bucket + "/warehouse",
		s3:        s3,
	})
}

// TestEndToEndEmbedded is the same run on the embedded defaults `medlake demo` uses.
func TestEndToEndEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system; run without -short")
	}
	runEndToEnd(t, e2eSetup{})
}

func runEndToEnd(t *testing.T, setup e2eSetup) {
	bin := buildBinaries(t)
	work, genDir, m := genWorkload(t, bin, "11", "3", "4", "csv,txt,xml,dat")

	pgAddr, httpAddr, flightAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	brokerURL := setup.broker
	args := []string{"serve", "--data-dir", filepath.Join(work, "hub"), "--feeds", filepath.Join(genDir, "feeds"),
		"--pg-listen", pgAddr, "--http-listen", httpAddr, "--flight-listen", flightAddr, "--log-format", "json",
		// Table maintenance passes run all along, compacting while the hub commits.
		"--maintenance-interval", "2s"}
	if brokerURL == "" {
		brokerAddr := freeAddr(t)
		args = append(args, "--broker-listen", brokerAddr)
		brokerURL = "tcp://" + brokerAddr
	} else {
		args = append(args, "--broker-url", brokerURL)
	}
	if setup.catalog != "" {
		args = append(args, "--catalog", setup.catalog)
	}
	// Compact as soon as a partition has two small files, so rewrites race the hub's
	// commits all through the run.
	env := []string{"MEDLAKE_MAINTENANCE_MIN_INPUT_FILES=2"}
	if setup.warehouse != "" {
		args = append(args, "--warehouse", setup.warehouse, "--s3-endpoint", setup.s3.Endpoint)
		env = append(env, "MEDLAKE_CATALOG_S3_ACCESS_KEY="+setup.s3.AccessKey,
			"MEDLAKE_CATALOG_S3_SECRET_KEY="+setup.s3.SecretKey, "MEDLAKE_CATALOG_S3_REGION="+setup.s3.Region)
	}
	start(t, "serve", env, filepath.Join(bin, "medlake"), args...)
	waitReady(t, "http://"+httpAddr+"/readyz")

	watchRoot := filepath.Join(work, "exports")
	for _, tn := range m.Tenants {
		for _, f := range tn.Facilities {
			startAgent(t, bin, work, e2eAgent{tenant: tn.ID, facility: f.ID, broker: brokerURL,
				feedsDir: filepath.Join(genDir, "feeds"), move: true, recursive: true})
		}
	}

	// Drop the archives the way an export job does: a temporary name, then a rename.
	dropStart := time.Now()
	dropped := 0
	for _, f := range m.Files {
		if f.Pending {
			continue
		}
		if err := dropFile(genDir, watchRoot, f); err != nil {
			t.Fatal(err)
		}
		dropped++
	}
	t.Logf("dropped %d archives, %d rows", dropped, m.Rows)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	conn := connect(ctx, t, pgAddr)
	tables := slices.DeleteFunc(slices.Sorted(maps.Keys(m.Tables)), func(n string) bool { return m.Tables[n].Ready.Rows == 0 })
	for _, name := range tables {
		waitCount(ctx, t, conn, name, m.Tables[name].Ready.Rows)
	}
	t.Logf("all %d rows of %d archives queryable %s after the first drop",
		m.Rows, dropped, time.Since(dropStart).Round(time.Millisecond))
	checkManifest(ctx, t, conn, m, tables)

	// A GROUP BY and a WHERE with a parameter, in pgx's default extended protocol.
	var facilities int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM (SELECT _facility, count(*) FROM lab_results GROUP BY _facility) g").Scan(&facilities); err != nil {
		t.Fatal(err)
	}
	if want := len(tableFacilities(m, "lab_results")); facilities != want {
		t.Errorf("lab_results spans %d facilities, want %d", facilities, want)
	}
	fac := tableFacilities(m, "lab_results")[0]
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM lab_results WHERE _facility = $1", fac).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if want := facilityRows(m, "lab_results", fac); n != want {
		t.Errorf("lab_results for %s: %d rows, want %d", fac, n, want)
	}

	// The same answer through `medlake sql`, as an analyst at a shell would ask.
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "medlake"), "sql", "--pg-listen", pgAddr,
		"SELECT _facility, count(*) AS n FROM lab_results WHERE _facility = '"+fac+"' GROUP BY 1").CombinedOutput()
	if err != nil {
		t.Fatalf("medlake sql: %v\n%s", err, out)
	}
	row := regexp.MustCompile(fmt.Sprintf(`(?m)^ %s\s+\| %d$`, fac, n))
	if !row.Match(out) || !strings.Contains(string(out), "(1 row)") {
		t.Errorf("medlake sql printed:\n%s\nwant the row %s | %d", out, fac, n)
	}

	// The same count over the HTTP query API and Arrow Flight SQL (trusted on
	// loopback: no users are configured).
	resp, err := http.Post("http://"+httpAddr+"/api/v1/query?format=csv", "application/sql",
		strings.NewReader("SELECT count(*) AS n FROM lab_results WHERE _facility = '"+fac+"'"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("n\n%d\n", n); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("HTTP query API: %d %q, want %q", resp.StatusCode, body, want)
	}
	fdb, err := sql.Open("flightsql", "flightsql://analyst@"+flightAddr+"?timeout=60s")
	if err != nil {
		t.Fatal(err)
	}
	var fn int64
	if err := fdb.QueryRowContext(ctx, "SELECT count(*) FROM lab_results WHERE _facility = $1", fac).Scan(&fn); err != nil || fn != n {
		t.Errorf("Flight SQL: %d, %v; want %d", fn, err, n)
	}
	fdb.Close()

	// The shipped example reports run on the generated tables.
	examples, err := reports.Examples()
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range examples {
		rows, err := conn.Query(ctx, ex.SQL)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		if err != nil {
			t.Errorf("example report %s: %v", ex.Name, err)
		}
	}

	checkRejections(ctx, t, brokerURL)
	checkRejectsTable(ctx, t, conn, m, genDir, watchRoot)

	// Every archive was moved to the done folder only after its batches were committed.
	waitFor(ctx, t, "archives moved to done folders", func() bool {
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

// genWorkload generates seed-shaped exports with the built medlake into a new work
// folder and returns it, the generator's output folder and its manifest.
func genWorkload(t *testing.T, bin, seed, facilities, filesPerFacility, formats string) (work, genDir string, m *gen.Manifest) {
	t.Helper()
	work = t.TempDir()
	genDir = filepath.Join(work, "gen")
	runCmd(t, exec.Command(filepath.Join(bin, "medlake"), "gen", "--out", genDir, "--seed", seed,
		"--facilities", facilities, "--files-per-facility", filesPerFacility, "--formats", formats, "--quiet"))
	m, err := gen.ReadManifest(filepath.Join(genDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	return work, genDir, m
}

// checkManifest compares every table's row count and key checksum with gen's manifest.
func checkManifest(ctx context.Context, t *testing.T, conn *pgx.Conn, m *gen.Manifest, tables []string) {
	t.Helper()
	for _, name := range tables {
		want := m.Tables[name]
		var sum gen.KeyChecksum
		rows, err := conn.Query(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(want.Keys, ", "), name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for rows.Next() {
			vals := make([]string, len(want.Keys))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			sum.Add(vals...)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sum.Count() != want.Ready.Rows || sum.String() != want.Ready.KeyChecksum {
			t.Errorf("%s: %d rows with key checksum %s; manifest says %d rows, checksum %s",
				name, sum.Count(), sum.String(), want.Ready.Rows, want.Ready.KeyChecksum)
			continue
		}
		t.Logf("%s: %d rows, key checksum %s matches the manifest", name, sum.Count(), sum.String())
	}
}

// checkRejections publishes the protocol's bad golden vectors as a rogue agent would and
// expects a rejected ack with a reason for each.
func checkRejections(ctx context.Context, t *testing.T, brokerURL string) {
	t.Helper()
	// The vectors name t0001/f000001/agent-f000001, and the hub rejects a batch whose
	// header disagrees with its topic, so they are published on that agent's topic.
	const tenant, facility, agentID = "t0001", "f000001", "agent-f000001"
	acks := make(chan protocol.Ack, 10)
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("e2e-rogue").SetCleanSession(true)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connecting to %s: %v", brokerURL, tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Subscribe(protocol.AckTopic(tenant, facility, agentID), 1, func(_ mqtt.Client, msg mqtt.Message) {
		if a, err := protocol.DecodeAck(msg.Payload()); err == nil {
			acks <- a
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	want := map[string]string{}
	for _, name := range []string{"batch_unknown_major.bin", "batch_corrupt_arrow.bin", "batch_unknown_table.bin"} {
		frame, err := os.ReadFile(filepath.Join("..", "..", "protocol", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		want[protocol.PeekBatchID(frame)] = name
		if tok := c.Publish(protocol.BatchTopic(tenant, facility, agentID), 1, false, frame); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	for len(want) > 0 {
		select {
		case a := <-acks:
			name, ok := want[a.BatchID]
			if !ok {
				continue
			}
			if a.Status != protocol.AckRejected || a.Reason == "" {
				t.Errorf("%s: ack %+v, want rejected with a reason", name, a)
			}
			t.Logf("%s rejected: %s", name, a.Reason)
			delete(want, a.BatchID)
		case <-ctx.Done():
			t.Fatalf("no rejected ack for %v", want)
		}
	}
}

// tableFacilities lists the facilities that exported rows for table.
func tableFacilities(m *gen.Manifest, table string) []string {
	var fs []string
	for _, f := range m.Files {
		if f.Table == table && !f.Pending && !slices.Contains(fs, f.Facility) {
			fs = append(fs, f.Facility)
		}
	}
	slices.Sort(fs)
	return fs
}

func facilityRows(m *gen.Manifest, table, facility string) int64 {
	var n int64
	for _, f := range m.Files {
		if f.Table == table && f.Facility == facility && !f.Pending {
			n += f.Rows
		}
	}
	return n
}

func waitCount(ctx context.Context, t *testing.T, conn *pgx.Conn, table string, want int64) {
	t.Helper()
	var (
		got     int64
		lastErr error
	)
	for {
		lastErr = conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&got)
		switch {
		case lastErr == nil && got == want:
			return
		case lastErr == nil && got > want:
			t.Fatalf("%s holds %d rows, more than the %d generated: duplicates", table, got, want)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s to hold %d rows: last count %d, last error %v", table, want, got, lastErr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func connect(ctx context.Context, t *testing.T, addr string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, "postgres://medlake@"+addr+"/medlake?sslmode=disable")
	if err != nil {
		t.Fatalf("connecting to pgwire %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", url)
}

var buildOnce struct {
	sync.Once
	dir string
	err error
}

// buildBinaries builds medlake and medlake-agent once per test binary.
func buildBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "medlake-e2e-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/medlake/medlake/cmd/medlake", "github.com/medlake/medlake/cmd/medlake-agent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.dir
}

// start runs a long-lived process, logs its output into the test log and stops it
// (SIGTERM, then kill) at cleanup unless the test already ended it; the command is
// returned for tests that kill it.
func start(t *testing.T, name string, env []string, path string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if testing.Verbose() || strings.Contains(sc.Text(), `"level":"ERROR"`) || strings.Contains(sc.Text(), `"level":"WARN"`) {
				t.Logf("%s: %s", name, sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		<-logged
	})
	return cmd
}

// e2eAgent is one facility's medlake-agent in an end-to-end test.
type e2eAgent struct {
	tenant, facility string
	broker, feedsDir string
	move             bool   // done: move (files leave the watched folder once acknowledged)
	recursive        bool   // watch subfolders too
	extra            string // further config lines, each ending in a newline
}

// startAgent writes a's config under work and starts the agent watching
// work/exports/<facility>, which it returns; start stops it at cleanup.
func startAgent(t *testing.T, bin, work string, a e2eAgent) string {
	t.Helper()
	watch := filepath.Join(work, "exports", a.facility)
	if err := os.MkdirAll(watch, 0o755); err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "id: agent-%s\ntenant: %s\nfacility: %s\nbroker: %s\nstate_dir: %s\nfeeds_dir: %s\nwatch:\n  - path: %s\n",
		a.facility, a.tenant, a.facility, a.broker, filepath.Join(work, "state-"+a.facility), a.feedsDir, watch)
	if a.recursive {
		cfg.WriteString("    recursive: true\n")
	}
	if a.move {
		cfg.WriteString("    done: move\n")
	}
	cfg.WriteString("quiet_period: 200ms\nrescan_interval: 1s\n")
	cfg.WriteString(a.extra)
	cfgPath := filepath.Join(work, "agent-"+a.facility+".yaml")
	writeFile(t, cfgPath, cfg.String())
	start(t, "agent-"+a.facility, nil, filepath.Join(bin, "medlake-agent"), "run", "--config", cfgPath, "--log-format", "json")
	return watch
}

// dropFile copies gen's file f into its facility's folder under watchRoot the way
// an export job does: written under a temporary name, then renamed into place.
func dropFile(genDir, watchRoot string, f gen.File) error {
	data, err := os.ReadFile(filepath.Join(genDir, filepath.FromSlash(f.Path)))
	if err != nil {
		return err
	}
	dst := filepath.Join(watchRoot, f.Facility, filepath.Base(f.Path))
	if err := os.WriteFile(dst+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

func runCmd(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
