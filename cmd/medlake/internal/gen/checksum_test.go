package gen

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

func TestKeyChecksumDefinition(t *testing.T) {
	// The definition other components recompute: first 8 bytes of sha256, big-endian,
	// summed mod 2^64, multi-column keys joined by "|".
	var want uint64
	for _, k := range []string{"f000001-L000000001", "f000001-L000000002|x"} {
		h := sha256.Sum256([]byte(k))
		want += binary.BigEndian.Uint64(h[:8])
	}
	var k KeyChecksum
	k.Add("f000001-L000000001")
	k.Add("f000001-L000000002", "x")
	if k.Sum() != want || k.Count() != 2 {
		t.Fatalf("checksum %d over %d rows, want %d over 2", k.Sum(), k.Count(), want)
	}
	if got, err := ParseKeyChecksum(k.String()); err != nil || got != want {
		t.Fatalf("ParseKeyChecksum(%q) = %d, %v", k.String(), got, err)
	}
	// Golden value: changing the definition breaks every stored manifest.
	var one KeyChecksum
	one.Add("f000001-L000000001")
	if one.String() != "3902804852630647092" {
		t.Errorf("checksum of one key is %s; the definition changed", one.String())
	}
	if _, err := ParseKeyChecksum("-1"); err == nil {
		t.Errorf("ParseKeyChecksum accepted a negative number")
	}
}

func TestKeyChecksumOrderIndependent(t *testing.T) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "f000007-P" + strconv.Itoa(i)
	}
	var a KeyChecksum
	for _, k := range keys {
		a.Add(k)
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	var b, part1, part2 KeyChecksum
	for i, k := range keys {
		b.Add(k)
		if i%3 == 0 {
			part1.Add(k)
		} else {
			part2.Add(k)
		}
	}
	part1.Merge(part2)
	if a != b || a != part1 {
		t.Errorf("checksums differ by order or merge: %v %v %v", a, b, part1)
	}
}

func TestKeyChecksumDetectsChanges(t *testing.T) {
	base := func() KeyChecksum {
		var k KeyChecksum
		for i := range 100 {
			k.Add("f000001-E" + strconv.Itoa(i))
		}
		return k
	}
	want := base()
	tests := []struct {
		name string
		edit func(*KeyChecksum)
	}{
		{"duplicate", func(k *KeyChecksum) { k.Add("f000001-E7") }},
		{"extra", func(k *KeyChecksum) { k.Add("f000001-E100") }},
		{"replaced", func(k *KeyChecksum) {
			*k = KeyChecksum{}
			for i := range 100 {
				k.Add("f000001-E" + strconv.Itoa(i+1))
			}
		}},
		{"duplicate instead of missing", func(k *KeyChecksum) {
			*k = KeyChecksum{}
			for i := range 100 {
				k.Add("f000001-E" + strconv.Itoa(min(i, 98)))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := base()
			tt.edit(&k)
			if k.Sum() == want.Sum() {
				t.Errorf("checksum unchanged")
			}
		})
	}
}

// TestCanonicalField: a value read back from the lake renders as the generator renders
// its own, so whole-row checksums compare.
func TestCanonicalField(t *testing.T) {
	at := time.Date(2024, 10, 22, 13, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		lake any
		gen  value
	}{
		{"string", "f000001-L000000123", str("f000001-L000000123")},
		{"empty string is null", "", str("")},
		{"null", nil, null},
		{"int64", int64(-42), num(-42)},
		{"int32", int32(7), num(7)},
		{"float", 36.6, flt(36.6)},
		{"whole float", 5.0, flt(5)},
		{"bool", true, boolean(true)},
		{"timestamp", at, ts(at.Unix())},
		{"timestamp in another zone", at.In(time.FixedZone("x", 3600)), ts(at.Unix())},
		{"date", time.Date(2024, 10, 22, 0, 0, 0, 0, time.UTC), date(at.Unix())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, want := CanonicalField(tt.lake), string(tt.gen.appendCanonical(nil))
			if got != want {
				t.Errorf("CanonicalField(%#v) = %q; the generator renders %q", tt.lake, got, want)
			}
		})
	}
	if CanonicalField(36.6) == CanonicalField(36.7) || CanonicalField("a") == CanonicalField(nil) {
		t.Error("different values render alike")
	}
}
