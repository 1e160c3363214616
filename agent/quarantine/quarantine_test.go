package quarantine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFormatParse(t *testing.T) {
	tests := []struct {
		name string
		r    Record
	}{
		{"simple", Record{SHA256: strings.Repeat("ab", 32), Path: "/srv/x.zip", Time: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC), Reason: "wrong password"}},
		{"multi-line reason", Record{SHA256: strings.Repeat("01", 32), Path: `C:\exports\a b.csv`, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Reason: "line one\nreason: not a key\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(Format(tt.r))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.r {
				t.Errorf("round trip = %+v, want %+v", got, tt.r)
			}
		})
	}
	for _, bad := range []string{"", "file: x\n", "sha256: 12\nreason: x\n", "time: yesterday\nreason: x\n"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestListFindRetry(t *testing.T) {
	dir := t.TempDir()
	put := func(sha, path, reason string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, CopyName(sha, path)), []byte("content of "+path), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Write(dir, Record{SHA256: sha, Path: path, Time: at, Reason: reason}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := "aaaa11"+strings.Repeat("0", 58), "aaaa22"+strings.Repeat("0", 58)
	put(b, "/x/b.csv", "matches no feed", time.Unix(200, 0))
	put(a, "/x/a.zip", "wrong password", time.Unix(100, 0))
	os.WriteFile(filepath.Join(dir, "junk.reason.txt"), []byte("nonsense"), 0o600)

	l, err := List(dir)
	if err != nil || len(l) != 3 {
		t.Fatalf("List = %+v, %v", l, err)
	}
	if l[0].SHA256 != "" || !strings.Contains(l[0].Reason, "unreadable reason file") {
		t.Errorf("unparsable reason file listed as %+v", l[0])
	}
	if l[1].SHA256 != a || l[1].Size != int64(len("content of /x/a.zip")) || l[2].SHA256 != b {
		t.Errorf("List order or sizes: %+v", l)
	}
	if _, err := Find(dir, "aaaa"); err == nil {
		t.Error("Find accepted a 4-digit prefix")
	}
	if _, err := Find(dir, "aaaa1"+"1"); err != nil {
		t.Errorf("Find unique prefix: %v", err)
	}
	if _, err := Find(dir, "AAAA"+"00"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find unknown: %v", err)
	}
	put("aaaa11"+strings.Repeat("f", 58), "/x/c.csv", "x", time.Unix(300, 0))
	if _, err := Find(dir, "aaaa11"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Find ambiguous: %v", err)
	}

	if err := RequestRetry(dir, a); err != nil {
		t.Fatal(err)
	}
	if p, _ := PendingRetries(dir); len(p) != 1 || p[0] != a {
		t.Fatalf("pending = %v", p)
	}
	if e, _ := Find(dir, a); !e.RetryPending {
		t.Error("entry does not show its pending retry")
	}
	DoneRetry(dir, a)
	if p, _ := PendingRetries(dir); len(p) != 0 {
		t.Fatalf("pending after done = %v", p)
	}
	if c := CopyOf(dir, b); c != filepath.Join(dir, CopyName(b, "/x/b.csv")) {
		t.Errorf("CopyOf = %q", c)
	}
	if err := Remove(dir, b); err != nil {
		t.Fatal(err)
	}
	if c := CopyOf(dir, b); c != "" {
		t.Errorf("copy still there after Remove: %q", c)
	}
}

// FuzzParse: a reason file never panics the parser, and what Format writes parses back.
func FuzzParse(f *testing.F) {
	f.Add([]byte("file: /a\nsha256: " + strings.Repeat("ab", 32) + "\ntime: 2026-11-02T09:00:00Z\nreason: x\n"))
	f.Add([]byte("reason: "))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		if len(r.SHA256) != 64 {
			t.Fatalf("parsed a record with sha256 %q", r.SHA256)
		}
	})
}
