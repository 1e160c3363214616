package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/hub"
	"github.com/medlake/medlake/hub/maintain"
	"github.com/medlake/medlake/protocol/feed"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
)

const benchReportsUsage = `Usage: medlake bench reports [flags]

Generates seed-shaped records (adt_events, bed_census, vitals, lab_results), loads the
same rows into medlake lake tables (written as the hub writes them: its table schema
with lineage columns, its partitioning and sort order, zstd Parquet, one Iceberg commit
per chunk, rollups maintained at each commit, then compacted as the maintenance runner
compacts them) and into a PostgreSQL 15 it starts on
127.0.0.1 (COPY, then indexes and ANALYZE), then runs the same report queries through
medlake's query engine (a session, as pgwire runs them) and through PostgreSQL, several
times each, and prints the median times and the speed-up as Markdown.
`

// benchTableShare is each generated table's share of --rows; bed_census has its natural
// volume (every unit of every facility, hourly).
var benchTableShare = map[string]float64{"lab_results": 0.60, "vitals": 0.25, "adt_events": 0.15}

var benchTables = []string{"adt_events", "bed_census", "vitals", "lab_results"}

func runBenchReports(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		rows                  int64
		facilities, days      int
		reps, chunkRows       int
		seed                  int64
		work, pgBuffers, mem  string
		keep, noPG, noRollups bool
		noCompact             bool
	)
	fs := flag.NewFlagSet("medlake bench reports", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchReportsUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Int64Var(&rows, "rows", 50_000_000, "rows to generate, over all tables (bed_census adds its natural volume)")
	fs.IntVar(&facilities, "facilities", 40, "facilities (grouped into tenants of about seven)")
	fs.IntVar(&days, "days", 60, "days in the window")
	fs.Int64Var(&seed, "seed", 1, "generator seed")
	fs.IntVar(&reps, "reps", 5, "timed repetitions of each query (after one warm-up run)")
	fs.IntVar(&chunkRows, "commit-rows", 2_000_000, "rows per Iceberg commit when loading the lake")
	fs.StringVar(&work, "work", "", "working directory (default: a new temporary directory)")
	fs.StringVar(&pgBuffers, "pg-shared-buffers", "4GB", "PostgreSQL shared_buffers")
	fs.StringVar(&mem, "memory-limit", "8GB", "DuckDB memory limit")
	fs.BoolVar(&keep, "keep", false, "keep the working directory")
	fs.BoolVar(&noPG, "no-postgres", false, "skip PostgreSQL (medlake times only)")
	fs.BoolVar(&noRollups, "no-rollups", false, "load without rollups (raw-data query times)")
	fs.BoolVar(&noCompact, "no-compact", false, "skip compacting the tables after loading (the maintenance runner compacts them every 10 minutes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "medlake-bench-reports-"); err != nil {
			return err
		}
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	so := gen.StreamOptions{Seed: seed, Facilities: facilities, Days: days}
	start, _ := gen.StreamWindow(so)
	tenants, err := gen.StreamTenants(so)
	if err != nil {
		return err
	}

	cat, err := catalog.Open(ctx, catalog.Config{DataDir: filepath.Join(work, "lake")})
	if err != nil {
		return err
	}
	defer cat.Close()

	var pg *pgx.Conn
	if !noPG {
		srv, err := stack.StartServer(stack.NamePostgres, "MEDLAKE_PG_SHARED_BUFFERS="+pgBuffers)
		if err != nil {
			return fmt.Errorf("starting postgresql: %w", err)
		}
		defer srv.Close()
		if pg, err = pgx.Connect(ctx, srv.Get("PG_DSN")); err != nil {
			return fmt.Errorf("connecting to postgresql: %w", err)
		}
		defer pg.Close(context.WithoutCancel(ctx))
		for _, s := range []string{"SET TimeZone = 'UTC'", "SET maintenance_work_mem = '1GB'"} {
			if _, err := pg.Exec(ctx, s); err != nil {
				return fmt.Errorf("postgresql %s: %w", s, err)
			}
		}
	}

	loadStart := time.Now()
	var total int64
	for _, t := range benchTables {
		perDay := 0
		if share, ok := benchTableShare[t]; ok {
			perDay = max(1, int(math.Round(float64(rows)*share/float64(facilities*days))))
		}
		o := so
		o.RowsPerFacilityDay = perDay
		n, err := benchLoadTable(ctx, cat, pg, o, t, chunkRows, !noRollups, log)
		if err != nil {
			return fmt.Errorf("loading %s: %w", t, err)
		}
		total += n
	}
	loadTime := time.Since(loadStart)
	var compactTime time.Duration
	if !noCompact {
		// What the maintenance runner does within its interval: merge each partition's
		// small files into files of the target size, sorted by the table's sort order.
		t := time.Now()
		opts := maintain.DefaultConfig().CompactOptions()
		for _, name := range benchTables {
			fmt.Fprintf(os.Stderr, "compacting %s\n", name)
			res, err := maintain.Compact(ctx, maintain.CatalogTables(cat), name, opts)
			if err != nil {
				return fmt.Errorf("compacting %s: %w", name, err)
			}
			fmt.Fprintf(os.Stderr, "compacted %s: %d files into %d\n", name, res.FilesRemoved, res.FilesAdded)
		}
		compactTime = time.Since(t)
	}
	if pg != nil {
		if err := benchIndexPG(ctx, pg); err != nil {
			return err
		}
		if _, err := pg.Exec(ctx, "SET work_mem = '256MB'"); err != nil {
			return err
		}
	}

	fmt.Fprintln(os.Stderr, "opening the query engine (fetching data files into its cache)")
	engStart := time.Now()
	eng, err := engine.New(ctx, engine.Config{CacheDir: filepath.Join(work, "cache"), CacheMaxBytes: 64 << 30, MemoryLimit: mem},
		cat.Iceberg(), catalog.DefaultNamespace, log)
	if err != nil {
		return err
	}
	defer eng.Close()
	engOpen := time.Since(engStart)

	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "### medlake bench reports (%s, %d cores, %s/%s, %s)\n\n", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.DateOnly))
	fmt.Fprintf(stdout, "Command: `medlake bench reports --rows %d --facilities %d --days %d --seed %d --reps %d --commit-rows %d%s%s%s`\n\n",
		rows, facilities, days, seed, reps, chunkRows, map[bool]string{true: " --no-rollups"}[noRollups], map[bool]string{true: " --no-postgres"}[noPG],
		map[bool]string{true: " --no-compact"}[noCompact])
	into := "the lake and PostgreSQL together"
	if noPG {
		into = "the lake"
	}
	compacted := "not compacted"
	if !noCompact {
		compacted = "compacted in " + compactTime.Round(time.Second).String()
	}
	files := make([]string, len(benchTables))
	for i, name := range benchTables {
		n, err := benchDataFiles(ctx, cat, name)
		if err != nil {
			return err
		}
		files[i] = fmt.Sprintf("%s %d", name, n)
	}
	fmt.Fprintf(stdout, "Data: %d rows in %d tables, %d facilities of %d tenants, %d days from %s; loaded into %s in %s; lake %s; data files: %s; engine opened in %s\n\n",
		total, len(benchTables), facilities, len(tenants), days, start.Format(time.DateOnly), into, loadTime.Round(time.Second),
		compacted, strings.Join(files, ", "), engOpen.Round(time.Millisecond))

	queries := benchQueries(start, days, tenants)
	// Each principal has two sessions: one as served (rollups, file pruning and the
	// elapsed-time rewrite on), one running the SQL as written over every file of the
	// tables, to show what the rewrites bring.
	type pair struct{ served, plain *engine.Session }
	sessions := map[string]pair{}
	for _, q := range queries {
		if _, ok := sessions[q.tenant]; ok {
			continue
		}
		p := auth.Principal{User: "bench", Admin: true}
		if q.tenant != "" {
			p = auth.Principal{User: "bench-" + q.tenant, Tenant: q.tenant}
		}
		var ss [2]*engine.Session
		for i := range ss {
			if ss[i], err = eng.Session(ctx, p); err != nil {
				return err
			}
			defer ss[i].Close()
		}
		ss[1].SetRewrites(false, false)
		ss[1].SetExpressionRewrites(false)
		sessions[q.tenant] = pair{ss[0], ss[1]}
	}
	fmt.Fprintf(stdout, "| query | rows | medlake | medlake, no rewrites | PostgreSQL | speed-up | speed-up without rewrites |\n|---|---:|---:|---:|---:|---:|---:|\n")
	var ratios, plainRatios []float64
	var worst time.Duration
	for _, q := range queries {
		fmt.Fprintf(os.Stderr, "running %s\n", q.name)
		var read []string
		mt, mrows, err := benchTime(reps, func() (int, error) {
			n, tables, err := benchEngineQuery(ctx, sessions[q.tenant].served, q.sql)
			read = tables
			return n, err
		})
		if err != nil {
			return fmt.Errorf("medlake %s: %w", q.name, err)
		}
		name := q.name
		if slices.ContainsFunc(read, func(t string) bool { return strings.HasSuffix(t, "__daily") }) {
			name += " (rollup)"
		}
		worst = max(worst, mt)
		nt, nrows, err := benchTime(reps, func() (int, error) {
			n, _, err := benchEngineQuery(ctx, sessions[q.tenant].plain, q.sql)
			return n, err
		})
		if err != nil {
			return fmt.Errorf("medlake without rewrites %s: %w", q.name, err)
		}
		if nrows != mrows {
			return fmt.Errorf("%s: medlake returned %d rows, %d without rewrites", q.name, mrows, nrows)
		}
		pgCell, ratioCell, plainCell := "—", "—", "—"
		if pg != nil {
			pt, prows, err := benchTime(reps, func() (int, error) { return benchPGQuery(ctx, pg, q.pgSQL()) })
			if err != nil {
				return fmt.Errorf("postgresql %s: %w", q.name, err)
			}
			if prows != mrows {
				return fmt.Errorf("%s: medlake returned %d rows, postgresql %d", q.name, mrows, prows)
			}
			r, rp := pt.Seconds()/mt.Seconds(), pt.Seconds()/nt.Seconds()
			ratios, plainRatios = append(ratios, r), append(plainRatios, rp)
			pgCell, ratioCell, plainCell = fmtDur(pt), fmt.Sprintf("%.1f×", r), fmt.Sprintf("%.1f×", rp)
		}
		fmt.Fprintf(stdout, "| %s | %d | %s | %s | %s | %s | %s |\n", name, mrows, fmtDur(mt), fmtDur(nt), pgCell, ratioCell, plainCell)
	}
	fmt.Fprintln(stdout)
	if len(ratios) > 0 {
		slices.Sort(ratios)
		slices.Sort(plainRatios)
		fmt.Fprintf(stdout, "Median speed-up: %.1f× (min %.1f×, max %.1f×); without rewrites %.1f×. Slowest medlake query %s.\n\n",
			median(ratios), ratios[0], ratios[len(ratios)-1], median(plainRatios), fmtDur(worst))
	}
	return nil
}

