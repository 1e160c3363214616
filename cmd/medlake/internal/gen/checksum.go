package gen

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// KeyChecksum accumulates an order-independent checksum of a table's keys: the sum, mod
// 2^64, of the big-endian uint64 in the first 8 bytes of sha256(key values joined by "|").
// Because it is a sum, rows may be added in any order and partial checksums merged; a
// duplicated or missing key changes it, so comparing it (and Count) with the manifest
// detects lost and doubled records.
//
// The zero value is an empty checksum. It is not safe for concurrent use.
type KeyChecksum struct {
	sum uint64
	n   int64
}

// Add adds one row's key values.
func (k *KeyChecksum) Add(values ...string) {
	var h [sha256.Size]byte
	if len(values) == 1 {
		h = sha256.Sum256([]byte(values[0]))
	} else {
		h = sha256.Sum256([]byte(strings.Join(values, "|")))
	}
	k.AddHash(binary.BigEndian.Uint64(h[:8]))
}

// AddBytes adds one row whose key values are already joined.
func (k *KeyChecksum) AddBytes(b []byte) {
	h := sha256.Sum256(b)
	k.AddHash(binary.BigEndian.Uint64(h[:8]))
}

// AddHash adds a row whose key hash (the first 8 bytes of the sha256, big-endian) is known.
func (k *KeyChecksum) AddHash(h uint64) {
	k.sum += h
	k.n++
}

// Merge adds every row of o.
func (k *KeyChecksum) Merge(o KeyChecksum) {
	k.sum += o.sum
	k.n += o.n
}

// Sum is the checksum.
func (k KeyChecksum) Sum() uint64 { return k.sum }

// Count is how many rows were added.
func (k KeyChecksum) Count() int64 { return k.n }

// String is the checksum in decimal, as the manifest records it.
func (k KeyChecksum) String() string { return strconv.FormatUint(k.sum, 10) }

// ParseKeyChecksum parses a decimal checksum as written in the manifest.
func ParseKeyChecksum(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing key checksum %q: %w", s, err)
	}
	return v, nil
}

// A row checksum is a KeyChecksum over whole rows: each row's columns (Table.Columns, in
// order), each rendered by CanonicalField, joined by RowFieldSep. The rendering depends
// on the value's type, not on an export format's text, so a lake row read back as typed
// values gives the same checksum as the generator's row.
const (
	// RowFieldSep separates a row's fields.
	RowFieldSep = "\x1f"
	// NullField stands for NULL; an empty string is NULL too, as feeds read empty
	// fields as NULL.
	NullField = "\x00"
)

const fieldSep byte = 0x1f // RowFieldSep

// CanonicalField renders one value read back from the lake (as database/sql or pgx
// scan it into any) the way the generator renders its own: strings as they are, integers
// in decimal, floats in the shortest decimal that round-trips, booleans as true/false,
// times and dates as unix seconds, NULL and "" as NullField.
func CanonicalField(v any) string {
	switch x := v.(type) {
	case nil:
		return NullField
	case string:
		if x == "" {
			return NullField
		}
		return x
	case []byte:
		return CanonicalField(string(x))
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int16:
		return strconv.FormatInt(int64(x), 10)
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10)
	}
	return fmt.Sprint(v)
}

// appendCanonical appends what CanonicalField gives for the lake's copy of v.
func (v value) appendCanonical(b []byte) []byte {
	switch v.k {
	case kStr:
		if v.s == "" {
			return append(b, NullField...)
		}
		return append(b, v.s...)
	case kInt, kDate, kTime:
		return strconv.AppendInt(b, v.i, 10)
	case kFloat:
		return strconv.AppendFloat(b, v.f, 'f', -1, 64)
	case kBool:
		return strconv.AppendBool(b, v.i != 0)
	}
	return append(b, NullField...)
}
