package pgwire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/engine"
)

// rawClient speaks the protocol message by message, for what drivers do not
// expose (row-limited Execute, Flush without Sync).
type rawClient struct {
	tb testing.TB
	nc net.Conn
	fe *pgproto3.Frontend
}

func dialRaw(tb testing.TB, addr string) *rawClient {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	r := &rawClient{tb: tb, nc: nc, fe: pgproto3.NewFrontend(nc, nc)}
	r.send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "analyst", "database": "medlake"}})
	if _, err := r.until(nil); err != nil {
		tb.Fatal(err)
	}
	return r
}

func (r *rawClient) send(msgs ...pgproto3.FrontendMessage) {
	r.tb.Helper()
	for _, m := range msgs {
		r.fe.Send(m)
	}
	if err := r.fe.Flush(); err != nil {
		r.tb.Fatal(err)
	}
}

// until receives messages until ReadyForQuery, calling row with each
// DataRow, and returns the server's error, if any.
func (r *rawClient) until(row func(*pgproto3.DataRow)) (string, error) {
	var failed error
	for {
		m, err := r.fe.Receive()
		if err != nil {
			r.tb.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			if row != nil {
				row(m)
			}
		case *pgproto3.ErrorResponse:
			failed = fmt.Errorf("%s: %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return "ready", failed
		}
	}
}

// execute sends Execute with a row limit and a Flush and reads the piece:
// it returns "suspended" or the command tag.
func (r *rawClient) execute(portal string, maxRows uint32, row func(*pgproto3.DataRow)) (string, error) {
	r.send(&pgproto3.Execute{Portal: portal, MaxRows: maxRows}, &pgproto3.Flush{})
	for {
		m, err := r.fe.Receive()
		if err != nil {
			r.tb.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			if row != nil {
				row(m)
			}
		case *pgproto3.PortalSuspended:
			return "suspended", nil
		case *pgproto3.CommandComplete:
			return string(m.CommandTag), nil
		case *pgproto3.ErrorResponse:
			return "", fmt.Errorf("%s: %s", m.Code, m.Message)
		}
	}
}

// bigQuery is a result far larger than the engine's memory limit in the
// streaming tests: 5M rows, ~270 MB as text.
const (
	bigRows  = 5_000_000
	bigQuery = `SELECT i, repeat('x', 40) || i::VARCHAR AS s FROM range(5000000) t(i)`
)

// memWatch samples the Go heap in use and the process's resident memory
// until stopped, and reports the peaks' growth over the start.
type memWatch struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	heap0    uint64
	rss0     uint64
	heapPeak uint64
	rssPeak  uint64
}

func watchMemory(tb testing.TB) *memWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w := &memWatch{stop: make(chan struct{}), heap0: ms.HeapInuse, rss0: rss(tb)}
	w.heapPeak, w.rssPeak = w.heap0, w.rss0
	w.wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			runtime.ReadMemStats(&ms)
			w.heapPeak = max(w.heapPeak, ms.HeapInuse)
			w.rssPeak = max(w.rssPeak, rss(tb))
		}
	})
	return w
}

// done stops sampling and returns the growth of the heap in use and of the
// resident memory, in MiB.
func (w *memWatch) done() (heapMiB, rssMiB float64) {
	close(w.stop)
	w.wg.Wait()
	return float64(w.heapPeak-w.heap0) / (1 << 20), float64(w.rssPeak-w.rss0) / (1 << 20)
}

