package gen

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/feeds/ from the generator")

// TestFeedsGolden keeps testdata/feeds/, the example definitions for every table in every
// export format the generator writes (CSV, pipe-delimited TXT, one-record XML files,
// fixed-width DAT), in step with what gen writes: go test -run FeedsGolden -update.
func TestFeedsGolden(t *testing.T) {
	dir := filepath.Join("testdata", "feeds")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, e := range entities {
		for _, format := range []string{FormatCSV, FormatTXT, FormatXML, FormatDAT} {
			name := feedName(e, format) + ".yaml"
			want[name] = true
			got := feedYAML(e, format)
			path := filepath.Join(dir, name)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, got) {
				t.Errorf("%s differs from what gen writes (go test -run FeedsGolden -update): %v", path, err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if !want[filepath.Base(f)] {
			t.Errorf("%s: gen writes no such feed", f)
		}
	}
}
