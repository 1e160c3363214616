package feed

import (
	"path"
	"testing"
)

var globCases = []struct{ pattern, name string }{
	{"*_lab_results_*.xml*", "f000001_lab_results_000002.xml.zip"},
	{"*_lab_results_*.xml*", "f000001_lab_results_000002_0001.xml"},
	{"*_lab_results_*.xml*", "f000001_vitals_000002.xml"},
	{"*_lab_results_*.xml*", "_lab_results_.xml"},
	{"*_lab_results_*.xml*", "_lab_results.xml"},
	{"a*a", "a"},
	{"a*a", "aa"},
	{"*ab*ab*", "abab"},
	{"*ab*ab*", "aab"},
	{"**", ""},
	{"*", "a/b"},
	{"labs.csv", "labs.csv"},
	{"labs.csv", "Labs.csv"},
	{"lab?.csv", "labs.csv"},
	{"[a-c]*.csv", "b.csv"},
	{`\*.csv`, "*.csv"},
	{"*é*", "café.xml"},
	{"*.xml", "x.xml\xff"},
}

// TestMatchGlob: matchGlob agrees with path.Match, and matches what it should.
func TestMatchGlob(t *testing.T) {
	matched := 0
	for _, c := range globCases {
		want, _ := path.Match(c.pattern, c.name)
		if got := matchGlob(c.pattern, c.name); got != want {
			t.Errorf("matchGlob(%q, %q) = %v, path.Match says %v", c.pattern, c.name, got, want)
		}
		if want {
			matched++
		}
	}
	if matched < 8 {
		t.Errorf("only %d cases match: the table no longer tests matching", matched)
	}
}

// FuzzMatchGlob: for every valid pattern, matchGlob says what path.Match says.
func FuzzMatchGlob(f *testing.F) {
	for _, c := range globCases {
		f.Add(c.pattern, c.name)
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if _, err := path.Match(pattern, ""); err != nil {
			return // Validate refuses it
		}
		want, err := path.Match(pattern, name)
		if err != nil {
			return
		}
		if got := matchGlob(pattern, name); got != want {
			t.Fatalf("matchGlob(%q, %q) = %v, path.Match says %v", pattern, name, got, want)
		}
	})
}
