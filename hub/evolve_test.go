package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol/feed"
)

func TestPlanEvolution(t *testing.T) {
	cur := iceberg.NewSchema(0,
		iceberg.NestedField{ID: 1, Name: "n", Type: iceberg.PrimitiveTypes.Int32, Required: true},
		iceberg.NestedField{ID: 2, Name: "f", Type: iceberg.PrimitiveTypes.Float32},
		iceberg.NestedField{ID: 3, Name: "d", Type: iceberg.DecimalTypeOf(12, 2)},
		iceberg.NestedField{ID: 4, Name: "s", Type: iceberg.PrimitiveTypes.String},
		iceberg.NestedField{ID: 5, Name: "l", Type: iceberg.PrimitiveTypes.Int64},
	)
	field := func(name string, typ arrow.DataType, nullable bool) arrow.Field {
		return arrow.Field{Name: name, Type: typ, Nullable: nullable}
	}
	tests := []struct {
		name                string
		fields              []arrow.Field
		add, widen, optinal string // comma-separated names
		err                 string
	}{
		{"same", []arrow.Field{field("n", arrow.PrimitiveTypes.Int32, false), field("s", arrow.BinaryTypes.String, true)}, "", "", "", ""},
		{"int to long", []arrow.Field{field("n", arrow.PrimitiveTypes.Int64, false)}, "", "n", "", ""},
		{"float to double", []arrow.Field{field("f", arrow.PrimitiveTypes.Float64, true)}, "", "f", "", ""},
		{"decimal precision", []arrow.Field{field("d", &arrow.Decimal128Type{Precision: 18, Scale: 2}, true)}, "", "d", "", ""},
		{"narrower decimal fits", []arrow.Field{field("d", &arrow.Decimal128Type{Precision: 10, Scale: 2}, true)}, "", "", "", ""},
		{"int into long fits", []arrow.Field{field("l", arrow.PrimitiveTypes.Int32, true)}, "", "", "", ""},
		{"required made optional", []arrow.Field{field("n", arrow.PrimitiveTypes.Int32, true)}, "", "", "n", ""},
		{"widen and relax", []arrow.Field{field("n", arrow.PrimitiveTypes.Int64, true)}, "", "n", "n", ""},
		{"new column", []arrow.Field{field("s", arrow.BinaryTypes.String, true), field("extra", arrow.BinaryTypes.String, true)}, "extra", "", "", ""},
		{"decimal scale", []arrow.Field{field("d", &arrow.Decimal128Type{Precision: 18, Scale: 4}, true)}, "", "", "", "column d of table t is decimal(12, 2)"},
		{"long to int", []arrow.Field{field("l", arrow.PrimitiveTypes.Int32, true), field("s", arrow.PrimitiveTypes.Int64, true)}, "", "", "", "column s of table t is string"},
		{"string to binary is no widening", []arrow.Field{field("s", arrow.BinaryTypes.Binary, true)}, "", "", "", "column s"},
	}
	names := func(fs []iceberg.NestedField) string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := planEvolution(cur, arrow.NewSchema(tt.fields, nil), "t")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("planEvolution error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(e.add); got != tt.add {
				t.Errorf("add %q, want %q", got, tt.add)
			}
			if got := names(e.widen); got != tt.widen {
				t.Errorf("widen %q, want %q", got, tt.widen)
			}
			if got := strings.Join(e.optional, ","); got != tt.optinal {
				t.Errorf("optional %q, want %q", got, tt.optinal)
			}
		})
	}
}

