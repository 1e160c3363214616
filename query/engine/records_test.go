package engine

import (
	"context"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/query/internal/testlake"
)

func TestQueryRecordsTypes(t *testing.T) {
	e := openEngine(t, testlake.Catalog(t))
	ctx := context.Background()
	sess, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	tests := []struct {
		expr     string
		wantType string
		want     string // array.ValueStr of the one row
	}{
		{"true", "bool", "true"},
		{"CAST(-7 AS TINYINT)", "int8", "-7"},
		{"CAST(300 AS SMALLINT)", "int16", "300"},
		{"CAST(70000 AS INTEGER)", "int32", "70000"},
		{"CAST(9007199254740993 AS BIGINT)", "int64", "9007199254740993"},
		{"CAST(200 AS UTINYINT)", "uint8", "200"},
		{"CAST(18446744073709551615 AS UBIGINT)", "uint64", "18446744073709551615"},
		{"CAST(1.5 AS FLOAT)", "float32", "1.5"},
		{"CAST(2.25 AS DOUBLE)", "float64", "2.25"},
		{"CAST('12345.678' AS DECIMAL(12,3))", "decimal(12, 3)", "12345.678"},
		{"CAST('-0.05' AS DECIMAL(38,10))", "decimal(38, 10)", "-0.05"},
		{"DATE '2026-02-28'", "date32", "2026-02-28"},
		{"TIME '13:45:07.123456'", "time64[us]", "13:45:07.123456"},
		{"TIMESTAMP '2026-03-01 08:15:30.25'", "timestamp[us]", "2026-03-01T08:15:30.25"},
		{"TIMESTAMPTZ '2026-03-01 08:15:30+02'", "timestamp[us, tz=UTC]", "2026-03-01T06:15:30Z"},
		{"INTERVAL '1 month 2 days 3 seconds'", "month_day_nano_interval", `{"months":1,"days":2,"nanoseconds":3000000000}`},
		{"'\\xAB'::BLOB", "binary", "qw=="},
		{"'héllo'", "utf8", "héllo"},
		{"CAST('6ba7b810-9dad-11d1-80b4-00c04fd430c8' AS UUID)", "utf8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
		{"[1, 2, 3]", "utf8", "[1 2 3]"},
		{"CAST(NULL AS INTEGER)", "int32", "(null)"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			st, err := sess.Prepare(ctx, "SELECT "+tt.expr+" AS v")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if got := st.ArrowSchema().Field(0).Type.String(); got != tt.wantType {
				t.Errorf("type %s, want %s", got, tt.wantType)
			}
			var got []string
			err = st.QueryRecords(ctx, nil, 0, func(rec arrow.RecordBatch) error {
				for i := 0; i < int(rec.NumRows()); i++ {
					got = append(got, rec.Column(0).ValueStr(i))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("values %q, want [%q]", got, tt.want)
			}
		})
	}
}

// Batches split at batchRows and keep row order.
func TestQueryRecordsBatches(t *testing.T) {
	e := openEngine(t, testlake.Catalog(t))
	ctx := context.Background()
	sess, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := sess.Prepare(ctx, "SELECT i FROM range(25) t(i) WHERE i >= $1 ORDER BY i")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var sizes []int64
	next := int64(0)
	err = st.QueryRecords(ctx, []any{int64(0)}, 10, func(rec arrow.RecordBatch) error {
		sizes = append(sizes, rec.NumRows())
		col := rec.Column(0)
		for i := 0; i < col.Len(); i++ {
			if got := col.ValueStr(i); got != strconv.FormatInt(next, 10) {
				t.Fatalf("row %d = %s", next, got)
			}
			next++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{10, 10, 5}; len(sizes) != 3 || sizes[0] != want[0] || sizes[1] != want[1] || sizes[2] != want[2] {
		t.Errorf("batch sizes %v, want %v", sizes, want)
	}
}
