package engine

import (
	"context"
	"database/sql/driver"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/internal/testlake"
)

// staysLake is an engine over a table "stays" of random timestamptz pairs: before and
// after 1970, differences of both signs from microseconds to centuries, whole seconds
// and not, some NULL; "local" is a TIMESTAMP without time zone.
func staysLake(t *testing.T, rows int) *Engine {
	t.Helper()
	ctx := context.Background()
	cat := testlake.Catalog(t)
	sc := iceberg.NewSchema(0,
		iceberg.NestedField{ID: 1, Name: "id", Type: iceberg.PrimitiveTypes.Int64},
		iceberg.NestedField{ID: 2, Name: "ward", Type: iceberg.PrimitiveTypes.String},
		iceberg.NestedField{ID: 3, Name: "admitted_at", Type: iceberg.PrimitiveTypes.TimestampTz},
		iceberg.NestedField{ID: 4, Name: "discharged_at", Type: iceberg.PrimitiveTypes.TimestampTz},
		iceberg.NestedField{ID: 5, Name: "local", Type: iceberg.PrimitiveTypes.Timestamp},
	)
	tbl, err := cat.CreateTable(ctx, table.Identifier{testlake.Namespace, "stays"}, sc)
	if err != nil {
		t.Fatal(err)
	}
	tz := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	asc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "ward", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "admitted_at", Type: tz, Nullable: true},
		{Name: "discharged_at", Type: tz, Nullable: true},
		{Name: "local", Type: &arrow.TimestampType{Unit: arrow.Microsecond}, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, asc)
	defer b.Release()
	r := rand.New(rand.NewPCG(3, 5))
	const day = int64(86_400_000_000)
	for i := range rows {
		from := r.Int64N(1_000_000*day) - 500_000*day // ±1,369 years around 1970
		var d int64
		switch i % 5 {
		case 0:
			d = r.Int64N(2*day) - day // within a day either way, any microsecond
		case 1:
			d = (r.Int64N(400_000) - 20_000) * 1_000_000 // whole seconds, mostly positive
		case 2:
			d = r.Int64N(200_000*day) - 100_000*day // centuries
		case 3:
			d = r.Int64N(30) * day // whole days
		default:
			d = r.Int64N(1000) - 500 // microseconds
		}
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.StringBuilder).Append([]string{"ICU", "ED", "MED"}[i%3])
		b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(from))
		if i%17 == 0 {
			b.Field(3).AppendNull()
		} else {
			b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(from + d))
		}
		b.Field(4).(*array.TimestampBuilder).Append(arrow.Timestamp(from))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(asc, []arrow.RecordBatch{rec})
	defer at.Release()
	if _, err := tbl.AppendTable(ctx, at, int64(rows), nil); err != nil {
		t.Fatal(err)
	}
	return openEngine(t, cat)
}

// runElapsed runs q in a session with the elapsed-time rewrite on or off and returns
// its column names, its rows rendered exactly (floats by their shortest round-trip
// text) and sorted, and the SQL that was prepared.
func runElapsed(tb testing.TB, e *Engine, q string, on bool) (cols, rows []string, prepared string) {
	tb.Helper()
	ctx := context.Background()
	s, err := e.Session(ctx, testAdmin)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	s.SetExpressionRewrites(on)
	st, err := s.Prepare(ctx, q)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	defer st.Close()
	for _, c := range st.Columns {
		cols = append(cols, c.Name)
	}
	if err := st.Query(ctx, nil, func(row []driver.Value) error {
		parts := make([]string, len(row))
		for i, v := range row {
			switch x := v.(type) {
			case float64:
				parts[i] = strconv.FormatFloat(x, 'g', -1, 64)
			case time.Time:
				parts[i] = x.UTC().Format(time.RFC3339Nano)
			default:
				parts[i] = fmt.Sprintf("%T:%v", v, v)
			}
		}
		rows = append(rows, strings.Join(parts, "|"))
		return nil
	}); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	slices.Sort(rows)
	return cols, rows, st.sql
}