// benchDataFiles counts the data files of a lake table's current snapshot.
func benchDataFiles(ctx context.Context, cat *catalog.Catalog, name string) (int, error) {
	tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(name))
	if err != nil {
		return 0, fmt.Errorf("loading table %s: %w", name, err)
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return 0, fmt.Errorf("planning files of table %s: %w", name, err)
	}
	return len(tasks), nil
}

func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1e3)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// benchTime runs fn once to warm caches, then reps times, and returns the median time
// and the row count.
func benchTime(reps int, fn func() (int, error)) (time.Duration, int, error) {
	n, err := fn()
	if err != nil {
		return 0, 0, err
	}
	times := make([]time.Duration, 0, reps)
	for range max(reps, 1) {
		t := time.Now()
		if _, err := fn(); err != nil {
			return 0, 0, err
		}
		times = append(times, time.Since(t))
	}
	slices.Sort(times)
	if len(times)%2 == 1 {
		return times[len(times)/2], n, nil
	}
	return (times[len(times)/2-1] + times[len(times)/2]) / 2, n, nil
}

// benchEngineQuery prepares and runs sql in s, reading every row, as pgwire does, and
// returns the row count and the tables read.
func benchEngineQuery(ctx context.Context, s *engine.Session, sql string) (int, []string, error) {
	st, err := s.Prepare(ctx, sql)
	if err != nil {
		return 0, nil, err
	}
	defer st.Close()
	n := 0
	err = st.Query(ctx, nil, func([]driver.Value) error { n++; return nil })
	return n, st.Tables, err
}

