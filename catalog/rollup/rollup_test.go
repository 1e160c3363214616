package rollup

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func TestAggregate(t *testing.T) {
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "_tenant", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "_facility", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "collected_at", Type: ts, Nullable: true},
		{Name: "test_code", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "abnormal_flag", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "value", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "lab_id", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	day := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	rows := []struct {
		at    time.Time
		flag  string
		value *float64
	}{
		{day.Add(1 * time.Hour), "", ptr(2)},
		{day.Add(23*time.Hour + 59*time.Minute), "", ptr(-1)},
		{day.Add(3 * time.Hour), "", nil},
		{day.Add(24 * time.Hour), "", ptr(5)}, // the next day
		{day.Add(2 * time.Hour), "H", ptr(9)},
	}
	for _, r := range rows {
		b.Field(0).(*array.StringBuilder).Append("t1")
		b.Field(1).(*array.StringBuilder).Append("f1")
		b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(r.at.UnixMicro()))
		b.Field(3).(*array.StringBuilder).Append("718-7")
		if r.flag == "" {
			b.Field(4).AppendNull()
		} else {
			b.Field(4).(*array.StringBuilder).Append(r.flag)
		}
		if r.value == nil {
			b.Field(5).AppendNull()
		} else {
			b.Field(5).(*array.Float64Builder).Append(*r.value)
		}
		b.Field(6).(*array.StringBuilder).Append("x")
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer at.Release()
	d, _ := Lookup("lab_results")
	out, err := d.Aggregate(at, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if out.NumRows() != 3 {
		t.Fatalf("%d groups, want 3 (day 1 no flag, day 1 H, day 2)", out.NumRows())
	}
	want := []string{ // _count, value__count, value__sum, value__min, value__max
		"2025-03-01 <nil> 3 2 1 -1 2",
		"2025-03-01 H 1 1 9 9 9",
		"2025-03-02 <nil> 1 1 5 5 5",
	}
	col := func(name string) arrow.Array { return out.Column(out.Schema().FieldIndices(name)[0]) }
	for i, w := range want {
		dayCol := col("collected_at").(*array.Timestamp)
		flag := any(nil)
		if f := col("abnormal_flag"); !f.IsNull(i) {
			flag = f.(*array.String).Value(i)
		}
		got := time.UnixMicro(int64(dayCol.Value(i))).UTC().Format("2006-01-02") + " " + fmtAny(flag) + " " +
			fmtAny(col(ColCount).(*array.Int64).Value(i)) + " " + fmtAny(col("value__count").(*array.Int64).Value(i)) + " " +
			fmtAny(col("value__sum").(*array.Float64).Value(i)) + " " + fmtAny(col("value__min").(*array.Float64).Value(i)) + " " +
			fmtAny(col("value__max").(*array.Float64).Value(i))
		if got != w {
			t.Errorf("group %d = %q, want %q", i, got, w)
		}
	}
}

func ptr(f float64) *float64 { return &f }

func fmtAny(v any) string {
	switch x := v.(type) {
	case nil:
		return "<nil>"
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}
