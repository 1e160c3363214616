package pgwire

import (
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/query/engine"
)

// PostgreSQL type OIDs (pg_type.oid) this server reports.
const (
	OIDBool        uint32 = 16
	OIDBytea       uint32 = 17
	OIDInt8        uint32 = 20
	OIDInt2        uint32 = 21
	OIDInt4        uint32 = 23
	OIDText        uint32 = 25
	OIDFloat4      uint32 = 700
	OIDFloat8      uint32 = 701
	OIDVarchar     uint32 = 1043
	OIDDate        uint32 = 1082
	OIDTime        uint32 = 1083
	OIDTimestamp   uint32 = 1114
	OIDTimestamptz uint32 = 1184
	OIDInterval    uint32 = 1186
	OIDNumeric     uint32 = 1700
	OIDUUID        uint32 = 2950
)

// pgType is how one DuckDB type is presented on the wire.
type pgType struct {
	oid   uint32
	size  int16 // pg_type.typlen; -1 for variable length
	scale int   // DECIMAL scale, for text and binary numeric output
	mod   int32 // atttypmod (numeric precision/scale), -1 if none
}

// pgTypeOf maps a DuckDB type to its PostgreSQL counterpart. Types without
// one (nested, enum, bit, time with zone, unsigned 64/128 bit…) are sent as
// text in DuckDB's rendering.
func pgTypeOf(t engine.Type) pgType {
	switch t.ID {
	case duckdb.TYPE_BOOLEAN:
		return pgType{oid: OIDBool, size: 1, mod: -1}
	case duckdb.TYPE_TINYINT, duckdb.TYPE_SMALLINT, duckdb.TYPE_UTINYINT:
		return pgType{oid: OIDInt2, size: 2, mod: -1}
	case duckdb.TYPE_INTEGER, duckdb.TYPE_USMALLINT:
		return pgType{oid: OIDInt4, size: 4, mod: -1}
	case duckdb.TYPE_BIGINT, duckdb.TYPE_UINTEGER:
		return pgType{oid: OIDInt8, size: 8, mod: -1}
	case duckdb.TYPE_UBIGINT, duckdb.TYPE_HUGEINT, duckdb.TYPE_UHUGEINT:
		return pgType{oid: OIDNumeric, size: -1, mod: -1}
	case duckdb.TYPE_FLOAT:
		return pgType{oid: OIDFloat4, size: 4, mod: -1}
	case duckdb.TYPE_DOUBLE:
		return pgType{oid: OIDFloat8, size: 8, mod: -1}
	case duckdb.TYPE_DECIMAL:
		return pgType{oid: OIDNumeric, size: -1, scale: int(t.Scale), mod: (int32(t.Width)<<16 | int32(t.Scale)) + 4}
	case duckdb.TYPE_VARCHAR:
		return pgType{oid: OIDText, size: -1, mod: -1}
	case duckdb.TYPE_DATE:
		return pgType{oid: OIDDate, size: 4, mod: -1}
	case duckdb.TYPE_TIME:
		return pgType{oid: OIDTime, size: 8, mod: -1}
	case duckdb.TYPE_TIMESTAMP, duckdb.TYPE_TIMESTAMP_S, duckdb.TYPE_TIMESTAMP_MS, duckdb.TYPE_TIMESTAMP_NS:
		return pgType{oid: OIDTimestamp, size: 8, mod: -1}
	case duckdb.TYPE_TIMESTAMP_TZ:
		return pgType{oid: OIDTimestamptz, size: 8, mod: -1}
	case duckdb.TYPE_INTERVAL:
		return pgType{oid: OIDInterval, size: 16, mod: -1}
	case duckdb.TYPE_BLOB:
		return pgType{oid: OIDBytea, size: -1, mod: -1}
	case duckdb.TYPE_UUID:
		return pgType{oid: OIDUUID, size: 16, mod: -1}
	default:
		return pgType{oid: OIDText, size: -1, mod: -1}
	}
}