func benchPGQuery(ctx context.Context, pg *pgx.Conn, sql string) (int, error) {
	rows, err := pg.Query(ctx, sql)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if _, err := rows.Values(); err != nil {
			return 0, err
		}
		n++
	}
	return n, rows.Err()
}

type benchQuery struct {
	name   string
	sql    string // DuckDB (medlake)
	pg     string // PostgreSQL, when it differs
	tenant string // run as a user of this tenant (PostgreSQL gets the filter in pg)
}

func (q benchQuery) pgSQL() string {
	if q.pg != "" {
		return q.pg
	}
	return q.sql
}

// benchQueries are the report queries, over the window starting at start.
func benchQueries(start time.Time, days int, tenants []gen.Tenant) []benchQuery {
	ts := func(t time.Time) string { return "'" + t.Format("2006-01-02 15:04:05") + "+00'" }
	end := start.AddDate(0, 0, days)
	week := ts(end.AddDate(0, 0, -7))
	month := ts(end.AddDate(0, 0, -30))
	endS := ts(end)
	fac := tenants[0].Facilities[0].ID
	tenant := tenants[len(tenants)/2]
	q := []benchQuery{
		{name: "census by facility and day", sql: `SELECT _facility, census_date, sum(beds_occupied) AS occupied, sum(beds_total) AS beds, max(occupancy_pct) AS peak_pct
FROM bed_census GROUP BY _facility, census_date ORDER BY _facility, census_date`},
		{name: "admissions per week", sql: `SELECT date_trunc('week', event_time) AS week, _facility, count(*) AS admissions
FROM adt_events WHERE event_type = 'A01' GROUP BY date_trunc('week', event_time), _facility ORDER BY week, _facility`},
		{name: "lab turnaround percentiles", sql: `SELECT test_code, count(*) AS n,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resulted_at - collected_at)) / 60 AS p50_min,
  percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM resulted_at - collected_at)) / 60 AS p90_min
FROM lab_results WHERE resulted_at IS NOT NULL AND collected_at >= ` + month + ` GROUP BY test_code ORDER BY test_code`},
		{name: "top diagnoses", sql: `SELECT diagnosis_code, count(*) AS admissions
FROM adt_events WHERE event_type = 'A01' GROUP BY diagnosis_code ORDER BY admissions DESC, diagnosis_code LIMIT 10`},
		{name: "abnormal labs by facility and month", sql: `SELECT _facility, date_trunc('month', collected_at) AS month, count(*) AS results,
  count(*) FILTER (WHERE abnormal_flag IS NOT NULL) AS abnormal
FROM lab_results GROUP BY _facility, date_trunc('month', collected_at) ORDER BY _facility, month`},
		{name: "facility drill-down, last 7 days", sql: `SELECT date_trunc('day', collected_at) AS day, test_code, count(*) AS results, avg(value) AS mean, min(value) AS lo, max(value) AS hi
FROM lab_results WHERE _facility = '` + fac + `' AND collected_at >= ` + week + ` AND collected_at < ` + endS + `
GROUP BY date_trunc('day', collected_at), test_code ORDER BY day, test_code`},
		{name: "top-N: highest potassium, last 30 days", sql: `SELECT _facility, patient_id, value, collected_at
FROM lab_results WHERE test_code = '2823-3' AND collected_at >= ` + month + ` ORDER BY value DESC, lab_id LIMIT 20`},
		{name: "vitals per facility and day", sql: `SELECT _facility, date_trunc('day', taken_at) AS day, count(*) AS readings, avg(heart_rate) AS hr, max(heart_rate) AS hr_max, min(spo2) AS spo2_min
FROM vitals GROUP BY _facility, date_trunc('day', taken_at) ORDER BY _facility, day`},
		{name: "length of stay by facility", sql: `SELECT a._facility, count(*) AS stays, avg(extract(epoch FROM d.event_time - a.event_time)) / 3600 AS avg_los_hours
FROM adt_events a JOIN adt_events d ON d.visit_id = a.visit_id AND d.event_type = 'A03'
WHERE a.event_type = 'A01' GROUP BY a._facility ORDER BY a._facility`},
		{name: "tenant dashboard: labs per facility, last 7 days", tenant: tenant.ID,
			sql: `SELECT _facility, test_code, count(*) AS results, count(*) FILTER (WHERE abnormal_flag IS NOT NULL) AS abnormal
FROM lab_results WHERE collected_at >= ` + week + ` GROUP BY _facility, test_code ORDER BY _facility, test_code`,
			pg: `SELECT _facility, test_code, count(*) AS results, count(*) FILTER (WHERE abnormal_flag IS NOT NULL) AS abnormal
FROM lab_results WHERE _tenant = '` + tenant.ID + `' AND collected_at >= ` + week + ` GROUP BY _facility, test_code ORDER BY _facility, test_code`},
	}
	return q
}

