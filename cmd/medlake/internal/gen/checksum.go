package gen

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
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