// rss is the process's resident memory (VmRSS), which counts DuckDB's
// allocations as well as Go's.
func rss(tb testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// Memory bounds for streaming bigQuery: generous next to a streamed result's
// few MiB, far under the ~270 MB the result holds if kept anywhere whole.
const (
	maxHeapGrowthMiB = 64
	maxRSSGrowthMiB  = 160
)

// TestStreamBoundedMemory reads a result much larger than the engine's memory
// limit through a row-limited portal and through DECLARE/FETCH and checks
// every row arrives, in order, while the heap and resident memory stay
// bounded.
func TestStreamBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 5M rows twice")
	}
	addr, srv, _ := startServerEngine(t, Config{}, engine.Config{MemoryLimit: "64MB", Threads: 1})
	checkRow := func(next *int64) func(*pgproto3.DataRow) {
		return func(m *pgproto3.DataRow) {
			if want := strconv.FormatInt(*next, 10); string(m.Values[0]) != want || !strings.HasSuffix(string(m.Values[1]), want) {
				t.Fatalf("row %d: got %s, %s", *next, m.Values[0], m.Values[1])
			}
			*next++
		}
	}
	t.Run("portal", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.send(&pgproto3.Parse{Query: bigQuery}, &pgproto3.Bind{}, &pgproto3.Flush{})
		w := watchMemory(t)
		var next int64
		pieces := 0
		for {
			tag, err := r.execute("", 100_000, checkRow(&next))
			if err != nil {
				t.Fatal(err)
			}
			pieces++
			if tag != "suspended" {
				if tag != "SELECT 5000000" {
					t.Errorf("last piece's tag %q", tag)
				}
				break
			}
		}
		heap, res := w.done()
		r.send(&pgproto3.Sync{})
		if _, err := r.until(nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("portal: %d rows in %d pieces; heap +%.1f MiB, RSS +%.1f MiB", next, pieces, heap, res)
		if next != bigRows || pieces < 50 {
			t.Errorf("read %d rows in %d pieces, want %d in at least 50", next, pieces, bigRows)
		}
		if heap > maxHeapGrowthMiB || res > maxRSSGrowthMiB {
			t.Errorf("streaming grew the heap by %.1f MiB (max %d), RSS by %.1f MiB (max %d)", heap, maxHeapGrowthMiB, res, maxRSSGrowthMiB)
		}
	})
	t.Run("cursor", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.send(&pgproto3.Query{String: "BEGIN; DECLARE big NO SCROLL CURSOR FOR " + bigQuery})
		if _, err := r.until(nil); err != nil {
			t.Fatal(err)
		}
		w := watchMemory(t)
		var next int64
		for fetches := 0; ; fetches++ {
			before := next
			r.send(&pgproto3.Query{String: "FETCH 100000 FROM big"})
			if _, err := r.until(checkRow(&next)); err != nil {
				t.Fatal(err)
			}
			if next == before {
				break
			}
		}
		heap, res := w.done()
		r.send(&pgproto3.Query{String: "CLOSE big; COMMIT"})
		if _, err := r.until(nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("cursor: %d rows; heap +%.1f MiB, RSS +%.1f MiB", next, heap, res)
		if next != bigRows {
			t.Errorf("read %d rows, want %d", next, bigRows)
		}
		if heap > maxHeapGrowthMiB || res > maxRSSGrowthMiB {
			t.Errorf("streaming grew the heap by %.1f MiB (max %d), RSS by %.1f MiB (max %d)", heap, maxHeapGrowthMiB, res, maxRSSGrowthMiB)
		}
	})
	if n := srv.openResults.Load(); n != 0 {
		t.Errorf("%d results still open", n)
	}
}