// benchIndexPG creates the indexes a PostgreSQL deployment of these reports would have,
// then VACUUM ANALYZE (statistics and the visibility map index-only scans need).
func benchIndexPG(ctx context.Context, pg *pgx.Conn) error {
	stmts := []string{
		"CREATE INDEX ON adt_events (_facility, event_time)",
		"CREATE INDEX ON adt_events (_tenant, event_time)",
		"CREATE INDEX ON adt_events (event_type, event_time)",
		"CREATE INDEX ON adt_events (visit_id)",
		"CREATE INDEX ON bed_census (_facility, census_date)",
		"CREATE INDEX ON vitals (_facility, taken_at)",
		"CREATE INDEX ON vitals (_tenant, taken_at)",
		"CREATE INDEX ON lab_results (_facility, collected_at)",
		"CREATE INDEX ON lab_results (_tenant, collected_at)",
		"CREATE INDEX ON lab_results (test_code, collected_at)",
		"VACUUM ANALYZE",
	}
	for _, s := range stmts {
		fmt.Fprintf(os.Stderr, "postgresql: %s\n", s)
		t := time.Now()
		if _, err := pg.Exec(ctx, s); err != nil {
			return fmt.Errorf("postgresql %s: %w", s, err)
		}
		fmt.Fprintf(os.Stderr, "  %s\n", time.Since(t).Round(time.Second))
	}
	return nil
}

