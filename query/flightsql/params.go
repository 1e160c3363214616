package flightsql

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// paramOf reads row i of a parameter column sent by a client.
func paramOf(col arrow.Array, i int) (param, error) {
	if col.IsNull(i) {
		return param{Kind: "null"}, nil
	}
	switch c := col.(type) {
	case *array.Int8:
		return param{Kind: "int", Int: int64(c.Value(i))}, nil
	case *array.Int16:
		return param{Kind: "int", Int: int64(c.Value(i))}, nil
	case *array.Int32:
		return param{Kind: "int", Int: int64(c.Value(i))}, nil
	case *array.Int64:
		return param{Kind: "int", Int: c.Value(i)}, nil
	case *array.Uint8:
		return param{Kind: "int", Int: int64(c.Value(i))}, nil
	case *array.Uint16:
		return param{Kind: "int", Int: int64(c.Value(i))}, nil
	case *array.Uint32:
		return param{Kind: "int", Int: int64(c.Value(i))}, nil
	case *array.Uint64:
		return param{Kind: "uint", Uint: c.Value(i)}, nil
	case *array.Float32:
		return param{Kind: "float", Float: float64(c.Value(i))}, nil
	case *array.Float64:
		return param{Kind: "float", Float: c.Value(i)}, nil
	case *array.Boolean:
		return param{Kind: "bool", Bool: c.Value(i)}, nil
	case *array.String:
		return param{Kind: "string", Str: c.Value(i)}, nil
	case *array.LargeString:
		return param{Kind: "string", Str: c.Value(i)}, nil
	case *array.Binary:
		return param{Kind: "bytes", Bytes: append([]byte(nil), c.Value(i)...)}, nil
	case *array.Decimal128:
		// Text keeps every digit; DuckDB casts it to the parameter's type.
		return param{Kind: "string", Str: c.ValueStr(i)}, nil
	case *array.Date32:
		return param{Kind: "time", Time: c.Value(i).ToTime()}, nil
	case *array.Timestamp:
		unit := c.DataType().(*arrow.TimestampType).Unit
		return param{Kind: "time", Time: c.Value(i).ToTime(unit).UTC()}, nil
	case *array.Null:
		return param{Kind: "null"}, nil
	}
	return param{}, fmt.Errorf("parameters of type %s are not supported; send text", col.DataType())
}