// TestStreamsClose checks every way a suspended portal or cursor ends frees
// its result (and with it its DuckDB connection), that an idle one does not
// hold the only statement slot, and the limits on open results.
func TestStreamsClose(t *testing.T) {
	addr, srv, _ := startServerEngine(t, Config{MaxCursors: 2, CursorIdleTimeout: 300 * time.Millisecond},
		engine.Config{MaxConcurrent: 1})
	const q = `SELECT i FROM range(1000000) t(i)`
	open := func(t *testing.T, r *rawClient, portal string) {
		t.Helper()
		r.send(&pgproto3.Parse{Name: portal, Query: q}, &pgproto3.Bind{PreparedStatement: portal, DestinationPortal: portal})
		if tag, err := r.execute(portal, 10, nil); err != nil || tag != "suspended" {
			t.Fatalf("execute: %s, %v", tag, err)
		}
	}
	simple := func(t *testing.T, r *rawClient, sql string) error {
		t.Helper()
		r.send(&pgproto3.Query{String: sql})
		_, err := r.until(nil)
		return err
	}
	expectOpen := func(t *testing.T, want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for srv.openResults.Load() != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := srv.openResults.Load(); n != want {
			t.Fatalf("%d results open, want %d", n, want)
		}
	}
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, r *rawClient)
	}{
		{"close portal", func(t *testing.T, r *rawClient) {
			r.send(&pgproto3.Close{ObjectType: 'P', Name: "p"}, &pgproto3.Sync{})
			r.until(nil)
		}},
		{"close statement", func(t *testing.T, r *rawClient) {
			r.send(&pgproto3.Close{ObjectType: 'S', Name: "p"}, &pgproto3.Flush{})
		}},
		{"sync", func(t *testing.T, r *rawClient) {
			r.send(&pgproto3.Sync{})
			r.until(nil)
		}},
		{"rebind", func(t *testing.T, r *rawClient) {
			r.send(&pgproto3.Bind{PreparedStatement: "p", DestinationPortal: "p"}, &pgproto3.Flush{})
		}},
		{"disconnect", func(t *testing.T, r *rawClient) { r.nc.Close() }},
		{"idle", func(t *testing.T, r *rawClient) {
			time.Sleep(600 * time.Millisecond)
			if _, err := r.execute("p", 10, nil); err == nil || !strings.HasPrefix(err.Error(), "55000") {
				t.Errorf("execute after the idle timeout: %v, want SQLSTATE 55000", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			open(t, r, "p")
			expectOpen(t, 1)
			// The suspended portal holds no statement slot: another
			// connection runs.
			other := dialRaw(t, addr)
			if err := simple(t, other, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			tc.end(t, r)
			expectOpen(t, 0)
		})
	}

	t.Run("cursors in transactions", func(t *testing.T) {
		r := dialRaw(t, addr)
		if err := simple(t, r, `BEGIN; DECLARE a CURSOR FOR `+q+`; DECLARE b CURSOR WITH HOLD FOR `+q); err != nil {
			t.Fatal(err)
		}
		expectOpen(t, 2)
		if err := simple(t, r, `DECLARE c CURSOR FOR `+q); err == nil || !strings.HasPrefix(err.Error(), "53400") {
			t.Errorf("third cursor: %v, want SQLSTATE 53400 (max_open_cursors)", err)
		}
		if err := simple(t, r, `COMMIT`); err != nil {
			t.Fatal(err)
		}
		expectOpen(t, 1) // b is WITH HOLD
		if err := simple(t, r, `FETCH 5 FROM b`); err != nil {
			t.Fatal(err)
		}
		if err := simple(t, r, `CLOSE b`); err != nil {
			t.Fatal(err)
		}
		expectOpen(t, 0)
		// Outside BEGIN, a cursor without HOLD ends with its query message.
		if err := simple(t, r, `DECLARE d CURSOR FOR `+q); err != nil {
			t.Fatal(err)
		}
		expectOpen(t, 0)
		if err := simple(t, r, `FETCH 1 FROM d`); err == nil || !strings.HasPrefix(err.Error(), "34000") {
			t.Errorf("FETCH from a cursor of an ended transaction: %v, want SQLSTATE 34000", err)
		}
	})
}

// TestStreamCancel cancels, with a CancelRequest, a plain query streaming an
// endless result and a FETCH ALL from a cursor over one, and checks each
// stops with SQLSTATE 57014 and leaves the session usable.
func TestStreamCancel(t *testing.T) {
	addr, srv, _ := startServerEngine(t, Config{}, engine.Config{Threads: 1})
	cfg, err := pgx.ParseConfig(dsn(addr, "analyst", ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: time.Minute}
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx := context.Background()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `BEGIN; DECLARE endless CURSOR FOR SELECT i FROM range(1000000000000) t(i)`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`SELECT i FROM range(1000000000000) t(i)`, `FETCH ALL FROM endless`} {
		t.Run(q, func(t *testing.T) {
			qctx, cancel := context.WithCancel(ctx)
			defer cancel()
			start := time.Now()
			rows, err := c.Query(qctx, q)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				if n++; n == 100_000 {
					cancel() // rows are streaming: stop them
				}
			}
			err = rows.Err()
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
				t.Fatalf("after %d rows: %v, want SQLSTATE 57014", n, err)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("cancel took effect after %s", d)
			}
			t.Logf("cancelled after %d rows, %s", n, time.Since(start))
		})
	}
	// A cancelled FETCH fails the cursor, as a failed statement does in
	// PostgreSQL; the session goes on.
	if _, err := c.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := c.QueryRow(ctx, `SELECT 42`).Scan(&v); err != nil || v != 42 {
		t.Errorf("after cancel: %d, %v", v, err)
	}
	if n := srv.openResults.Load(); n != 0 {
		t.Errorf("%d results still open", n)
	}
}