// pgEpoch is PostgreSQL's binary date/time origin.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeText renders v as PostgreSQL prints values of type t.
// appendText appends encodeText's rendering of v to buf, without allocating
// for the common integer and text values.
func appendText(buf []byte, t pgType, v driver.Value) ([]byte, error) {
	switch t.oid {
	case OIDInt2, OIDInt4, OIDInt8:
		if i, ok := toInt64(v); ok {
			return strconv.AppendInt(buf, i, 10), nil
		}
	case OIDBool, OIDFloat4, OIDFloat8, OIDNumeric, OIDDate, OIDTime, OIDTimestamp, OIDTimestamptz, OIDInterval, OIDBytea, OIDUUID:
	default:
		switch x := v.(type) {
		case string:
			return append(buf, x...), nil
		case []byte:
			return append(buf, x...), nil
		}
	}
	b, err := encodeText(t, v)
	return append(buf, b...), err
}

func encodeText(t pgType, v driver.Value) ([]byte, error) {
	switch t.oid {
	case OIDBool:
		if b, ok := v.(bool); ok {
			if b {
				return []byte("t"), nil
			}
			return []byte("f"), nil
		}
	case OIDInt2, OIDInt4, OIDInt8:
		if i, ok := toInt64(v); ok {
			return strconv.AppendInt(nil, i, 10), nil
		}
	case OIDFloat4:
		if f, ok := v.(float32); ok {
			return formatFloat(float64(f), 32), nil
		}
	case OIDFloat8:
		if f, ok := v.(float64); ok {
			return formatFloat(f, 64), nil
		}
	case OIDNumeric:
		if s, ok := numericString(v, t.scale); ok {
			return []byte(s), nil
		}
	case OIDDate:
		if tm, ok := v.(time.Time); ok {
			return []byte(formatDate(tm)), nil
		}
	case OIDTime:
		if tm, ok := v.(time.Time); ok {
			return []byte(trimFrac(tm.Format("15:04:05.000000"))), nil
		}
	case OIDTimestamp:
		if tm, ok := v.(time.Time); ok {
			return []byte(formatDate(tm) + " " + trimFrac(tm.Format("15:04:05.000000"))), nil
		}
	case OIDTimestamptz:
		if tm, ok := v.(time.Time); ok {
			tm = tm.UTC()
			return []byte(formatDate(tm) + " " + trimFrac(tm.Format("15:04:05.000000")) + "+00"), nil
		}
	case OIDInterval:
		if iv, ok := v.(duckdb.Interval); ok {
			return []byte(formatInterval(iv)), nil
		}
	case OIDBytea:
		if b, ok := v.([]byte); ok {
			out := make([]byte, 2+hex.EncodedLen(len(b)))
			copy(out, `\x`)
			hex.Encode(out[2:], b)
			return out, nil
		}
	case OIDUUID:
		if u, ok := toUUID(v); ok {
			return []byte(u), nil
		}
	default:
		return []byte(formatAny(v)), nil
	}
	return nil, fmt.Errorf("cannot encode %T as type oid %d", v, t.oid)
}

// encodeBinary renders v in PostgreSQL's binary send format for t.
func encodeBinary(t pgType, v driver.Value) ([]byte, error) {
	switch t.oid {
	case OIDBool:
		if b, ok := v.(bool); ok {
			if b {
				return []byte{1}, nil
			}
			return []byte{0}, nil
		}
	case OIDInt2:
		if i, ok := toInt64(v); ok {
			return binary.BigEndian.AppendUint16(nil, uint16(int16(i))), nil
		}
	case OIDInt4:
		if i, ok := toInt64(v); ok {
			return binary.BigEndian.AppendUint32(nil, uint32(int32(i))), nil
		}
	case OIDInt8:
		if i, ok := toInt64(v); ok {
			return binary.BigEndian.AppendUint64(nil, uint64(i)), nil
		}
	case OIDFloat4:
		if f, ok := v.(float32); ok {
			return binary.BigEndian.AppendUint32(nil, math.Float32bits(f)), nil
		}
	case OIDFloat8:
		if f, ok := v.(float64); ok {
			return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)), nil
		}
	case OIDNumeric:
		if s, ok := numericString(v, t.scale); ok {
			return numericBinary(s)
		}
	case OIDDate:
		if tm, ok := v.(time.Time); ok {
			days := floorDiv(tm.Unix(), 86400) - pgEpoch.Unix()/86400
			return binary.BigEndian.AppendUint32(nil, uint32(int32(days))), nil
		}
	case OIDTime:
		if tm, ok := v.(time.Time); ok {
			us := int64(tm.Hour())*3600e6 + int64(tm.Minute())*60e6 + int64(tm.Second())*1e6 + int64(tm.Nanosecond()/1000)
			return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
		}
	case OIDTimestamp, OIDTimestamptz:
		if tm, ok := v.(time.Time); ok {
			us := tm.UnixMicro() - pgEpoch.UnixMicro()
			return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
		}
	case OIDInterval:
		if iv, ok := v.(duckdb.Interval); ok {
			b := binary.BigEndian.AppendUint64(nil, uint64(iv.Micros))
			b = binary.BigEndian.AppendUint32(b, uint32(iv.Days))
			return binary.BigEndian.AppendUint32(b, uint32(iv.Months)), nil
		}
	case OIDBytea:
		if b, ok := v.([]byte); ok {
			return b, nil
		}
	case OIDUUID:
		switch u := v.(type) {
		case []byte:
			if len(u) == 16 {
				return u, nil
			}
		case duckdb.UUID:
			return u[:], nil
		}
	default:
		// text and varchar: the binary format is the text itself.
		return []byte(formatAny(v)), nil
	}
	return nil, fmt.Errorf("cannot encode %T as binary type oid %d", v, t.oid)
}

