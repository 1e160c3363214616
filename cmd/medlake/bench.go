package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/schollz/progressbar/v3"

	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

const benchUsage = `Usage: medlake bench [flags]

Measures, on seed-shaped generated data, in one process on embedded defaults:

  agent parse      unpack + CSV/TXT normalize + Arrow IPC zstd encode, rows/s (one core)
  end to end       every archive dropped at once: rows/s from drop to queryable, and the
                   hub's commit rows/s (rows committed / time spent committing)
  latency          archives dropped one at a time: drop-to-queryable p50, p99, max

Results go to stdout as Markdown, ready for BENCHMARKS.md.
`

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "reports" {
		return runBenchReports(ctx, args[1:], stdout)
	}
	var (
		facilities, files, latencyFiles int
		seed                            int64
		keep                            bool
	)
	fs := flag.NewFlagSet("medlake bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&facilities, "facilities", 8, "facilities to generate (one agent each)")
	fs.IntVar(&files, "files-per-facility", 6, "archives per facility")
	fs.IntVar(&latencyFiles, "latency-files", 30, "archives dropped one at a time for the latency run")
	fs.Int64Var(&seed, "seed", 1, "generator seed")
	fs.BoolVar(&keep, "keep", false, "keep the working directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "medlake-bench-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	opts := gen.DefaultOptions()
	opts.Out, opts.Seed, opts.Facilities, opts.FilesPerFacility = filepath.Join(work, "gen"), seed, facilities, files
	opts.Formats = []string{gen.FormatCSV, gen.FormatTXT}
	fmt.Fprintf(os.Stderr, "generating %d archives\n", facilities*files)
	m, err := gen.Run(ctx, opts, nil)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "### medlake bench (%s, %d cores, %s/%s, %s)\n\n", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.DateOnly))
	fmt.Fprintf(stdout, "Command: `medlake bench --facilities %d --files-per-facility %d --latency-files %d --seed %d`\n\n", facilities, files, latencyFiles, seed)
	fmt.Fprintf(stdout, "Data: %d archives, %d rows, %.1f MB compressed (gen seed %d, CSV and TXT)\n\n", len(m.Files), m.Rows, float64(m.Bytes)/1e6, seed)

	if err := benchParse(ctx, stdout, m, opts.Out); err != nil {
		return err
	}
	// The latency run needs content the lake has not seen: agents ingest a file's
	// content once, whatever its name.
	lopts := opts
	lopts.Out, lopts.Seed = filepath.Join(work, "gen-latency"), seed+1
	lopts.FilesPerFacility = max(1, (latencyFiles+facilities-1)/facilities)
	lm, err := gen.Run(ctx, lopts, nil)
	if err != nil {
		return err
	}
	return benchSystem(ctx, stdout, m, opts.Out, lm, lopts.Out, work, latencyFiles)
}

// benchParse runs the agent's per-file work on one goroutine.
func benchParse(ctx context.Context, stdout io.Writer, m *gen.Manifest, genDir string) error {
	p, err := newFileParser(filepath.Join(genDir, "feeds"))
	if err != nil {
		return err
	}
	start := time.Now()
	for _, f := range m.Files {
		if f.Pending {
			continue
		}
		if err := p.parse(ctx, filepath.Join(genDir, filepath.FromSlash(f.Path))); err != nil {
			return err
		}
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "| measure | result |\n|---|---|\n")
	fmt.Fprintf(stdout, "| agent parse (unpack + normalize + Arrow IPC zstd), one goroutine | %.0f rows/s (%d rows in %s; %.1f MB of batches) |\n",
		float64(p.rows)/el.Seconds(), p.rows, el.Round(time.Millisecond), float64(p.bytes)/1e6)
	if p.rows != m.Rows {
		return fmt.Errorf("parsed %d rows, manifest says %d", p.rows, m.Rows)
	}
	return nil
}

// fileParser does an agent's per-file work, as the agent does it, minus the spool: every
// entry of a file is unpacked, normalized into batches shared by the file's entries of
// one feed, and each batch encoded as Arrow IPC with zstd. Any reject is an error: it
// measures generated data, which has none.
type fileParser struct {
	defs  []*feed.Definition
	norms map[string]*normalize.Normalizer
	rows  int64 // accepted
	bytes int64 // encoded batches
}