// benchLoadTable streams one table's rows into the lake (chunks of chunkRows rows, one
// Iceberg commit each, written by a goroutine) and, when pg is set, into PostgreSQL
// through COPY (another goroutine), and returns the row count.
func benchLoadTable(ctx context.Context, cat *catalog.Catalog, pg *pgx.Conn, o gen.StreamOptions, name string, chunkRows int, rollups bool, log *slog.Logger) (int64, error) {
	y, err := gen.FeedYAML(name)
	if err != nil {
		return 0, err
	}
	def, err := feed.Parse(y)
	if err != nil {
		return 0, fmt.Errorf("feed of %s: %w", name, err)
	}
	cols, err := gen.Columns(name)
	if err != nil {
		return 0, err
	}
	tbl, err := hub.CreateTable(ctx, cat, def, log)
	if err != nil {
		return 0, err
	}
	sc := def.TableSchema()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The lake writer.
	chunks := make(chan arrow.RecordBatch, 1)
	lakeDone := make(chan error, 1)
	go func() {
		var err error
		n := 0
		for rec := range chunks {
			if err == nil {
				n++
				err = benchCommit(ctx, cat, def, &tbl, rec, n, rollups)
				if err != nil {
					cancel(err)
				}
			}
			rec.Release()
		}
		lakeDone <- err
	}()

	// The PostgreSQL writer.
	var pw *io.PipeWriter
	var bw *bufio.Writer
	pgDone := make(chan error, 1)
	if pg != nil {
		if err := benchCreatePG(ctx, pg, name, sc); err != nil {
			close(chunks)
			<-lakeDone
			return 0, err
		}
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		bw = bufio.NewWriterSize(pw, 1<<20)
		go func() {
			_, err := pg.PgConn().CopyFrom(ctx, pr, "COPY "+name+" FROM STDIN")
			pr.CloseWithError(err)
			if err != nil {
				cancel(err)
			}
			pgDone <- err
		}()
	} else {
		pgDone <- nil
	}

	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	var (
		n, inChunk int64
		line       []byte
		curDay     int64 = -1
		curFac     string
		fileName   string
		sha, batch string
		rowInFile  int64
		ingested   int64
	)
	idx := func(col string) int { return sc.FieldIndices(col)[0] }
	iFile, iRow, iVersion := idx(feed.ColSourceFile), idx(feed.ColRow), idx(feed.ColFeedVersion)
	iSHA, iBatch, iIngested := idx(feed.ColSourceSHA256), idx(feed.ColBatchID), idx(feed.ColIngestedAt)
	iLineage := []int{idx(feed.ColTenant), idx(feed.ColFacility), idx(feed.ColAgent), idx(feed.ColFeed)}
	var iNull []int // columns the generator does not fill (_rescued)
	for i, f := range sc.Fields() {
		if i >= len(cols) && !slices.Contains([]int{iFile, iRow, iVersion, iSHA, iBatch, iIngested}, i) && !slices.Contains(iLineage, i) {
			iNull = append(iNull, i)
		}
		_ = f
	}
	var done atomic.Int64
	stopProgress := benchProgress(name, &done)
	defer stopProgress()
	flush := func() error {
		if inChunk == 0 {
			return nil
		}
		rec := b.NewRecordBatch()
		inChunk = 0
		select {
		case chunks <- rec:
			return nil
		case <-ctx.Done():
			rec.Release()
			return context.Cause(ctx)
		}
	}
	err = gen.Stream(ctx, o, name, func(f *gen.Facility, row []gen.Value) error {
		t := row[timeColumn(cols, def.PartitionColumn())].Int()
		if d := t / 86400; d != curDay || f.ID != curFac {
			// A new facility day: the lineage of one agent's file of that day.
			curDay, curFac, rowInFile = d, f.ID, 0
			fileName = fmt.Sprintf("%s_%s_%s.csv.gz", f.ID, name, time.Unix(t, 0).UTC().Format("20060102"))
			h := sha256.Sum256([]byte(fileName))
			sha = hex.EncodeToString(h[:])
			batch = hex.EncodeToString(h[:16])
			ingested = (d+1)*86400*1_000_000 + 300_000_000
		}
		rowInFile++
		line = line[:0]
		for i, c := range cols {
			benchAppend(b.Field(i), c.Type, row[i])
			if pg != nil {
				line = benchText(line, c.Type, row[i])
				line = append(line, '\t')
			}
		}
		for _, i := range iNull {
			b.Field(i).AppendNull()
			if pg != nil {
				line = append(line, "\\N\t"...)
			}
		}
		b.Field(iFile).(*array.StringBuilder).Append(fileName)
		b.Field(iRow).(*array.Int64Builder).Append(rowInFile)
		lin := []string{f.Tenant, f.ID, "agent-" + f.ID, def.Name}
		for i, v := range lin {
			b.Field(iLineage[i]).(*array.StringBuilder).Append(v)
		}
		b.Field(iVersion).(*array.Int64Builder).Append(1)
		b.Field(iSHA).(*array.StringBuilder).Append(sha)
		b.Field(iBatch).(*array.StringBuilder).Append(batch)
		b.Field(iIngested).(*array.TimestampBuilder).Append(arrow.Timestamp(ingested))
		if pg != nil {
			line = pgEscape(line, fileName)
			line = append(line, '\t')
			line = strconv.AppendInt(line, rowInFile, 10)
			for _, v := range lin {
				line = append(line, '\t')
				line = pgEscape(line, v)
			}
			line = append(line, "\t1\t"...)
			line = append(line, sha...)
			line = append(line, '\t')
			line = append(line, batch...)
			line = append(line, '\t')
			line = time.UnixMicro(ingested).UTC().AppendFormat(line, "2006-01-02 15:04:05+00")
			line = append(line, '\n')
			if _, err := bw.Write(line); err != nil {
				return fmt.Errorf("copying to postgresql: %w", err)
			}
		}
		n++
		inChunk++
		if n%65536 == 0 {
			done.Store(n)
		}
		if inChunk >= int64(chunkRows) {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	close(chunks)
	if pw != nil {
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}
	done.Store(n)
	errs := []error{err, <-lakeDone, <-pgDone}
	if err := errors.Join(errs...); err != nil {
		return n, err
	}
	return n, nil
}

// benchProgress prints a table's load progress every 10 s until the returned stop.
func benchProgress(name string, done *atomic.Int64) func() {
	stop := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				n := done.Load()
				fmt.Fprintf(os.Stderr, "loaded %s: %d rows in %s (%.0f rows/s)\n", name, n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(os.Stderr, "loading %s: %d rows, %.0f rows/s\n", name, n, float64(n)/time.Since(start).Seconds())
			}
		}
	}()
	return func() {
		select {
		case <-stop:
		default:
			close(stop)
			<-finished
		}
	}
}

func timeColumn(cols []gen.Column, name string) int {
	for i, c := range cols {
		if c.Name == name {
			return i
		}
	}
	return 0
}

// benchCommit appends one chunk to the lake table as the hub commits a buffer: rows
// sorted by facility and time, one snapshot with the batch ids in its summary, then the
// table's rollups.
func benchCommit(ctx context.Context, cat *catalog.Catalog, def *feed.Definition, tbl **table.Table, rec arrow.RecordBatch, n int, rollups bool) error {
	at := array.NewTableFromRecords(rec.Schema(), []arrow.RecordBatch{rec})
	defer at.Release()
	sorted, err := hub.SortForAppend(ctx, def, at)
	if err != nil {
		return fmt.Errorf("chunk %d: %w", n, err)
	}
	defer sorted.Release()
	txn := (*tbl).NewTransaction()
	props := iceberg.Properties{hub.PropBatchIDs: fmt.Sprintf("bench-%s-%06d", def.Table, n), hub.PropHub: "bench"}
	if err := txn.AppendTable(ctx, sorted, 1<<20, props); err != nil {
		return fmt.Errorf("writing chunk %d: %w", n, err)
	}
	committed, err := txn.Commit(ctx)
	if err != nil {
		return fmt.Errorf("committing chunk %d: %w", n, err)
	}
	*tbl = committed
	if rollups {
		if err := hub.UpdateRollups(ctx, cat, committed, at); err != nil {
			return fmt.Errorf("rollups of chunk %d: %w", n, err)
		}
	}
	return nil
}

func benchCreatePG(ctx context.Context, pg *pgx.Conn, name string, sc *arrow.Schema) error {
	var cols []string
	for _, f := range sc.Fields() {
		var t string
		switch f.Type.ID() {
		case arrow.STRING:
			t = "text"
		case arrow.INT64:
			t = "bigint"
		case arrow.FLOAT64:
			t = "double precision"
		case arrow.BOOL:
			t = "boolean"
		case arrow.DATE32:
			t = "date"
		case arrow.TIMESTAMP:
			t = "timestamptz"
		default:
			return fmt.Errorf("column %s: no postgresql type for %s", f.Name, f.Type)
		}
		cols = append(cols, f.Name+" "+t)
	}
	_, err := pg.Exec(ctx, "CREATE TABLE "+name+" ("+strings.Join(cols, ", ")+")")
	if err != nil {
		return fmt.Errorf("creating postgresql table %s: %w", name, err)
	}
	return nil
}

func benchAppend(b array.Builder, typ string, v gen.Value) {
	if v.Null() {
		b.AppendNull()
		return
	}
	switch typ {
	case feed.TypeString:
		b.(*array.StringBuilder).Append(v.Str())
	case feed.TypeInt:
		b.(*array.Int64Builder).Append(v.Int())
	case feed.TypeFloat:
		b.(*array.Float64Builder).Append(v.Float())
	case feed.TypeBool:
		b.(*array.BooleanBuilder).Append(v.Int() != 0)
	case feed.TypeDate:
		b.(*array.Date32Builder).Append(arrow.Date32(v.Int() / 86400))
	case feed.TypeTimestamp:
		b.(*array.TimestampBuilder).Append(arrow.Timestamp(v.Int() * 1_000_000))
	default:
		b.AppendNull()
	}
}

// benchText appends v in PostgreSQL's COPY text format.
func benchText(b []byte, typ string, v gen.Value) []byte {
	if v.Null() {
		return append(b, `\N`...)
	}
	switch typ {
	case feed.TypeString:
		return pgEscape(b, v.Str())
	case feed.TypeInt:
		return strconv.AppendInt(b, v.Int(), 10)
	case feed.TypeFloat:
		return strconv.AppendFloat(b, v.Float(), 'g', -1, 64)
	case feed.TypeBool:
		if v.Int() != 0 {
			return append(b, 't')
		}
		return append(b, 'f')
	case feed.TypeDate:
		return time.Unix(v.Int(), 0).UTC().AppendFormat(b, "2006-01-02")
	case feed.TypeTimestamp:
		return time.Unix(v.Int(), 0).UTC().AppendFormat(b, "2006-01-02 15:04:05+00")
	}
	return append(b, `\N`...)
}

func pgEscape(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '\t':
			b = append(b, `\t`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		default:
			b = append(b, c)
		}
	}
	return b
}
