package hub

import (
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

func layoutFeed(t *testing.T, mode string) *feed.Definition {
	t.Helper()
	def, err := feed.Parse([]byte(`
name: visits_csv
version: 1
table: visits
match: {glob: "*.csv"}
format: {type: csv}
mode: ` + mode + `
keys: [visit_id]
partition_time: seen_at
columns:
  - {name: visit_id, type: string}
  - {name: seen_at, type: timestamp}
`))
	if err != nil {
		t.Fatal(err)
	}
	return def
}

// TestTableLayout checks each table mode's partition spec and sort order.
func TestTableLayout(t *testing.T) {
	for _, tc := range []struct {
		mode string
		spec []string
	}{
		{"append", []string{"day(seen_at)"}},
		{"upsert", []string{"identity(_facility)"}}, // cdc tables are row-level like upsert's
	} {
		def := layoutFeed(t, tc.mode)
		sc, spec, order, err := icebergSchema(def)
		if err != nil {
			t.Fatalf("%s: %v", tc.mode, err)
		}
		var got []string
		for _, f := range spec.Fields() {
			src, _ := sc.FindFieldByID(f.SourceID())
			got = append(got, f.Transform.String()+"("+src.Name+")")
		}
		if !slices.Equal(got, tc.spec) {
			t.Errorf("%s: partition spec %v, want %v", tc.mode, got, tc.spec)
		}
		var sorted []string
		for _, f := range order.Fields() {
			src, _ := sc.FindFieldByID(f.SourceID())
			sorted = append(sorted, src.Name)
		}
		if !slices.Equal(sorted, []string{feed.ColFacility, "seen_at"}) {
			t.Errorf("%s: sort order %v, want _facility, seen_at", tc.mode, sorted)
		}
	}
}

// TestSortForAppend checks that rows come out by facility, then time, nulls first.
func TestSortForAppend(t *testing.T) {
	def := layoutFeed(t, "append")
	sc := def.TableSchema()
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	type row struct {
		fac string
		at  int64 // -1: NULL
	}
	in := []row{{"f2", 5}, {"f1", 9}, {"f2", -1}, {"f1", 3}, {"f3", 1}, {"f1", 7}, {"f2", 2}}
	iFac, iAt := sc.FieldIndices(feed.ColFacility)[0], sc.FieldIndices("seen_at")[0]
	for i, r := range in {
		for j, f := range sc.Fields() {
			switch {
			case j == iFac:
				b.Field(j).(*array.StringBuilder).Append(r.fac)
			case j == iAt && r.at >= 0:
				b.Field(j).(*array.TimestampBuilder).Append(arrow.Timestamp(r.at))
			case f.Name == "visit_id":
				b.Field(j).(*array.StringBuilder).Append(string(rune('a' + i)))
			default:
				b.Field(j).AppendNull()
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer at.Release()
	out, err := SortForAppend(t.Context(), def, at)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	var got []row
	facs, ats := out.Column(iFac).Data().Chunks(), out.Column(iAt).Data().Chunks()
	for c := range facs {
		fa, ta := facs[c].(*array.String), ats[c].(*array.Timestamp)
		for i := range fa.Len() {
			r := row{fa.Value(i), -1}
			if !ta.IsNull(i) {
				r.at = int64(ta.Value(i))
			}
			got = append(got, r)
		}
	}
	want := []row{{"f1", 3}, {"f1", 7}, {"f1", 9}, {"f2", -1}, {"f2", 2}, {"f2", 5}, {"f3", 1}}
	if !slices.Equal(got, want) {
		t.Errorf("sorted rows %v, want %v", got, want)
	}
}
