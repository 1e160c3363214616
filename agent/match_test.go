package agent

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/text/encoding/unicode"

	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

const labsByFolder = `name: labs_folder
version: 1
table: labs_folder
match: {glob: "*.csv", folder: "labs/**"}
format: {type: csv}
columns:
  - {name: lab_id, type: string, required: true}
`

const hl7BySniff = `name: hl7_sniff
version: 1
table: hl7_sniff
match: {glob: "*.csv", sniff: '^MSH\|'}
format: {type: csv, delimiter: "|", quote: "", header: false, encoding: utf-16le}
columns:
  - {name: segment, index: 1, type: string, required: true}
  - {name: sender, index: 3, type: string}
`

func mustFeed(tb testing.TB, doc string) *feed.Definition {
	tb.Helper()
	d, err := feed.Parse([]byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func utf16le(tb testing.TB, s string) string {
	tb.Helper()
	b, err := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewEncoder().String(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestMatchFeeds checks folder and sniff matching, and that sniffing peeks: the reader
// handed on still starts at the entry's first byte.
func TestMatchFeeds(t *testing.T) {
	a := &Agent{}
	defs := []*feed.Definition{mustFeed(t, labsByFolder), mustFeed(t, hl7BySniff)}
	peek := bufio.NewReaderSize(nil, normalize.SniffPeekBytes)
	hl7 := utf16le(t, "MSH|^~\\&|LAB|\n") + strings.Repeat("x", 3*feed.SniffBytes)
	tests := []struct {
		name, dir, base, body string
		want                  []string
	}{
		{"folder", "labs", "a.csv", "lab_id\nL1\n", []string{"labs_folder"}},
		{"subfolder", "labs/2024/01", "a.csv", "lab_id\nL1\n", []string{"labs_folder"}},
		{"other folder", "vitals", "a.csv", "lab_id\nL1\n", nil},
		{"sniffed in its encoding", "", "m.csv", hl7, []string{"hl7_sniff"}},
		{"sniff fails", "", "m.csv", utf16le(t, "PID|1\n"), nil},
		{"both", "labs", "m.csv", hl7, []string{"labs_folder", "hl7_sniff"}},
		{"glob fails", "labs", "a.txt", hl7, nil},
		{"empty entry", "", "e.csv", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := unpack.Entry{Name: "x.zip!" + tt.base, Reader: strings.NewReader(tt.body)}
			got, r, err := a.matchFeeds(defs, tt.dir, e, peek)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range got {
				names = append(names, d.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("matched %v, want %v", names, tt.want)
			}
			if b, err := io.ReadAll(r); err != nil || string(b) != tt.body {
				t.Errorf("entry reader after matching gives %d bytes (%v), want the whole entry of %d", len(b), err, len(tt.body))
			}
		})
	}
}

func TestRelDir(t *testing.T) {
	root := filepath.Join("srv", "exports")
	for path, want := range map[string]string{
		filepath.Join(root, "a.csv"):                 "",
		filepath.Join(root, "labs", "a.csv"):         "labs",
		filepath.Join(root, "labs", "2024", "a.csv"): "labs/2024",
		filepath.Join("elsewhere", "a.csv"):          "",
	} {
		if got := relDir(root, path); got != want {
			t.Errorf("relDir(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestAgentFolderAndSniff runs the agent over a recursive folder: a file under labs/ goes
// to the folder feed, a file whose text starts with an HL7 segment to the sniffing feed,
// and a file neither takes is quarantined as matching no feed.
func TestAgentFolderAndSniff(t *testing.T) {
	f := newAgentFixture(t, "labs_folder.yaml", labsByFolder)
	writeFile(t, filepath.Join(f.feeds, "hl7_sniff.yaml"), []byte(hl7BySniff))
	for _, d := range []string{"labs/2024", "inbox"} {
		if err := os.MkdirAll(filepath.Join(f.exports, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	lab := []byte("lab_id\nL1\nL2\n")
	hl7 := []byte(utf16le(t, "MSH|^~\\&|LAB|\nPID|1|P1|\n"))
	stray := []byte("lab_id\nL9\n")
	writeFile(t, filepath.Join(f.exports, "labs", "2024", "a.csv"), lab)
	writeFile(t, filepath.Join(f.exports, "inbox", "m.csv"), hl7)
	writeFile(t, filepath.Join(f.exports, "inbox", "stray.csv"), stray)

	cfg := f.config()
	cfg.Watch[0].Recursive = true
	ag := startAgent(t, cfg)
	waitFor(t, "lab file done", func() bool { return ag.status(t, hashOf(lab)) == state.StatusDone })
	waitFor(t, "hl7 file done", func() bool { return ag.status(t, hashOf(hl7)) == state.StatusDone })
	waitFor(t, "stray file quarantined", func() bool { return ag.status(t, hashOf(stray)) == state.StatusQuarantined })
	if ids := f.hub.batchesOf("a.csv"); len(ids) != 1 || ids[0] != protocol.BatchID(hashOf(lab), "labs_folder", 1, 1) {
		t.Errorf("lab file batches %v, want one of feed labs_folder", ids)
	}
	if ids := f.hub.batchesOf("m.csv"); len(ids) != 1 || ids[0] != protocol.BatchID(hashOf(hl7), "hl7_sniff", 1, 1) {
		t.Errorf("hl7 file batches %v, want one of feed hl7_sniff", ids)
	}
	matches, _ := filepath.Glob(filepath.Join(f.state, "quarantine", "*stray.csv.reason.txt"))
	if len(matches) != 1 {
		t.Fatalf("quarantine reasons %v", matches)
	}
	if b, _ := os.ReadFile(matches[0]); !strings.Contains(string(b), "stray.csv matches no feed") {
		t.Errorf("quarantine reason %q", b)
	}
}
