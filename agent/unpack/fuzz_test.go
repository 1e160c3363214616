package unpack

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var fuzzNames = [...]string{"f.zip", "f.csv.gz", "f.tar.gz", "f.tar", "f.csv"}

// FuzzUnpack feeds arbitrary bytes to Walk under each archive name: it must never panic
// or hang, and every failure must carry a sentinel so the file can be quarantined.
func FuzzUnpack(f *testing.F) {
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("a.csv")
	io.WriteString(w, csvA)
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "s.csv", Method: zip.Store})
	io.WriteString(w, csvB)
	zw.Close()
	f.Add(zbuf.Bytes(), uint8(0))

	var gbuf bytes.Buffer
	gw := gzip.NewWriter(&gbuf)
	io.WriteString(gw, csvA)
	gw.Close()
	f.Add(gbuf.Bytes(), uint8(1))

	dir := f.TempDir()
	writeFile(f, filepath.Join(dir, "t.tar.gz"), "")
	tarGzWith(f, filepath.Join(dir, "t.tar.gz"), "a.csv", "d/b.csv")
	tgz, _ := os.ReadFile(filepath.Join(dir, "t.tar.gz"))
	f.Add(tgz, uint8(2))
	if zr, err := gzip.NewReader(bytes.NewReader(tgz)); err == nil {
		tarBytes, _ := io.ReadAll(zr)
		f.Add(tarBytes, uint8(3))
	}
	// A zip holding a gzip, so nesting is explored too.
	var nbuf bytes.Buffer
	nw := zip.NewWriter(&nbuf)
	w, _ = nw.Create("in.csv.gz")
	w.Write(gbuf.Bytes())
	nw.Close()
	f.Add(nbuf.Bytes(), uint8(0))
	f.Add([]byte(csvA), uint8(4))

	lim := Limits{MaxEntrySize: 1 << 20, MaxArchiveSize: 4 << 20, RatioGrace: 64 << 10, MaxEntries: 64, MemStage: 1 << 10}
	f.Fuzz(func(t *testing.T, data []byte, k uint8) {
		dir := t.TempDir()
		p := filepath.Join(dir, fuzzNames[int(k)%len(fuzzNames)])
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l := lim
		l.TempDir = t.TempDir()
		err := Walk(context.Background(), p, l, func(e Entry) error {
			if e.Skip != "" {
				return nil
			}
			if _, err := io.Copy(io.Discard, e.Reader); err != nil {
				return fmt.Errorf("reading %s: %w", e.Name, err)
			}
			return nil
		})
		if err == nil {
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("unclassified error: %v", err)
	})
}