func toInt64(v driver.Value) (int64, bool) {
	switch i := v.(type) {
	case int8:
		return int64(i), true
	case int16:
		return int64(i), true
	case int32:
		return int64(i), true
	case int64:
		return i, true
	case int:
		return int64(i), true
	case uint8:
		return int64(i), true
	case uint16:
		return int64(i), true
	case uint32:
		return int64(i), true
	}
	return 0, false
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// formatFloat prints the shortest representation that round-trips, as
// PostgreSQL 12+ does with extra_float_digits at its default of 1.
func formatFloat(f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return []byte("NaN")
	case math.IsInf(f, 1):
		return []byte("Infinity")
	case math.IsInf(f, -1):
		return []byte("-Infinity")
	}
	s := strconv.FormatFloat(f, 'g', -1, bits)
	// PostgreSQL writes exponents with at least two digits and a sign: 1e+20.
	if i := strings.IndexByte(s, 'e'); i >= 0 {
		mant, exp := s[:i], s[i+1:]
		sign := "+"
		if exp[0] == '-' || exp[0] == '+' {
			sign, exp = exp[:1], exp[1:]
		}
		if len(exp) < 2 {
			exp = "0" + exp
		}
		s = mant + "e" + sign + exp
	}
	return []byte(s)
}

func formatDate(tm time.Time) string {
	y := tm.Year()
	if y <= 0 {
		// PostgreSQL has no year 0: 1 BC is year 0 in Go.
		return fmt.Sprintf("%04d-%02d-%02d BC", 1-y, tm.Month(), tm.Day())
	}
	return tm.Format("2006-01-02")
}

func trimFrac(s string) string {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
	}
	return s
}

