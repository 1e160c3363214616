package pgwire

import (
	"bytes"
	"encoding/binary"
	"math/big"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestNumericBinaryRoundTrip(t *testing.T) {
	for _, s := range []string{"0", "1", "-1", "0.001", "12345.670", "-99999999.99", "10000", "100000000.0001", "0.10", "123456789012345678901234567890.123"} {
		b, err := numericBinary(s)
		if err != nil {
			t.Fatalf("numericBinary(%q): %v", s, err)
		}
		got, err := decodeNumericBinary(b)
		if err != nil {
			t.Fatalf("decode(%q): %v", s, err)
		}
		if got != s && !(s == "-0" && got == "0") {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
}

func TestEncodeText(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)
	tests := []struct {
		t    pgType
		v    any
		want string
	}{
		{pgType{oid: OIDBool}, false, "f"},
		{pgType{oid: OIDInt2}, int8(-3), "-3"},
		{pgType{oid: OIDFloat8}, 1e20, "1e+20"},
		{pgType{oid: OIDFloat8}, 1.25e-7, "1.25e-07"},
		{pgType{oid: OIDNumeric, scale: 2}, duckdb.Decimal{Width: 5, Scale: 2, Value: big.NewInt(-5)}, "-0.05"},
		{pgType{oid: OIDNumeric}, big.NewInt(12), "12"},
		{pgType{oid: OIDTimestamp}, ts, "2026-01-02 03:04:05.6"},
		{pgType{oid: OIDTimestamptz}, ts.In(time.FixedZone("x", 3600)), "2026-01-02 03:04:05.6+00"},
		{pgType{oid: OIDDate}, time.Date(0, 3, 1, 0, 0, 0, 0, time.UTC), "0001-03-01 BC"},
		{pgType{oid: OIDInterval}, duckdb.Interval{Months: 14, Days: 3, Micros: 3723500000}, "1 year 2 mons 3 days 01:02:03.5"},
		{pgType{oid: OIDText}, []any{int32(1), "a"}, "{1,a}"},
		{pgType{oid: OIDText}, []any{"a b", nil, "", "x\"y", []any{"NULL"}}, `{"a b",NULL,"","x\"y",{"NULL"}}`},
		{pgType{oid: OIDText}, []any{}, "{}"},
		{pgType{oid: OIDText}, map[string]any{"b": int32(2), "a": nil}, "{'a': NULL, 'b': 2}"},
	}
	for _, tt := range tests {
		got, err := encodeText(tt.t, tt.v)
		if err != nil || string(got) != tt.want {
			t.Errorf("encodeText(%d, %#v) = %q, %v; want %q", tt.t.oid, tt.v, got, err, tt.want)
		}
	}
}

func TestDecodeParam(t *testing.T) {
	be := func(n int, v uint64) []byte {
		b := make([]byte, 8)
		binary.BigEndian.PutUint64(b, v)
		return b[8-n:]
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		oid    uint32
		format int16
		data   []byte
		want   any
		ok     bool
	}{
		{OIDInt4, 1, be(4, 0xFFFFFFFE), int64(-2), true},
		{OIDInt4, 1, be(2, 1), nil, false},
		{OIDInt8, 0, []byte("42"), int64(42), true},
		{OIDInt8, 0, []byte("4x2"), nil, false},
		{OIDBool, 0, []byte("t"), true, true},
		{OIDTimestamptz, 1, be(8, uint64(ts.UnixMicro()-pgEpoch.UnixMicro())), ts, true},
		{OIDDate, 1, be(4, 1), pgEpoch.AddDate(0, 0, 1), true},
		{OIDText, 1, []byte("x"), "x", true},
		{OIDUUID, 1, bytes.Repeat([]byte{0xab}, 16), "abababab-abab-abab-abab-abababababab", true},
		{OIDInt4, 2, []byte("1"), nil, false},
		{OIDInt4, 0, nil, nil, true},
	}
	for _, tt := range tests {
		got, err := decodeParam(tt.oid, tt.format, tt.data)
		if (err == nil) != tt.ok {
			t.Errorf("decodeParam(%d, %d, %x): err %v, want ok=%v", tt.oid, tt.format, tt.data, err, tt.ok)
			continue
		}
		if tm, isTime := got.(time.Time); isTime {
			if !tm.Equal(tt.want.(time.Time)) {
				t.Errorf("decodeParam(%d) = %v, want %v", tt.oid, got, tt.want)
			}
		} else if tt.ok && got != tt.want {
			t.Errorf("decodeParam(%d, %x) = %#v, want %#v", tt.oid, tt.data, got, tt.want)
		}
	}
}

func FuzzDecodeParam(f *testing.F) {
	f.Add(uint32(OIDNumeric), int16(1), []byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(uint32(OIDInt8), int16(0), []byte("123"))
	f.Add(uint32(OIDTimestamp), int16(1), make([]byte, 8))
	f.Add(uint32(OIDBytea), int16(0), []byte(`\x0g`))
	f.Fuzz(func(t *testing.T, oid uint32, format int16, data []byte) {
		v, err := decodeParam(oid, format, data)
		if err == nil && oid == OIDNumeric && format == 1 {
			// A decoded numeric re-encodes to the same value.
			s := v.(string)
			if s == "NaN" || s == "Infinity" || s == "-Infinity" {
				return
			}
			b, err := numericBinary(s)
			if err != nil {
				t.Fatalf("re-encoding %q: %v", s, err)
			}
			back, err := decodeNumericBinary(b)
			if err != nil || back != s {
				t.Fatalf("numeric %q -> %q, %v", s, back, err)
			}
		}
	})
}

// FuzzBindParams feeds arbitrary Bind messages through the same decoding the
// connection uses.
func FuzzBindParams(f *testing.F) {
	seed, _ := (&pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}}}).Encode(nil)
	f.Add(seed[5:])
	f.Fuzz(func(t *testing.T, body []byte) {
		var b pgproto3.Bind
		if err := b.Decode(body); err != nil {
			return
		}
		oids := make([]uint32, len(b.Parameters))
		for i := range oids {
			oids[i] = []uint32{OIDInt4, OIDNumeric, OIDText, OIDTimestamptz, OIDUUID}[i%5]
		}
		_, _ = decodeParams(oids, b.ParameterFormatCodes, b.Parameters)
		_, _ = resultFormats(3, b.ResultFormatCodes)
	})
}
