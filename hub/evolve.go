package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// evolution is what a table's schema needs before the committer can write sc to it.
// Iceberg allows exactly these changes without rewriting data files: adding an
// optional column, widening int to long, float to double and a decimal's precision
// (same scale), and making a required column optional.
type evolution struct {
	add      []iceberg.NestedField // columns to add, optional, in sc's order
	widen    []iceberg.NestedField // existing columns with their wider type
	optional []string              // required columns sc may leave null
}

func (e evolution) empty() bool { return len(e.add)+len(e.widen)+len(e.optional) == 0 }

// apply stages the evolution on us.
func (e evolution) apply(us *table.UpdateSchema) *table.UpdateSchema {
	for _, f := range e.add {
		us = us.AddColumn([]string{f.Name}, f.Type, "", false, nil)
	}
	for _, f := range e.widen {
		us = us.UpdateColumn([]string{f.Name}, table.ColumnUpdate{FieldType: iceberg.Optional[iceberg.Type]{Val: f.Type, Valid: true}})
	}
	for _, name := range e.optional {
		us = us.UpdateColumn([]string{name}, table.ColumnUpdate{Required: iceberg.Optional[bool]{Val: false, Valid: true}})
	}
	return us
}

// planEvolution compares the table's schema cur with sc, the schema the committer
// writes (the feed definition's table schema and drift-added columns). A column sc
// writes narrower than the table holds (a decimal of lower precision, say) needs no
// change. A change Iceberg does not allow (long to int, string to long, a decimal's
// scale) is an error naming the column, returned before anything is written.
func planEvolution(cur *iceberg.Schema, sc *arrow.Schema, tableName string) (evolution, error) {
	var e evolution
	for _, f := range sc.Fields() {
		one, err := table.ArrowSchemaToIcebergWithFreshIDs(arrow.NewSchema([]arrow.Field{f}, nil), false)
		if err != nil {
			return evolution{}, fmt.Errorf("converting column %s of table %s: %w", f.Name, tableName, err)
		}
		want := one.Field(0).Type
		have, ok := cur.FindFieldByName(f.Name)
		if !ok {
			e.add = append(e.add, iceberg.NestedField{Name: f.Name, Type: want})
			continue
		}
		switch {
		case have.Type.Equals(want):
		case widens(have.Type, want):
			e.widen = append(e.widen, iceberg.NestedField{ID: have.ID, Name: f.Name, Type: want})
		case widens(want, have.Type):
			// The table's type holds every value sc can carry.
		default:
			return evolution{}, fmt.Errorf("column %s of table %s is %s and the feed now writes %s: Iceberg only widens int to long, float to double and a decimal's precision",
				f.Name, tableName, have.Type, want)
		}
		if have.Required && f.Nullable {
			e.optional = append(e.optional, f.Name)
		}
	}
	return e, nil
}

// widens says whether Iceberg's type promotion turns from into to, excluding the
// string/binary reinterpretation (not a widening).
func widens(from, to iceberg.Type) bool {
	switch from.(type) {
	case iceberg.Int32Type, iceberg.Float32Type, iceberg.DecimalType:
		_, err := iceberg.PromoteType(from, to)
		return err == nil
	}
	return false
}

// checkWritable says why rows of a feed version whose table schema is older cannot be
// written into a table whose newest definition gives newest, or nil when they can:
// every column of older is in newest under its name with the same type or one Iceberg
// widens it to (int to long, float to double, a decimal's precision), and every column
// only newest has is nullable (older rows hold NULL there). The lineage and position
// columns are the same in every version.
func checkWritable(older, newest *arrow.Schema) error {
	var diffs []string
	have := map[string]bool{}
	for _, f := range older.Fields() {
		have[f.Name] = true
		idx := newest.FieldIndices(f.Name)
		if len(idx) != 1 {
			diffs = append(diffs, fmt.Sprintf("column %s was removed", f.Name))
			continue
		}
		w := newest.Field(idx[0])
		if !arrow.TypeEqual(f.Type, w.Type) && !arrowWidens(f.Type, w.Type) {
			diffs = append(diffs, fmt.Sprintf("column %s changed from %s to %s, not a widening", f.Name, f.Type, w.Type))
		}
	}
	for _, f := range newest.Fields() {
		if !have[f.Name] && !f.Nullable {
			diffs = append(diffs, fmt.Sprintf("new column %s is not nullable", f.Name))
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// arrowWidens is widens for the Arrow types the hub writes.
func arrowWidens(from, to arrow.DataType) bool {
	switch f := from.(type) {
	case *arrow.Decimal128Type:
		t, ok := to.(*arrow.Decimal128Type)
		return ok && t.Scale == f.Scale && t.Precision >= f.Precision
	}
	return (from.ID() == arrow.INT32 && to.ID() == arrow.INT64) ||
		(from.ID() == arrow.FLOAT32 && to.ID() == arrow.FLOAT64)
}

// columnAs returns r's column f.Name as f.Type: nil when it already is (use r's own),
// a cast copy when f widens it, all NULL when r lacks it. The caller releases what is
// returned.
func columnAs(mem memory.Allocator, r arrow.RecordBatch, f arrow.Field, n int) (arrow.Array, error) {
	idx := r.Schema().FieldIndices(f.Name)
	if len(idx) != 1 {
		return array.MakeArrayOfNull(mem, f.Type, n), nil
	}
	col := r.Column(idx[0])
	if arrow.TypeEqual(col.DataType(), f.Type) {
		return nil, nil
	}
	ctx := compute.WithAllocator(context.Background(), mem)
	out, err := compute.CastArray(ctx, col, compute.SafeCastOptions(f.Type))
	if err != nil {
		return nil, fmt.Errorf("widening column %s from %s to %s: %w", f.Name, col.DataType(), f.Type, err)
	}
	return out, nil
}