// TestStreamAudit checks a row-limited portal and a cursor are audited once
// each, when they end, with the rows they handed out.
func TestStreamAudit(t *testing.T) {
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	addr, _, _ := startServerEngine(t, Config{}, engine.Config{}, WithAuditor(cat))
	r := dialRaw(t, addr)
	const pq, cq = `SELECT i FROM range(1000) t(i)`, `SELECT i FROM range(500) t(i)`
	r.send(&pgproto3.Parse{Query: pq}, &pgproto3.Bind{})
	for range 3 {
		if _, err := r.execute("", 7, nil); err != nil {
			t.Fatal(err)
		}
	}
	r.send(&pgproto3.Sync{}) // closes the portal after 21 rows
	r.until(nil)
	r.send(&pgproto3.Query{String: `BEGIN; DECLARE c CURSOR FOR ` + cq + `; FETCH 300 FROM c; FETCH 300 FROM c; COMMIT`})
	if _, err := r.until(nil); err != nil {
		t.Fatal(err)
	}
	log, err := cat.AuditLog(ctx, catalog.AuditFilter{User: "analyst"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, e := range log {
		got[e.Statement] += e.Rows
		if e.Outcome != catalog.AuditOK {
			t.Errorf("%q: outcome %s (%s)", e.Statement, e.Outcome, e.Error)
		}
	}
	for stmt, rows := range map[string]int64{pq: 21, cq: 500, "FETCH 300 FROM c": 500} {
		if got[stmt] != rows {
			t.Errorf("audit of %q: %d rows, want %d (log %v)", stmt, got[stmt], rows, got)
		}
	}
}

// BenchmarkStream measures how fast a large result streams to real clients:
// bigQuery (5M rows, ~270 MB as text) read by pgx over the simple protocol
// (text) and the extended protocol (binary where the types allow), and by
// psql reading through a cursor (FETCH_COUNT). Run it with -benchtime=1x.
func BenchmarkStream(b *testing.B) {
	addr, _, _ := startServerEngine(b, Config{}, engine.Config{MemoryLimit: "256MB"})
	ctx := context.Background()
	report := func(b *testing.B, rows, bytes int64) {
		secs := b.Elapsed().Seconds()
		b.ReportMetric(float64(rows)/secs, "rows/s")
		b.ReportMetric(float64(bytes)/secs/1e6, "MB/s")
		b.ReportMetric(0, "ns/op")
	}
	b.Run("pgx-simple", func(b *testing.B) {
		c := connect(b, dsn(addr, "analyst", ""), pgx.QueryExecModeSimpleProtocol)
		var rows, size int64
		for b.Loop() {
			rr := c.PgConn().Exec(ctx, bigQuery)
			for rr.NextResult() {
				r := rr.ResultReader()
				for r.NextRow() {
					rows++
					for _, v := range r.Values() {
						size += int64(len(v))
					}
				}
				if _, err := r.Close(); err != nil {
					b.Fatal(err)
				}
			}
			if err := rr.Close(); err != nil {
				b.Fatal(err)
			}
		}
		report(b, rows, size)
	})
	b.Run("pgx-extended", func(b *testing.B) {
		c := connect(b, dsn(addr, "analyst", ""), pgx.QueryExecModeCacheStatement)
		var rows, size int64
		for b.Loop() {
			rs, err := c.Query(ctx, bigQuery)
			if err != nil {
				b.Fatal(err)
			}
			for rs.Next() {
				rows++
				for _, v := range rs.RawValues() {
					size += int64(len(v))
				}
			}
			if err := rs.Err(); err != nil {
				b.Fatal(err)
			}
		}
		report(b, rows, size)
	})
	b.Run("psql-fetch-count", func(b *testing.B) {
		requireClient(b, "psql", "postgresql-client-15")
		host, port, _ := strings.Cut(addr, ":")
		var rows, size int64
		for b.Loop() {
			cmd := exec.Command("psql", "-X", "-A", "-t", "-h", host, "-p", port, "-U", "analyst", "-d", "medlake",
				"-v", "FETCH_COUNT=10000", "-c", bigQuery)
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				rows++
				size += int64(len(sc.Bytes()))
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
		}
		if rows != int64(b.N)*bigRows {
			b.Fatalf("psql printed %d rows, want %d", rows, int64(b.N)*bigRows)
		}
		report(b, rows, size)
	})
}
