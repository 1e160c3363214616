package gen

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
)

// streamDigest hashes every row Stream emits for table, with its facility.
func streamDigest(t *testing.T, o StreamOptions, table string) (string, int, map[string]bool) {
	t.Helper()
	h := sha256.New()
	n := 0
	facilities := map[string]bool{}
	err := Stream(context.Background(), o, table, func(f *Facility, row []Value) error {
		n++
		facilities[f.ID] = true
		fmt.Fprint(h, f.ID, f.Tenant)
		for _, v := range row {
			fmt.Fprint(h, "|", v.Null(), v.Str(), v.Int(), v.Float())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n, facilities
}

func TestStreamDeterministic(t *testing.T) {
	o := StreamOptions{Seed: 3, Facilities: 4, Days: 3, RowsPerFacilityDay: 40}
	for _, table := range Tables() {
		a, n, facs := streamDigest(t, o, table)
		b, _, _ := streamDigest(t, o, table)
		if a != b {
			t.Errorf("%s: same options gave different rows", table)
		}
		if table != "bed_census" && n < 4*3*40 {
			t.Errorf("%s: %d rows, want at least %d", table, n, 4*3*40)
		}
		if len(facs) != 4 {
			t.Errorf("%s: rows of %d facilities, want 4", table, len(facs))
		}
		o2 := o
		o2.Seed = 4
		if c, _, _ := streamDigest(t, o2, table); c == a {
			t.Errorf("%s: another seed gave the same rows", table)
		}
	}
	cols, err := Columns("lab_results")
	if err != nil || len(cols) == 0 || cols[0].Name != "lab_id" {
		t.Fatalf("Columns(lab_results) = %v, %v", cols, err)
	}
	if _, err := Columns("nope"); err == nil {
		t.Fatal("Columns of an unknown table did not fail")
	}
}