// TestEvolveFeedVersion creates a table from version 1 of a feed and commits with
// version 2, which widens a decimal and adds a column: the table's
// schema follows, rows written before read back in the wider type, and version 2's
// rows append.
func TestEvolveFeedVersion(t *testing.T) {
	v1, err := feed.Parse([]byte(`
name: bills_csv
version: 1
table: bills
match: {glob: "*.csv"}
format: {type: csv}
partition_time: billed_at
columns:
  - {name: amount, type: decimal, precision: 12, scale: 2, required: true}
  - {name: billed_at, type: timestamp, required: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := feed.Parse([]byte(`
name: bills_csv
version: 2
table: bills
match: {glob: "*.csv"}
format: {type: csv}
partition_time: billed_at
columns:
  - {name: amount, type: decimal, precision: 18, scale: 2}
  - {name: billed_at, type: timestamp, required: true}
  - {name: payer, type: string}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	sc, spec, _, err := icebergSchema(v1)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := cat.Iceberg().CreateTable(ctx, cat.TableIdent("bills"), sc, icecatalog.WithPartitionSpec(spec),
		icecatalog.WithProperties(iceberg.Properties{"format-version": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if tbl, err = appendOne(t, tbl, v1.TableSchema(), "12.34"); err != nil {
		t.Fatal(err)
	}

	c := &committer{table: "bills", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tbl, err = c.evolve(ctx, tbl, v2.TableSchema())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		typ      iceberg.Type
		required bool
	}{
		"amount":    {iceberg.DecimalTypeOf(18, 2), false},
		"billed_at": {iceberg.PrimitiveTypes.TimestampTz, false},
		"payer":     {iceberg.PrimitiveTypes.String, false},
	} {
		f, ok := tbl.Schema().FindFieldByName(name)
		if !ok || !f.Type.Equals(want.typ) || f.Required != want.required {
			t.Errorf("column %s after evolution: %v (found %v), want %s required=%v", name, f, ok, want.typ, want.required)
		}
	}
	if tbl, err = appendOne(t, tbl, v2.TableSchema(), "1234567890123.45"); err != nil {
		t.Fatalf("appending version 2's rows: %v", err)
	}
	at, err := tbl.Scan().ToArrowTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer at.Release()
	var got []string
	col := at.Column(at.Schema().FieldIndices("amount")[0]).Data()
	for _, ch := range col.Chunks() {
		d := ch.(*array.Decimal128)
		for i := range d.Len() {
			got = append(got, d.Value(i).ToString(2))
		}
	}
	if strings.Join(got, " ") != "12.34 1234567890123.45" && strings.Join(got, " ") != "1234567890123.45 12.34" {
		t.Errorf("amounts read back %v, want 12.34 and 1234567890123.45", got)
	}
	// Nothing left to change: evolve again is a no-op.
	id := tbl.Schema().ID
	if tbl, err = c.evolve(ctx, tbl, v2.TableSchema()); err != nil || tbl.Schema().ID != id {
		t.Errorf("second evolve changed schema %d to %d (%v)", id, tbl.Schema().ID, err)
	}
}

// TestCommitOlderFeedVersion commits batches of a feed's version 1 and version 2
// (decimal widened, column added) through one committer, as a hub does while some
// agents still run version 1: the committer advances to version 2, evolves the table,
// and writes version 1's rows widened with NULL in the new column. A version 3 that
// changes a decimal's scale is refused without advancing.
func TestCommitOlderFeedVersion(t *testing.T) {
	parse := func(version int, cols string) *feed.Definition {
		d, err := feed.Parse([]byte(fmt.Sprintf(`
name: bills_csv
version: %d
table: bills
match: {glob: "*.csv"}
format: {type: csv}
partition_time: billed_at
columns:
%s`, version, cols)))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	v1 := parse(1, "  - {name: amount, type: decimal, precision: 12, scale: 2}\n  - {name: billed_at, type: timestamp}\n")
	v2 := parse(2, "  - {name: amount, type: decimal, precision: 18, scale: 2}\n  - {name: billed_at, type: timestamp}\n  - {name: payer, type: string}\n")
	v3 := parse(3, "  - {name: amount, type: decimal, precision: 18, scale: 4}\n  - {name: billed_at, type: timestamp}\n  - {name: payer, type: string}\n")
	ctx := t.Context()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := newCommitter(v1, cat, "hub-1", Config{}.WithDefaults(), slog.New(slog.NewTextHandler(io.Discard, nil)), m, func(context.Context, []ackOut) {})
	n := 0
	billBatch := func(def *feed.Definition, amounts ...string) *batch {
		return rowsBatch(def, fmt.Sprintf("batch-%d", n+1), "bills.csv", len(amounts), &n, func(f arrow.Field, r int, b array.Builder) bool {
			switch f.Name {
			case "amount":
				typ := f.Type.(*arrow.Decimal128Type)
				v, err := decimal128.FromString(amounts[r], typ.Precision, typ.Scale)
				if err != nil {
					t.Fatal(err)
				}
				b.(*array.Decimal128Builder).Append(v)
			case "billed_at":
				b.(*array.TimestampBuilder).Append(arrow.Timestamp(1_790_000_000_000_000))
			case "payer":
				b.(*array.StringBuilder).Append("acme")
			default:
				return false
			}
			return true
		})
	}

	c.buf = []*batch{billBatch(v1, "1.50")}
	if err := c.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := c.accepts(v1, v2); err != nil || got != v2 {
		t.Fatalf("accepts(v1, newest v2) = version %d, %v; want v2", got.Version, err)
	}
	if got, err := c.accepts(v3, v3); err == nil || got != v2 || !strings.Contains(err.Error(), "column amount changed") {
		t.Fatalf("accepts(v3, newest v3) = version %d, %v; want v2 kept and amount named", got.Version, err)
	}
	c.buf = []*batch{billBatch(v1, "2.25", "9999999999.99"), billBatch(v2, "12345678901234.56")}
	if err := c.flush(ctx); err != nil {
		t.Fatal(err)
	}
	tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent("bills"))
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := tbl.Schema().FindFieldByName("amount"); !f.Type.Equals(iceberg.DecimalTypeOf(18, 2)) {
		t.Errorf("amount is %s, want decimal(18, 2)", f.Type)
	}
	at, err := tbl.Scan().ToArrowTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer at.Release()
	got := map[string]string{}
	rdr := array.NewTableReader(at, 0)
	defer rdr.Release()
	for rdr.Next() {
		r := rdr.RecordBatch()
		amt := r.Column(r.Schema().FieldIndices("amount")[0]).(*array.Decimal128)
		payer := r.Column(r.Schema().FieldIndices("payer")[0]).(*array.String)
		for i := range int(r.NumRows()) {
			p := "NULL"
			if payer.IsValid(i) {
				p = payer.Value(i)
			}
			got[amt.Value(i).ToString(2)] = p
		}
	}
	want := map[string]string{"1.50": "NULL", "2.25": "NULL", "9999999999.99": "NULL", "12345678901234.56": "acme"}
	if !maps.Equal(got, want) {
		t.Errorf("rows (amount: payer) %v, want %v", got, want)
	}
}

func TestCheckWritable(t *testing.T) {
	f := func(name string, typ arrow.DataType, nullable bool) arrow.Field {
		return arrow.Field{Name: name, Type: typ, Nullable: nullable}
	}
	dec := func(p, s int32) arrow.DataType { return &arrow.Decimal128Type{Precision: p, Scale: s} }
	older := arrow.NewSchema([]arrow.Field{f("a", dec(12, 2), true), f("n", arrow.PrimitiveTypes.Int32, true), f("x", arrow.BinaryTypes.String, true)}, nil)
	tests := []struct {
		name   string
		newest []arrow.Field
		err    string
	}{
		{"same", older.Fields(), ""},
		{"widened and added", []arrow.Field{f("a", dec(18, 2), true), f("n", arrow.PrimitiveTypes.Int64, true), f("x", arrow.BinaryTypes.String, true), f("y", arrow.BinaryTypes.String, true)}, ""},
		{"reordered", []arrow.Field{f("x", arrow.BinaryTypes.String, true), f("a", dec(12, 2), true), f("n", arrow.PrimitiveTypes.Int32, true)}, ""},
		{"removed", []arrow.Field{f("a", dec(12, 2), true), f("n", arrow.PrimitiveTypes.Int32, true)}, "column x was removed"},
		{"narrowed", []arrow.Field{f("a", dec(10, 2), true), f("n", arrow.PrimitiveTypes.Int32, true), f("x", arrow.BinaryTypes.String, true)}, "column a changed"},
		{"scale", []arrow.Field{f("a", dec(18, 3), true), f("n", arrow.PrimitiveTypes.Int32, true), f("x", arrow.BinaryTypes.String, true)}, "column a changed"},
		{"retyped", []arrow.Field{f("a", dec(12, 2), true), f("n", arrow.BinaryTypes.String, true), f("x", arrow.BinaryTypes.String, true)}, "column n changed"},
		{"required new column", []arrow.Field{f("a", dec(12, 2), true), f("n", arrow.PrimitiveTypes.Int32, true), f("x", arrow.BinaryTypes.String, true), f("z", arrow.BinaryTypes.String, false)}, "new column z is not nullable"},
	}
	for _, tt := range tests {
		err := checkWritable(older, arrow.NewSchema(tt.newest, nil))
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: checkWritable = %v, want %q", tt.name, err, tt.err)
		}
	}
}

// appendOne appends one row of sc (every other column NULL or zero) with amount.
func appendOne(t *testing.T, tbl *table.Table, sc *arrow.Schema, amount string) (*table.Table, error) {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i, f := range sc.Fields() {
		switch f.Name {
		case "amount":
			typ := f.Type.(*arrow.Decimal128Type)
			v, err := decimal128.FromString(amount, typ.Precision, typ.Scale)
			if err != nil {
				t.Fatal(err)
			}
			b.Field(i).(*array.Decimal128Builder).Append(v)
		case "billed_at":
			b.Field(i).(*array.TimestampBuilder).Append(arrow.Timestamp(1_790_000_000_000_000))
		default:
			if f.Nullable {
				b.Field(i).AppendNull()
			} else {
				b.Field(i).AppendEmptyValue()
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer at.Release()
	txn := tbl.NewTransaction()
	if err := txn.AppendTable(t.Context(), at, 1<<20, nil); err != nil {
		return nil, err
	}
	return txn.Commit(t.Context())
}
