package engine

import (
	"context"
	"database/sql/driver"
	"fmt"
	"math/big"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/duckdb/duckdb-go/v2"
)

// Results leave the engine as Arrow record batches for the protocols that
// speak Arrow (Flight SQL, the HTTP API's Arrow, Parquet, JSON and CSV). The
// batches are built here from the rows Statement.Query yields rather than by
// duckdb-go's Arrow interface, which needs the duckdb_arrow build tag on every
// build and test of the module, and whose Arrow views give wrong results when
// projected or filtered (duckdb/duckdb-go#24).

// DefaultBatchRows is the number of rows per record batch QueryRecords sends
// when asked for none.
const DefaultBatchRows = 16384

// ArrowSchema returns the Arrow schema of the statement's results. Every
// field is nullable: DuckDB does not say which result columns cannot be NULL.
func (st *Statement) ArrowSchema() *arrow.Schema {
	fields := make([]arrow.Field, len(st.Columns))
	for i, c := range st.Columns {
		fields[i] = arrow.Field{Name: c.Name, Type: ArrowType(c.Type), Nullable: true}
	}
	return arrow.NewSchema(fields, nil)
}

// ArrowType maps a DuckDB type to the Arrow type its values are sent as.
// Types with no Arrow counterpart here (nested types, enums, bit strings,
// 128-bit integers) are sent as their text form.
func ArrowType(t Type) arrow.DataType {
	switch t.ID {
	case duckdb.TYPE_BOOLEAN:
		return arrow.FixedWidthTypes.Boolean
	case duckdb.TYPE_TINYINT:
		return arrow.PrimitiveTypes.Int8
	case duckdb.TYPE_SMALLINT:
		return arrow.PrimitiveTypes.Int16
	case duckdb.TYPE_INTEGER:
		return arrow.PrimitiveTypes.Int32
	case duckdb.TYPE_BIGINT:
		return arrow.PrimitiveTypes.Int64
	case duckdb.TYPE_UTINYINT:
		return arrow.PrimitiveTypes.Uint8
	case duckdb.TYPE_USMALLINT:
		return arrow.PrimitiveTypes.Uint16
	case duckdb.TYPE_UINTEGER:
		return arrow.PrimitiveTypes.Uint32
	case duckdb.TYPE_UBIGINT:
		return arrow.PrimitiveTypes.Uint64
	case duckdb.TYPE_FLOAT:
		return arrow.PrimitiveTypes.Float32
	case duckdb.TYPE_DOUBLE:
		return arrow.PrimitiveTypes.Float64
	case duckdb.TYPE_DECIMAL:
		return &arrow.Decimal128Type{Precision: int32(t.Width), Scale: int32(t.Scale)}
	case duckdb.TYPE_DATE:
		return arrow.FixedWidthTypes.Date32
	case duckdb.TYPE_TIME:
		return arrow.FixedWidthTypes.Time64us
	case duckdb.TYPE_TIMESTAMP, duckdb.TYPE_TIMESTAMP_S, duckdb.TYPE_TIMESTAMP_MS, duckdb.TYPE_TIMESTAMP_NS:
		return &arrow.TimestampType{Unit: arrow.Microsecond}
	case duckdb.TYPE_TIMESTAMP_TZ:
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	case duckdb.TYPE_INTERVAL:
		return arrow.FixedWidthTypes.MonthDayNanoInterval
	case duckdb.TYPE_BLOB:
		return arrow.BinaryTypes.Binary
	default:
		return arrow.BinaryTypes.String
	}
}

