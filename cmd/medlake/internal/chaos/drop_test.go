package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
)

// TestDropper: the schedule holds back one file per facility for after the faults,
// next gives a facility its next file at once, and every file is dropped exactly once.
func TestDropper(t *testing.T) {
	genDir, exports := t.TempDir(), t.TempDir()
	m := &gen.Manifest{}
	watch := map[string]string{}
	for _, fac := range []string{"f1", "f2"} {
		watch[fac] = filepath.Join(exports, fac)
		if err := os.MkdirAll(watch[fac], 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			rel := fmt.Sprintf("exports/%s/%s_%d.csv.gz", fac, fac, i)
			if err := os.MkdirAll(filepath.Join(genDir, filepath.Dir(rel)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(genDir, rel), []byte(rel), 0o644); err != nil {
				t.Fatal(err)
			}
			m.Files = append(m.Files, gen.File{Path: rel, Facility: fac})
		}
	}
	m.Files = append(m.Files, gen.File{Path: "exports/f1/pending.xml.zip", Facility: "f1", Pending: true})
	files := func(fac string) int {
		des, err := os.ReadDir(watch[fac])
		if err != nil {
			t.Fatal(err)
		}
		return len(des)
	}

	d := newDropper(m, genDir, watch, 1)
	if err := d.next("f1"); err != nil {
		t.Fatal(err)
	}
	if files("f1") != 1 || files("f2") != 0 {
		t.Fatalf("after next(f1): %d and %d files, want 1 and 0", files("f1"), files("f2"))
	}
	if err := d.run(context.Background(), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Three of each facility's four: the fourth is held back.
	if files("f1") != 3 || files("f2") != 3 || d.count() != 6 {
		t.Fatalf("after the schedule: %d and %d files (count %d), want 3 and 3", files("f1"), files("f2"), d.count())
	}
	if err := d.next("f2"); err != nil { // the schedule is done: the held-back file
		t.Fatal(err)
	}
	if files("f2") != 4 {
		t.Fatalf("next(f2) after the schedule: %d files, want 4", files("f2"))
	}
	if err := d.rest(); err != nil {
		t.Fatal(err)
	}
	if err := d.rest(); err != nil {
		t.Fatal(err)
	}
	if files("f1") != 4 || files("f2") != 4 || d.count() != 8 {
		t.Errorf("after rest: %d and %d files (count %d), want 4 each and no pending file", files("f1"), files("f2"), d.count())
	}
	data, err := os.ReadFile(filepath.Join(watch["f1"], "f1_0.csv.gz"))
	if err != nil || string(data) != "exports/f1/f1_0.csv.gz" {
		t.Errorf("dropped file holds %q, %v", data, err)
	}
}