func newFileParser(feedsDir string) (*fileParser, error) {
	defs, err := feed.ParseFS(os.DirFS(feedsDir))
	if err != nil {
		return nil, err
	}
	p := &fileParser{defs: defs, norms: map[string]*normalize.Normalizer{}}
	for _, d := range defs {
		if p.norms[d.Name], err = normalize.New(d, normalize.Options{}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *fileParser) parse(ctx context.Context, path string) error {
	batchers := map[string]*normalize.Batcher{}
	defer func() {
		for _, b := range batchers {
			b.Release()
		}
	}()
	err := unpack.Walk(ctx, path, unpack.DefaultLimits(), func(e unpack.Entry) error {
		i := slices.IndexFunc(p.defs, func(d *feed.Definition) bool { return d.Matches(e.BaseName()) })
		if i < 0 || e.Reader == nil {
			return fmt.Errorf("%s: no feed", e.Name)
		}
		n := p.norms[p.defs[i].Name]
		b, ok := batchers[p.defs[i].Name]
		if !ok {
			b = n.NewBatcher(func(rec arrow.RecordBatch) error {
				payload, err := protocol.EncodeRecords(rec.Schema(), []arrow.RecordBatch{rec})
				p.bytes += int64(len(payload))
				return err
			})
			batchers[p.defs[i].Name] = b
		}
		st, err := n.RunInto(ctx, e.Reader, e.Name, b, func(r normalize.Reject) error {
			return fmt.Errorf("unexpected reject: %s row %d: %s", r.Source, r.Row, r.Reason)
		})
		p.rows += st.Accepted
		return err
	})
	for _, b := range batchers {
		if ferr := b.Flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

// benchSystem runs the demo's in-process system and measures throughput and latency.
func benchSystem(ctx context.Context, stdout io.Writer, m *gen.Manifest, genDir string, lm *gen.Manifest, latencyDir, work string, latencyFiles int) error {
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(work, "node")
	cfg.LogLevel = "warn"
	for _, addr := range []*string{&cfg.Broker.Listen, &cfg.Query.Listen, &cfg.HTTPListen} {
		var err error
		if *addr, err = freeLoopback(); err != nil {
			return err
		}
	}
	cfg.Ingest.FeedsDir = filepath.Join(genDir, "feeds")
	if err := cfg.resolve(); err != nil {
		return err
	}
	logger := newLogger(&cfg)
	n, err := startNode(ctx, &cfg, []string{RoleIngest, RoleQuery}, logger)
	if err != nil {
		return err
	}
	defer n.stop()
	d := &demo{cfg: &cfg, logger: logger, facilities: len(m.Tenants), stdout: io.Discard}
	exports := filepath.Join(work, "exports")
	agentCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	wait, err := d.startAgents(agentCtx, m, exports)
	if err != nil {
		return err
	}
	defer func() {
		stopAgents() // before waiting for them, or the wait never ends
		wait()
	}()
	conn, err := pgx.Connect(ctx, "postgres://medlake@"+cfg.Query.Listen+"/medlake?sslmode=disable")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	// End to end: everything at once.
	start := time.Now()
	if err := d.deliver(genDir, exports, 1); err != nil {
		return err
	}
	bar := progressbar.NewOptions64(m.Rows, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("rows queryable"), progressbar.OptionClearOnFinish())
	tables := readyTables(m, lm)
	if err := waitRows(ctx, conn, tables, m.Rows, func(got int64) { _ = bar.Set64(got) }); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "| end to end, %d archives dropped at once → all rows queryable | %.0f rows/s (%d rows in %s) |\n",
		len(m.Files), float64(m.Rows)/el.Seconds(), m.Rows, el.Round(time.Millisecond))
	rowsCommitted, commitSecs := commitStats(n)
	if commitSecs > 0 {
		fmt.Fprintf(stdout, "| hub commit (rows committed / time inside commits) | %.0f rows/s (%d rows in %.2f s of commits) |\n",
			rowsCommitted/commitSecs, int64(rowsCommitted), commitSecs)
	}

	// Latency: one archive at a time, from rename into the folder to visible in a query.
	// The node's delivery histograms are read from here on (see medlake status).
	window := newStatusWindows(n.registry)
	var lat []time.Duration
	total := m.Rows
	for i, f := range lm.Files {
		if i >= latencyFiles {
			break
		}
		t0 := time.Now()
		if err := d.deliverOne(latencyDir, exports, f, 2); err != nil {
			return err
		}
		total += f.Rows
		if err := waitRows(ctx, conn, tables, total, nil); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
		fmt.Fprintf(os.Stderr, "\rlatency run %d/%d", i+1, min(latencyFiles, len(lm.Files)))
	}
	fmt.Fprintln(os.Stderr)
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Fprintf(stdout, "| drop-to-queryable latency, %d archives one at a time (quiet period %s, commit interval %s) | p50 %s, p99 %s, max %s |\n",
		len(lat), demoQuietPeriod, cfg.Ingest.CommitInterval, q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	// The same run as the node's own metrics see it (estimates within histogram
	// buckets): measured from each file's mtime, which is its drop (it is written into
	// the folder, then renamed).
	r := window.report(time.Now(), n.ingest.Load())
	f := func(q Quantiles) string {
		if q.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %.2f s, p99 %.2f s (%d)", *q.P50, *q.P99, q.Count)
	}
	for _, t := range r.Tables {
		if t.CommitLag.Count == 0 && t.FreshnessQueryable.Count == 0 {
			continue
		}
		fmt.Fprintf(stdout, "| same run, %s: commit lag / freshness to committed (per batch) / to queryable (per snapshot) | %s; %s; %s |\n",
			t.Table, f(t.CommitLag), f(t.FreshnessCommitted), f(t.FreshnessQueryable))
	}
	return nil
}

// waitRows polls the total row count over tables until it reaches want.
func waitRows(ctx context.Context, conn *pgx.Conn, tables []string, want int64, progress func(int64)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for {
		var got int64
		for _, name := range tables {
			var c int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{name}.Sanitize()).Scan(&c); err == nil {
				got += c
			}
		}
		if progress != nil {
			progress(got)
		}
		if got >= want {
			if got > want {
				return fmt.Errorf("%d rows queryable, more than the %d delivered", got, want)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d rows (have %d): %w", want, got, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readyTables lists the tables the manifests' ingestible files write.
func readyTables(ms ...*gen.Manifest) []string {
	var names []string
	for _, m := range ms {
		for name, t := range m.Tables {
			if t.Ready.Rows > 0 && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

// commitStats reads the hub's commit counters from the node's metrics.
func commitStats(n *node) (rows, seconds float64) {
	families, err := n.registry.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "medlake_hub_rows_committed_total":
				rows += m.GetCounter().GetValue()
			case "medlake_hub_commit_duration_seconds":
				seconds += histogramSum(m.GetHistogram())
			}
		}
	}
	return rows, seconds
}

func histogramSum(h *dto.Histogram) float64 {
	if h == nil {
		return 0
	}
	return h.GetSampleSum()
}

// freeLoopback returns a loopback address whose port was free a moment ago.
func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
