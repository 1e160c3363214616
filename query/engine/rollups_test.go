package engine

import (
	"context"
	"database/sql/driver"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog/rollup"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/internal/testlake"
)

// rollupLabSchema has the columns of lab_results's rollup and a few more.
var rollupLabSchema = arrow.NewSchema([]arrow.Field{
	{Name: "lab_id", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "test_code", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "value", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "abnormal_flag", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "collected_at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
	{Name: "_tenant", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "_facility", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

var rollupCensusSchema = arrow.NewSchema([]arrow.Field{
	{Name: "unit", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "census_date", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	{Name: "beds_total", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "beds_occupied", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "beds_blocked", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "occupancy_pct", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "_tenant", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "_facility", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

var (
	rollupTenants = map[string][]string{"t1": {"f1", "f2"}, "t2": {"f3"}, "t3": {"f4", "f5"}}
	rollupTests   = []string{"2823-3", "2951-2", "718-7", "6690-2"}
	rollupFlags   = []string{"", "H", "L", "HH"}
	rollupUnits   = []string{"ICU", "ED", "MED"}
	rollupEpoch   = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
)

func rollupFacility(r *rand.Rand) (tenant, facility string) {
	tenant = []string{"t1", "t2", "t3"}[r.IntN(3)]
	fs := rollupTenants[tenant]
	return tenant, fs[r.IntN(len(fs))]
}

// labBatch is n random lab rows over 40 days; some hit midnight exactly.
func labBatch(r *rand.Rand, n int, seq *int) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, rollupLabSchema)
	defer b.Release()
	for range n {
		*seq++
		tenant, fac := rollupFacility(r)
		b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("L%06d", *seq))
		b.Field(1).(*array.StringBuilder).Append(rollupTests[r.IntN(len(rollupTests))])
		if r.IntN(10) == 0 {
			b.Field(2).AppendNull()
		} else {
			b.Field(2).(*array.Float64Builder).Append(math.Round(r.NormFloat64()*1000) / 100)
		}
		if f := rollupFlags[r.IntN(len(rollupFlags))]; f == "" {
			b.Field(3).AppendNull()
		} else {
			b.Field(3).(*array.StringBuilder).Append(f)
		}
		at := rollupEpoch.Add(time.Duration(r.Int64N(40*24)) * time.Hour)
		if r.IntN(3) > 0 {
			at = at.Add(time.Duration(r.Int64N(3600)) * time.Second)
		}
		b.Field(4).(*array.TimestampBuilder).Append(arrow.Timestamp(at.UnixMicro()))
		b.Field(5).(*array.StringBuilder).Append(tenant)
		b.Field(6).(*array.StringBuilder).Append(fac)
	}
	return b.NewRecordBatch()
}

func censusBatch(r *rand.Rand, n int) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, rollupCensusSchema)
	defer b.Release()
	for range n {
		tenant, fac := rollupFacility(r)
		b.Field(0).(*array.StringBuilder).Append(rollupUnits[r.IntN(len(rollupUnits))])
		b.Field(1).(*array.Date32Builder).Append(arrow.Date32FromTime(rollupEpoch.AddDate(0, 0, r.IntN(40))))
		total := int64(10 + r.IntN(30))
		b.Field(2).(*array.Int64Builder).Append(total)
		b.Field(3).(*array.Int64Builder).Append(r.Int64N(total))
		if r.IntN(5) == 0 {
			b.Field(4).AppendNull()
		} else {
			b.Field(4).(*array.Int64Builder).Append(r.Int64N(3))
		}
		b.Field(5).(*array.Float64Builder).Append(float64(r.IntN(1000)) / 10)
		b.Field(6).(*array.StringBuilder).Append(tenant)
		b.Field(7).(*array.StringBuilder).Append(fac)
	}
	return b.NewRecordBatch()
}

// appendWithRollup commits rec to the table and, when roll is set, its rollup, as the
// hub's commit does.
func appendWithRollup(tb testing.TB, cat icecatalog.Catalog, name string, rec arrow.RecordBatch, roll bool) {
	tb.Helper()
	ctx := context.Background()
	ident := table.Identifier{testlake.Namespace, name}
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		isc, err := table.ArrowSchemaToIcebergWithFreshIDs(rec.Schema(), false)
		if err != nil {
			tb.Fatal(err)
		}
		if tbl, err = cat.CreateTable(ctx, ident, isc, icecatalog.WithProperties(iceberg.Properties{"format-version": "2"})); err != nil {
			tb.Fatal(err)
		}
	}
	at := array.NewTableFromRecords(rec.Schema(), []arrow.RecordBatch{rec})
	defer at.Release()
	txn := tbl.NewTransaction()
	if err := txn.AppendTable(ctx, at, 1<<20, nil); err != nil {
		tb.Fatal(err)
	}
	tbl, err = txn.Commit(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if !roll {
		return
	}
	def, _ := rollup.Lookup(name)
	agg, err := def.Aggregate(at, memory.DefaultAllocator)
	if err != nil {
		tb.Fatal(err)
	}
	defer agg.Release()
	if err := rollup.Append(ctx, cat, table.Identifier{testlake.Namespace, def.Name()}, tbl, tbl.CurrentSnapshot().SnapshotID, agg); err != nil {
		tb.Fatal(err)
	}
}

// runSession runs q in a session of p and returns its column names, its rows rendered
// and sorted, and the tables it read.
func runSession(tb testing.TB, e *Engine, p auth.Principal, q string) ([]string, []string, []string) {
	tb.Helper()
	ctx := context.Background()
	s, err := e.Session(ctx, p)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	st, err := s.Prepare(ctx, q)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	defer st.Close()
	var cols []string
	for _, c := range st.Columns {
		cols = append(cols, c.Name)
	}
	var out []string
	if err := st.Query(ctx, nil, func(row []driver.Value) error {
		out = append(out, renderRow(row))
		return nil
	}); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	slices.Sort(out)
	return cols, out, st.Tables
}

// runRaw runs q on the engine directly: no scope, no rollups.
func runRaw(tb testing.TB, e *Engine, q string) ([]string, []string) {
	tb.Helper()
	rows, err := e.Query(context.Background(), q)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			tb.Fatal(err)
		}
		dv := make([]driver.Value, len(vals))
		for i, v := range vals {
			dv[i] = v
		}
		out = append(out, renderRow(dv))
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	slices.Sort(out)
	return cols, out
}

// renderRow renders values, floats to 9 significant digits: sums of the same floats in
// another order differ in the last bits.
func renderRow(row []driver.Value) string {
	parts := make([]string, len(row))
	for i, v := range row {
		switch x := v.(type) {
		case float64:
			parts[i] = fmt.Sprintf("%.9g", x)
		case float32:
			parts[i] = fmt.Sprintf("%.6g", x)
		case time.Time:
			parts[i] = x.UTC().Format(time.RFC3339Nano)
		default:
			parts[i] = fmt.Sprintf("%T:%v", v, v)
		}
	}
	return strings.Join(parts, "|")
}

func rollupLake(t *testing.T) (*Engine, icecatalog.Catalog) {
	t.Helper()
	cat := testlake.Catalog(t)
	r := rand.New(rand.NewPCG(7, 11))
	seq := 0
	for range 4 {
		appendWithRollup(t, cat, "lab_results", labBatch(r, 3000, &seq), true)
		appendWithRollup(t, cat, "bed_census", censusBatch(r, 800), true)
	}
	return openEngine(t, cat), cat
}

// randomRollupQuery builds an aggregate query over lab_results that the rollup can
// answer: dimensions, day-or-coarser truncations of collected_at, decomposable
// aggregates, and filters on dimensions and day boundaries.
func randomRollupQuery(r *rand.Rand) string {
	groupables := []string{"_facility", "_tenant", "test_code", "abnormal_flag",
		"date_trunc('day', collected_at)", "date_trunc('week', collected_at)", "date_trunc('month', collected_at)",
		"CAST(collected_at AS DATE)", "upper(test_code) || '-' || coalesce(abnormal_flag, '?')"}
	aggs := []string{"count(*)", "count(value)", "sum(value)", "min(value)", "max(value)", "avg(value)",
		"count(*) FILTER (WHERE abnormal_flag IS NOT NULL)", "sum(value) FILTER (WHERE test_code = '718-7')",
		"max(test_code)", "min(date_trunc('day', collected_at))", "avg(value) * 2", "count(*) * 2 + 1"}
	filters := []string{"_facility IN ('f1', 'f3', 'f4')", "test_code = '2823-3'", "abnormal_flag IS NULL",
		"collected_at >= '2025-03-10'", "collected_at < '2025-03-25 00:00:00+00'", "'2025-03-05' <= collected_at",
		"CAST(collected_at AS DATE) BETWEEN DATE '2025-03-03' AND DATE '2025-03-20'", "_tenant <> 't2'",
		"(test_code = '718-7' OR abnormal_flag = 'H')"}
	var groups []string
	for _, g := range groupables {
		if r.IntN(4) == 0 {
			groups = append(groups, g)
		}
	}
	sel := slices.Clone(groups)
	n := 1 + r.IntN(3)
	for range n {
		sel = append(sel, aggs[r.IntN(len(aggs))])
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM lab_results"
	var where []string
	for _, f := range filters {
		if r.IntN(5) == 0 {
			where = append(where, f)
		}
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if len(groups) > 0 {
		q += " GROUP BY " + strings.Join(groups, ", ")
		if r.IntN(3) == 0 {
			q += " HAVING count(*) > 3"
		}
		q += " ORDER BY 1"
	}
	return q
}

// TestRollupRewriteMatchesRaw is the differential test: randomized aggregate queries
// answered through the rollup give what the table itself gives, for an admin and for
// tenant users (whose scope filters the rollup).
func TestRollupRewriteMatchesRaw(t *testing.T) {
	e, _ := rollupLake(t)
	admin := auth.Principal{User: "admin", Admin: true}
	t2 := auth.Principal{User: "u2", Tenant: "t1"}
	t3f := auth.Principal{User: "u3", Tenant: "t3", Facilities: []string{"f5"}}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 150 {
		q := randomRollupQuery(r)
		p := []auth.Principal{admin, t2, t3f}[i%3]
		raw := q
		if !p.Admin {
			scope := "_tenant = '" + p.Tenant + "'"
			if len(p.Facilities) > 0 {
				scope += " AND _facility IN ('" + strings.Join(p.Facilities, "', '") + "')"
			}
			raw = strings.Replace(q, "FROM lab_results", "FROM (SELECT * FROM lab_results WHERE "+scope+") lab_results", 1)
		}
		cols, got, tables := runSession(t, e, p, q)
		wantCols, want := runRaw(t, e, raw)
		if !slices.Contains(tables, "lab_results__daily") {
			t.Errorf("query %d was not answered from the rollup (read %v): %s", i, tables, q)
		}
		if !slices.Equal(cols, wantCols) {
			t.Errorf("query %d columns %q, want %q: %s", i, cols, wantCols, q)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("query %d as %s differs from the table:\n%s\ngot  %d rows %.400q\nwant %d rows %.400q", i, p.User, q, len(got), got, len(want), want)
		}
	}
}

// TestRollupRewriteDeclines lists queries the rollup cannot answer: each reads the table
// and still gives the table's answer.
func TestRollupRewriteDeclines(t *testing.T) {
	e, _ := rollupLake(t)
	admin := auth.Principal{User: "admin", Admin: true}
	for _, q := range []string{
		`SELECT test_code, value FROM lab_results WHERE value > 10`,                                     // not an aggregate
		`SELECT count(*) FROM lab_results WHERE collected_at > '2025-03-10'`,                            // > a midnight is not of whole days
		`SELECT count(*) FROM lab_results WHERE collected_at >= '2025-03-10 12:00:00'`,                  // not a midnight
		`SELECT count(*) FROM lab_results WHERE collected_at BETWEEN '2025-03-10' AND '2025-03-12'`,     // inclusive upper bound
		`SELECT date_trunc('hour', collected_at), count(*) FROM lab_results GROUP BY 1`,                 // finer than a day
		`SELECT median(value) FROM lab_results`,                                                         // not decomposable
		`SELECT count(DISTINCT value) FROM lab_results`,                                                 // distinct over a measure
		`SELECT sum(length(test_code)) FROM lab_results`,                                                // sum over a dimension counts rows
		`SELECT test_code, count(lab_id) FROM lab_results GROUP BY test_code`,                           // not a measure
		`SELECT max(value) AS test_code FROM lab_results`,                                               // alias named like a column
		`SELECT count(*) FROM lab_results l JOIN bed_census c ON l._facility = c._facility`,             // a join
		`WITH x AS (SELECT * FROM lab_results WHERE value > 1) SELECT count(*) FROM x`,                  // reads a CTE
		`SELECT _facility, count(*) OVER () FROM lab_results GROUP BY _facility`,                        // window
		`SELECT count(*) FROM lab_results WHERE lab_id IN (SELECT lab_id FROM lab_results LIMIT 5)`,     // subquery
		`SELECT test_code, count(*) FROM lab_results GROUP BY test_code HAVING max(value) > random()`,   // volatile
		`SELECT count(*) FROM lab_results WHERE collected_at >= '2025-03-10' AND value IS NOT NULL`,     // filter on a measure
		`SELECT _facility, string_agg(test_code, ',' ORDER BY test_code) FROM lab_results GROUP BY 1`,   // ordered aggregate
		`SELECT CAST(collected_at AS DATE), arg_max(value, lab_id) FROM lab_results GROUP BY 1`,         // not decomposable
		`SELECT sum(value) FROM lab_results WHERE CAST(collected_at AS TIMESTAMP) >= '2025-03-01'`,      // cast but not to a day
		`SELECT lab_results.test_code, count(*) FROM lab_results GROUP BY lab_results.test_code, value`, // groups by a measure
	} {
		_, got, tables := runSession(t, e, admin, q)
		if slices.Contains(tables, "lab_results__daily") {
			t.Errorf("answered from the rollup, but it cannot: %s", q)
		}
		_, want := runRaw(t, e, q)
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %.200q, want %.200q", q, got, want)
		}
	}
}

// TestRollupCensusDateDimension checks a rollup whose time column is a date, with
// integer measures: the date is a dimension like any.
func TestRollupCensusDateDimension(t *testing.T) {
	e, _ := rollupLake(t)
	for _, q := range []string{
		`SELECT _facility, census_date, sum(beds_occupied), sum(beds_total), max(occupancy_pct) FROM bed_census GROUP BY _facility, census_date`,
		`SELECT unit, avg(beds_blocked), count(beds_blocked), min(beds_blocked) FROM bed_census WHERE census_date >= DATE '2025-03-15' GROUP BY unit`,
		`SELECT date_trunc('week', census_date) AS wk, sum(beds_occupied) / sum(beds_total) AS occ FROM bed_census WHERE census_date > DATE '2025-03-03' GROUP BY wk`,
	} {
		cols, got, tables := runSession(t, e, testAdmin, q)
		wantCols, want := runRaw(t, e, q)
		if !slices.Contains(tables, "bed_census__daily") {
			t.Errorf("not answered from the rollup (read %v): %s", tables, q)
		}
		if !slices.Equal(cols, wantCols) || !slices.Equal(got, want) {
			t.Errorf("%s:\ngot  %q %.300q\nwant %q %.300q", q, cols, got, wantCols, want)
		}
	}
}

// TestRollupStaleIsNotUsed: a commit whose rollup is missing makes the rollup describe
// less than the table, and queries read the table until the rollup covers it.
func TestRollupStaleIsNotUsed(t *testing.T) {
	e, cat := rollupLake(t)
	q := `SELECT _facility, count(*) FROM lab_results GROUP BY _facility`
	if _, _, tables := runSession(t, e, testAdmin, q); !slices.Contains(tables, "lab_results__daily") {
		t.Fatalf("fresh rollup not used: read %v", tables)
	}
	seq := 100000
	appendWithRollup(t, cat, "lab_results", labBatch(rand.New(rand.NewPCG(3, 3)), 500, &seq), false)
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, got, tables := runSession(t, e, testAdmin, q)
	if slices.Contains(tables, "lab_results__daily") {
		t.Fatalf("a rollup missing the last commit was used")
	}
	_, want := runRaw(t, e, q)
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	total := queryInts(t, e, `SELECT count(*) FROM lab_results`)
	if total[0] != 4*3000+500 {
		t.Fatalf("count = %d, want %d", total[0], 4*3000+500)
	}
}

// TestRollupRepair: appends a rollup missed are rolled up from their data files, and
// the rollup is used again, answering as the table does.
func TestRollupRepair(t *testing.T) {
	e, cat := rollupLake(t)
	ctx := context.Background()
	seq := 200000
	r := rand.New(rand.NewPCG(9, 9))
	for range 3 {
		appendWithRollup(t, cat, "lab_results", labBatch(r, 700, &seq), false)
	}
	base, err := cat.LoadTable(ctx, table.Identifier{testlake.Namespace, "lab_results"})
	if err != nil {
		t.Fatal(err)
	}
	def, _ := rollup.Lookup("lab_results")
	ident := table.Identifier{testlake.Namespace, def.Name()}
	n, err := rollup.Repair(ctx, cat, ident, def, base, memory.DefaultAllocator)
	if err != nil || n != 3 {
		t.Fatalf("Repair = %d, %v; want 3 appends rolled up", n, err)
	}
	if n, err := rollup.Repair(ctx, cat, ident, def, base, memory.DefaultAllocator); err != nil || n != 0 {
		t.Fatalf("second Repair = %d, %v; want nothing left to do", n, err)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	q := `SELECT _facility, test_code, abnormal_flag, date_trunc('day', collected_at) AS d, count(*), sum(value), min(value), max(value) FROM lab_results GROUP BY ALL`
	q = strings.Replace(q, "GROUP BY ALL", "GROUP BY _facility, test_code, abnormal_flag, d", 1)
	_, got, tables := runSession(t, e, testAdmin, q)
	if !slices.Contains(tables, "lab_results__daily") {
		t.Fatalf("repaired rollup not used: read %v", tables)
	}
	_, want := runRaw(t, e, q)
	if !slices.Equal(got, want) {
		t.Fatalf("repaired rollup differs from the table: got %d rows, want %d", len(got), len(want))
	}
}

// TestSetRewritesOff: a session with the rewrites off reads the table itself.
func TestSetRewritesOff(t *testing.T) {
	e, _ := rollupLake(t)
	ctx := context.Background()
	s, err := e.Session(ctx, auth.Principal{User: "u1", Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := `SELECT _facility, count(*) FROM lab_results GROUP BY _facility`
	for _, on := range []bool{true, false} {
		s.SetRewrites(on, on)
		st, err := s.Prepare(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(st.Tables, "lab_results__daily"); got != on {
			t.Errorf("rewrites %v: read %v", on, st.Tables)
		}
		st.Close()
	}
}

// TestRollupAfterExpiry: expiring the older snapshots of a table and of its rollup
// keeps the rollup in use, because each append marks the point up to which the rollup
// covers the table exactly; an append the rollup misses after that still stops its use
// until it is repaired.
func TestRollupAfterExpiry(t *testing.T) {
	e, cat := rollupLake(t)
	ctx := context.Background()
	seq := 300000
	r := rand.New(rand.NewPCG(11, 11))
	for range 5 {
		appendWithRollup(t, cat, "lab_results", labBatch(r, 400, &seq), true)
	}
	def, _ := rollup.Lookup("lab_results")
	baseIdent := table.Identifier{testlake.Namespace, "lab_results"}
	rollIdent := table.Identifier{testlake.Namespace, def.Name()}
	for _, ident := range []table.Identifier{baseIdent, rollIdent} {
		tbl, err := cat.LoadTable(ctx, ident)
		if err != nil {
			t.Fatal(err)
		}
		txn := tbl.NewTransaction()
		if err := txn.ExpireSnapshots(table.WithRetainLast(2), table.WithOlderThan(0)); err != nil {
			t.Fatal(err)
		}
		if tbl, err = txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(tbl.Metadata().Snapshots()); n != 2 {
			t.Fatalf("%s keeps %d snapshots after expiry, want 2", ident, n)
		}
	}
	q := `SELECT _facility, test_code, count(*), sum(value) FROM lab_results GROUP BY _facility, test_code`
	check := func(wantRollup bool) {
		t.Helper()
		if err := e.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		_, got, tables := runSession(t, e, testAdmin, q)
		if used := slices.Contains(tables, def.Name()); used != wantRollup {
			t.Fatalf("rollup used = %v, want %v (read %v)", used, wantRollup, tables)
		}
		if _, want := runRaw(t, e, q); !slices.Equal(got, want) {
			t.Fatalf("answer differs from the table: got %d rows, want %d", len(got), len(want))
		}
	}
	check(true)

	appendWithRollup(t, cat, "lab_results", labBatch(r, 400, &seq), false)
	check(false)

	base, err := cat.LoadTable(ctx, baseIdent)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := rollup.Repair(ctx, cat, rollIdent, def, base, memory.DefaultAllocator); err != nil || n != 1 {
		t.Fatalf("Repair after expiry = %d, %v; want the one missed append rolled up", n, err)
	}
	check(true)
}
