package hub

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
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