// TestEpochDiffRewriteMatches checks that the elapsed-time rewrite gives the same
// columns and the same values, bit for bit, as DuckDB's ICU subtraction, and that it
// applies where it should and nowhere else.
func TestEpochDiffRewriteMatches(t *testing.T) {
	e := staysLake(t, 100_000)
	for _, tc := range []struct {
		q       string
		rewrite bool
	}{
		{`SELECT id, extract(epoch FROM discharged_at - admitted_at) FROM stays`, true},
		{`SELECT id, date_part('epoch', s.discharged_at - s.admitted_at) AS secs FROM stays s`, true},
		{`SELECT id, epoch(discharged_at - admitted_at), extract(epoch FROM admitted_at - discharged_at) / 60 FROM stays`, true},
		{`SELECT ward, count(*) AS n,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM discharged_at - admitted_at)) / 60 AS p50,
  percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM discharged_at - admitted_at)) / 60
FROM stays WHERE discharged_at IS NOT NULL GROUP BY ward`, true},
		{`SELECT a.ward, count(*), avg(extract(epoch FROM d.discharged_at - a.admitted_at)) / 3600
FROM stays a JOIN stays d ON d.id = a.id + 1 WHERE a.ward <> 'ED' GROUP BY a.ward`, true},
		{`SELECT max(x), min(x) FROM (SELECT extract(epoch FROM discharged_at - admitted_at) AS x FROM stays)`, true},
		{`SELECT id FROM stays WHERE extract(epoch FROM discharged_at - admitted_at) BETWEEN -1 AND 1`, true},
		{`SELECT count(*) FROM stays GROUP BY extract(epoch FROM discharged_at - admitted_at)
ORDER BY extract(epoch FROM discharged_at - admitted_at) LIMIT 1000`, true},
		// Declined: not both timestamptz columns of a lake table, or not epoch.
		{`SELECT id, admitted_at AS discharged_at, extract(epoch FROM discharged_at - admitted_at) FROM stays`, false},
		{`SELECT id, extract(epoch FROM local - local) FROM stays`, false},
		{`SELECT id, extract(hour FROM discharged_at - admitted_at) FROM stays`, false},
		{`SELECT extract(epoch FROM b - a) FROM (SELECT admitted_at AS a, discharged_at AS b FROM stays)`, false},
		{`SELECT id, extract(epoch FROM discharged_at - TIMESTAMPTZ '2000-01-01 00:00:00+00') FROM stays`, false},
		{`WITH stays AS (SELECT * FROM stays WHERE ward = 'ICU') SELECT extract(epoch FROM discharged_at - admitted_at) FROM stays`, false},
		{`SELECT s.id, (SELECT extract(epoch FROM s.discharged_at - admitted_at) FROM stays x WHERE x.id = s.id) FROM stays s WHERE s.id < 50`, false},
		{`SELECT id, list_transform([admitted_at], admitted_at -> extract(epoch FROM discharged_at - admitted_at)) FROM stays`, false},
	} {
		cols, got, prepared := runElapsed(t, e, tc.q, true)
		wantCols, want, plain := runElapsed(t, e, tc.q, false)
		if rewrote := strings.Contains(prepared, "epoch_us"); rewrote != tc.rewrite {
			t.Errorf("rewritten %v, want %v: %s\nprepared: %s", rewrote, tc.rewrite, tc.q, prepared)
		}
		if strings.Contains(plain, "epoch_us") {
			t.Errorf("rewritten with the rewrite off: %s", tc.q)
		}
		if !slices.Equal(cols, wantCols) {
			t.Errorf("columns %q, want %q: %s", cols, wantCols, tc.q)
		}
		if len(want) == 0 {
			t.Errorf("no rows to compare: %s", tc.q)
		}
		if !slices.Equal(got, want) {
			n := 0
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] && n < 5 {
					t.Errorf("row %d: got %s, want %s", i, got[i], want[i])
					n++
				}
			}
			t.Fatalf("%s: %d rows differ from DuckDB's subtraction (got %d rows, want %d)", tc.q, n, len(got), len(want))
		}
	}
}

// TestQuantileMergeMatches checks that merging percentiles of one value into one list
// aggregate gives the same columns and values, bit for bit, and applies only where it
// should.
func TestQuantileMergeMatches(t *testing.T) {
	e := staysLake(t, 50_000)
	const secs = `extract(epoch FROM discharged_at - admitted_at)`
	for _, tc := range []struct {
		q     string
		merge bool
	}{
		{`SELECT ward, count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY ` + secs + `) / 60 AS p50,
  percentile_cont(0.9) WITHIN GROUP (ORDER BY ` + secs + `) / 60 FROM stays WHERE discharged_at IS NOT NULL GROUP BY ward`, true},
		{`SELECT ward, percentile_disc(0.25) WITHIN GROUP (ORDER BY id), percentile_disc(0.75) WITHIN GROUP (ORDER BY id),
  percentile_disc(0.5) WITHIN GROUP (ORDER BY id), percentile_disc(0.5) WITHIN GROUP (ORDER BY id) AS again FROM stays GROUP BY ward`, true},
		{`SELECT percentile_cont(0.1) WITHIN GROUP (ORDER BY admitted_at), percentile_cont(0.99) WITHIN GROUP (ORDER BY admitted_at ASC),
  percentile_cont(0.333) WITHIN GROUP (ORDER BY local), percentile_cont(0.95) WITHIN GROUP (ORDER BY local) FROM stays`, true},
		{`SELECT ward, id % 7 AS k, percentile_cont(0.5) WITHIN GROUP (ORDER BY id * 1.5), percentile_cont(0.05) WITHIN GROUP (ORDER BY id * 1.5)
FROM stays GROUP BY ward, k HAVING percentile_cont(0.5) WITHIN GROUP (ORDER BY id * 1.5) > 10`, true},
		{`SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id), percentile_cont(0.9) WITHIN GROUP (ORDER BY id) FROM stays WHERE id < 0`, true},
		// Declined: one percentile of each value, descending, filtered.
		{`SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id), percentile_cont(0.5) WITHIN GROUP (ORDER BY ` + secs + `) FROM stays`, false},
		{`SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id DESC), percentile_cont(0.9) WITHIN GROUP (ORDER BY id DESC) FROM stays`, false},
		{`SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id) FILTER (WHERE ward = 'ED'), percentile_cont(0.9) WITHIN GROUP (ORDER BY id) FILTER (WHERE ward = 'ED') FROM stays`, false},
		{`SELECT count(*) FROM (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY random()) AS a, percentile_disc(0.9) WITHIN GROUP (ORDER BY random()) AS b FROM stays) WHERE a IS NOT NULL`, false},
	} {
		cols, got, prepared := runElapsed(t, e, tc.q, true)
		wantCols, want, _ := runElapsed(t, e, tc.q, false)
		if merged := strings.Contains(prepared, "list_value") || strings.Contains(prepared, ")[1]"); merged != tc.merge {
			t.Errorf("merged %v, want %v: %s\nprepared: %s", merged, tc.merge, tc.q, prepared)
		}
		if !slices.Equal(cols, wantCols) {
			t.Errorf("columns %q, want %q: %s", cols, wantCols, tc.q)
		}
		if len(want) == 0 {
			t.Errorf("no rows to compare: %s", tc.q)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\ngot  %.300q\nwant %.300q", tc.q, got, want)
		}
	}
}