func formatInterval(iv duckdb.Interval) string {
	var parts []string
	years, mons := iv.Months/12, iv.Months%12
	plural := func(n int64, unit string) string {
		if n == 1 || n == -1 {
			return fmt.Sprintf("%d %s", n, unit)
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	if years != 0 {
		parts = append(parts, plural(int64(years), "year"))
	}
	if mons != 0 {
		parts = append(parts, plural(int64(mons), "mon"))
	}
	if iv.Days != 0 {
		parts = append(parts, plural(int64(iv.Days), "day"))
	}
	if iv.Micros != 0 || len(parts) == 0 {
		us := iv.Micros
		sign := ""
		if us < 0 {
			sign, us = "-", -us
		}
		h, rem := us/3600e6, us%3600e6
		m, rem := rem/60e6, rem%60e6
		s, frac := rem/1e6, rem%1e6
		t := fmt.Sprintf("%s%02d:%02d:%02d", sign, h, m, s)
		if frac != 0 {
			t += strings.TrimRight(fmt.Sprintf(".%06d", frac), "0")
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, " ")
}

// numericString renders an exact numeric with scale digits after the point.
func numericString(v driver.Value, scale int) (string, bool) {
	switch n := v.(type) {
	case duckdb.Decimal:
		if n.Value == nil {
			return "", false
		}
		return scaledString(n.Value, int(n.Scale)), true
	case *big.Int:
		return n.String(), true
	case uint64:
		return strconv.FormatUint(n, 10), true
	case int64:
		return strconv.FormatInt(n, 10), true
	}
	return "", false
}

func scaledString(v *big.Int, scale int) string {
	s := new(big.Int).Abs(v).String()
	sign := ""
	if v.Sign() < 0 {
		sign = "-"
	}
	if scale <= 0 {
		return sign + s
	}
	if len(s) <= scale {
		s = strings.Repeat("0", scale-len(s)+1) + s
	}
	return sign + s[:len(s)-scale] + "." + s[len(s)-scale:]
}

// numericBinary encodes a decimal string in PostgreSQL's numeric send
// format: ndigits, weight, sign, dscale, then base-10000 digits.
func numericBinary(s string) ([]byte, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(s, ".")
	dscale := len(frac)
	if intPart == "" || strings.Trim(intPart+frac, "0123456789") != "" {
		return nil, fmt.Errorf("invalid numeric %q", s)
	}
	// Pad the integer part on the left and the fraction on the right to
	// whole base-10000 groups.
	if r := len(intPart) % 4; r != 0 {
		intPart = strings.Repeat("0", 4-r) + intPart
	}
	if r := len(frac) % 4; r != 0 {
		frac += strings.Repeat("0", 4-r)
	}
	all := intPart + frac
	digits := make([]int16, 0, len(all)/4)
	for i := 0; i < len(all); i += 4 {
		d, _ := strconv.Atoi(all[i : i+4])
		digits = append(digits, int16(d))
	}
	weight := len(intPart)/4 - 1
	// Strip leading zero groups (each lowers the weight) and trailing ones.
	for len(digits) > 0 && digits[0] == 0 {
		digits = digits[1:]
		weight--
	}
	for len(digits) > 0 && digits[len(digits)-1] == 0 {
		digits = digits[:len(digits)-1]
	}
	sign := uint16(0)
	if neg && len(digits) > 0 {
		sign = 0x4000
	}
	if len(digits) == 0 {
		weight = 0
	}
	b := make([]byte, 0, 8+2*len(digits))
	b = binary.BigEndian.AppendUint16(b, uint16(len(digits)))
	b = binary.BigEndian.AppendUint16(b, uint16(int16(weight)))
	b = binary.BigEndian.AppendUint16(b, sign)
	b = binary.BigEndian.AppendUint16(b, uint16(dscale))
	for _, d := range digits {
		b = binary.BigEndian.AppendUint16(b, uint16(d))
	}
	return b, nil
}

func toUUID(v driver.Value) (string, bool) {
	var b []byte
	switch u := v.(type) {
	case []byte:
		b = u
	case duckdb.UUID:
		b = u[:]
	case string:
		return u, true
	}
	if len(b) != 16 {
		return "", false
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

// formatAny renders values of types sent as text: strings as they are,
// nested values in DuckDB's literal style.
func formatAny(v driver.Value) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return x
	case []byte:
		return string(x)
	case bool:
		if x {
			return "true"
		}
		return "false"
	case time.Time:
		return x.Format("2006-01-02 15:04:05.999999")
	case []any:
		// Lists look like PostgreSQL arrays: {1,2}, {"a b",NULL}.
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = arrayElement(e)
		}
		return "{" + strings.Join(parts, ",") + "}"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = "'" + k + "': " + formatNested(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case fmt.Stringer:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// arrayElement renders one element of a PostgreSQL array literal, quoted
// when it would otherwise be read differently.
func arrayElement(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case []any:
		return formatAny(x)
	}
	s := formatAny(v)
	if s == "" || strings.EqualFold(s, "NULL") || strings.ContainsAny(s, "{}\",\\ \t\n\r") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return s
}

func formatNested(v any) string {
	if s, ok := v.(string); ok {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return formatAny(v)
}

// decodeParam turns one Bind parameter into the Go value bound to DuckDB.
// data == nil is SQL NULL. format 0 is text, 1 is binary.
func decodeParam(oid uint32, format int16, data []byte) (any, error) {
	if data == nil {
		return nil, nil
	}
	if format == 0 {
		return decodeTextParam(oid, string(data))
	}
	if format != 1 {
		return nil, fmt.Errorf("unknown parameter format code %d", format)
	}
	need := func(n int) error {
		if len(data) != n {
			return fmt.Errorf("binary value of type oid %d has %d bytes, want %d", oid, len(data), n)
		}
		return nil
	}
	switch oid {
	case OIDBool:
		if err := need(1); err != nil {
			return nil, err
		}
		return data[0] != 0, nil
	case OIDInt2:
		if err := need(2); err != nil {
			return nil, err
		}
		return int64(int16(binary.BigEndian.Uint16(data))), nil
	case OIDInt4:
		if err := need(4); err != nil {
			return nil, err
		}
		return int64(int32(binary.BigEndian.Uint32(data))), nil
	case OIDInt8:
		if err := need(8); err != nil {
			return nil, err
		}
		return int64(binary.BigEndian.Uint64(data)), nil
	case OIDFloat4:
		if err := need(4); err != nil {
			return nil, err
		}
		return float64(math.Float32frombits(binary.BigEndian.Uint32(data))), nil
	case OIDFloat8:
		if err := need(8); err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(data)), nil
	case OIDDate:
		if err := need(4); err != nil {
			return nil, err
		}
		days := int64(int32(binary.BigEndian.Uint32(data)))
		return pgEpoch.AddDate(0, 0, int(days)), nil
	case OIDTimestamp, OIDTimestamptz:
		if err := need(8); err != nil {
			return nil, err
		}
		us := int64(binary.BigEndian.Uint64(data))
		return time.UnixMicro(pgEpoch.UnixMicro() + us).UTC(), nil
	case OIDBytea:
		return append([]byte(nil), data...), nil
	case OIDUUID:
		if err := need(16); err != nil {
			return nil, err
		}
		s, _ := toUUID(data)
		return s, nil
	case OIDNumeric:
		return decodeNumericBinary(data)
	case OIDText, OIDVarchar, 0:
		return string(data), nil
	}
	return nil, fmt.Errorf("binary parameters of type oid %d are not supported", oid)
}

var errBadNumeric = errors.New("malformed binary numeric")

// decodeNumericBinary returns the decimal string of a binary numeric; DuckDB
// casts it to the parameter's DECIMAL type exactly.
func decodeNumericBinary(b []byte) (any, error) {
	if len(b) < 8 {
		return nil, errBadNumeric
	}
	n := int(binary.BigEndian.Uint16(b))
	weight := int(int16(binary.BigEndian.Uint16(b[2:])))
	sign := binary.BigEndian.Uint16(b[4:])
	dscale := int(binary.BigEndian.Uint16(b[6:]))
	if len(b) != 8+2*n || dscale > 1000 || weight > 1000 || weight < -1000 {
		return nil, errBadNumeric
	}
	switch sign {
	case 0xC000:
		return "NaN", nil
	case 0xD000:
		return "Infinity", nil
	case 0xF000:
		return "-Infinity", nil
	case 0, 0x4000:
	default:
		return nil, errBadNumeric
	}
	v := new(big.Int)
	tenK := big.NewInt(10000)
	for i := range n {
		d := binary.BigEndian.Uint16(b[8+2*i:])
		if d >= 10000 {
			return nil, errBadNumeric
		}
		v.Mul(v, tenK).Add(v, big.NewInt(int64(d)))
	}
	// v * 10000^(weight-n+1) is the value; express it with dscale digits.
	exp10 := 4 * (weight - n + 1)
	shift := exp10 + dscale
	if shift >= 0 {
		v.Mul(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(shift)), nil))
	} else {
		v.Quo(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-shift)), nil))
	}
	if sign == 0x4000 {
		v.Neg(v)
	}
	return scaledString(v, dscale), nil
}

func decodeTextParam(oid uint32, s string) (any, error) {
	switch oid {
	case OIDBool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "t", "true", "yes", "on", "1", "y":
			return true, nil
		case "f", "false", "no", "off", "0", "n":
			return false, nil
		}
		return nil, fmt.Errorf("invalid input syntax for type boolean: %q", s)
	case OIDInt2, OIDInt4, OIDInt8:
		i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid input syntax for type integer: %q", s)
		}
		return i, nil
	case OIDFloat4, OIDFloat8:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, fmt.Errorf("invalid input syntax for type double precision: %q", s)
		}
		return f, nil
	case OIDBytea:
		if rest, ok := strings.CutPrefix(s, `\x`); ok {
			b, err := hex.DecodeString(rest)
			if err != nil {
				return nil, fmt.Errorf("invalid hex bytea: %w", err)
			}
			return b, nil
		}
		return []byte(s), nil
	}
	// Dates, timestamps, numerics, uuids and text go to DuckDB as strings;
	// it casts them to the parameter type with its own (PostgreSQL-like)
	// parsers.
	return s, nil
}