// QueryRecords executes the statement with args and calls fn with record
// batches of at most batchRows rows (DefaultBatchRows when <= 0), in order.
// fn must not keep a batch after it returns unless it retains it. An error
// from fn stops the query with that error.
func (st *Statement) QueryRecords(ctx context.Context, args []any, batchRows int, fn func(arrow.RecordBatch) error) error {
	if batchRows <= 0 {
		batchRows = DefaultBatchRows
	}
	schema := st.ArrowSchema()
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	emit := func() error {
		rec := b.NewRecordBatch()
		defer rec.Release()
		return fn(rec)
	}
	n := 0
	err := st.Query(ctx, args, func(row []driver.Value) error {
		for i, v := range row {
			if st.Columns[i].Type.ID == duckdb.TYPE_UUID {
				v = uuidText(v)
			}
			if err := appendValue(b.Field(i), v); err != nil {
				return fmt.Errorf("column %s: %w", st.Columns[i].Name, err)
			}
		}
		if n++; n == batchRows {
			n = 0
			return emit()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n > 0 {
		return emit()
	}
	return nil
}

// appendValue appends one value, as duckdb-go returns it, to a builder of the
// type ArrowType chose for its column.
func appendValue(b array.Builder, v driver.Value) error {
	if v == nil {
		b.AppendNull()
		return nil
	}
	switch b := b.(type) {
	case *array.BooleanBuilder:
		if x, ok := v.(bool); ok {
			b.Append(x)
			return nil
		}
	case *array.Int8Builder:
		if x, ok := v.(int8); ok {
			b.Append(x)
			return nil
		}
	case *array.Int16Builder:
		if x, ok := v.(int16); ok {
			b.Append(x)
			return nil
		}
	case *array.Int32Builder:
		if x, ok := v.(int32); ok {
			b.Append(x)
			return nil
		}
	case *array.Int64Builder:
		if x, ok := v.(int64); ok {
			b.Append(x)
			return nil
		}
	case *array.Uint8Builder:
		if x, ok := v.(uint8); ok {
			b.Append(x)
			return nil
		}
	case *array.Uint16Builder:
		if x, ok := v.(uint16); ok {
			b.Append(x)
			return nil
		}
	case *array.Uint32Builder:
		if x, ok := v.(uint32); ok {
			b.Append(x)
			return nil
		}
	case *array.Uint64Builder:
		if x, ok := v.(uint64); ok {
			b.Append(x)
			return nil
		}
	case *array.Float32Builder:
		if x, ok := v.(float32); ok {
			b.Append(x)
			return nil
		}
	case *array.Float64Builder:
		if x, ok := v.(float64); ok {
			b.Append(x)
			return nil
		}
	case *array.Decimal128Builder:
		if x, ok := v.(duckdb.Decimal); ok && x.Value != nil {
			n, err := decimal128FromBig(x.Value)
			if err != nil {
				return err
			}
			b.Append(n)
			return nil
		}
	case *array.Date32Builder:
		if x, ok := v.(time.Time); ok {
			b.Append(arrow.Date32FromTime(x))
			return nil
		}
	case *array.Time64Builder:
		if x, ok := v.(time.Time); ok {
			h, m, s := x.Clock()
			us := (int64(h)*3600+int64(m)*60+int64(s))*1e6 + int64(x.Nanosecond())/1e3
			b.Append(arrow.Time64(us))
			return nil
		}
	case *array.TimestampBuilder:
		if x, ok := v.(time.Time); ok {
			b.Append(arrow.Timestamp(x.UnixMicro()))
			return nil
		}
	case *array.MonthDayNanoIntervalBuilder:
		if x, ok := v.(duckdb.Interval); ok {
			b.Append(arrow.MonthDayNanoInterval{Months: x.Months, Days: x.Days, Nanoseconds: x.Micros * 1000})
			return nil
		}
	case *array.BinaryBuilder:
		if x, ok := v.([]byte); ok {
			b.Append(x)
			return nil
		}
	case *array.StringBuilder:
		switch x := v.(type) {
		case string:
			b.Append(x)
		case []byte:
			b.Append(string(x))
		default:
			b.Append(fmt.Sprint(x))
		}
		return nil
	}
	return fmt.Errorf("cannot send %T as %s", v, b.Type())
}

func decimal128FromBig(v *big.Int) (decimal128.Num, error) {
	n := decimal128.FromBigInt(v)
	if n.BigInt().Cmp(v) != 0 {
		return decimal128.Num{}, fmt.Errorf("decimal %s does not fit 128 bits", v)
	}
	return n, nil
}

// uuidText renders a UUID, which duckdb-go returns as its 16 bytes, in its
// usual hyphenated form.
func uuidText(v driver.Value) driver.Value {
	var u []byte
	switch x := v.(type) {
	case []byte:
		u = x
	case duckdb.UUID:
		u = x[:]
	default:
		return v
	}
	if len(u) != 16 {
		return v
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
