package agent

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/medlake/medlake/agent/state"
)

// labXMLFeed reads the generator's XML export shape: zip archives of one-record files.
const labXMLFeed = `name: lab_results_xml
version: 1
table: lab_results
match:
  glob: "*_lab_results_*.xml*"
format:
  type: xml
  record: lab_result
columns:
  - {name: lab_id, type: string, required: true}
  - {name: facility, source: "@facility", type: string}
  - {name: result_value, source: value, type: float}
`

func zipOf(tb testing.TB, entries map[string]string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range entries {
		w, err := zw.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func labXML(id string, value string) string {
	return fmt.Sprintf("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<lab_result facility=\"f1\">\n  <lab_id>%s</lab_id>\n  <value>%s</value>\n</lab_result>\n", id, value)
}

// TestAgentXML ingests a zip of one-record XML files, keeping a bad value as a row reject,
// and quarantines a zip holding one malformed XML file without sending any of it.
func TestAgentXML(t *testing.T) {
	f := newAgentFixture(t, "lab_results_xml.yaml", labXMLFeed)
	hub, exports, stateDir := f.hub, f.exports, f.state

	good := zipOf(t, map[string]string{
		"f1_lab_results_1_0001.xml": labXML("L1", "1.5"),
		"f1_lab_results_1_0002.xml": labXML("L2", "high"),
		"f1_lab_results_1_0003.xml": labXML("L3", "3"),
	})
	bad := zipOf(t, map[string]string{
		"f1_lab_results_2_0001.xml": labXML("L4", "4"),
		"f1_lab_results_2_0002.xml": strings.TrimSuffix(labXML("L5", "5"), "</lab_result>\n"),
	})
	writeFile(t, filepath.Join(exports, "f1_lab_results_1.xml.zip"), good)
	writeFile(t, filepath.Join(exports, "f1_lab_results_2.xml.zip"), bad)

	ag := startAgent(t, f.config())
	waitFor(t, "good archive done", func() bool { return ag.status(t, hashOf(good)) == state.StatusDone })
	waitFor(t, "malformed archive quarantined", func() bool { return ag.status(t, hashOf(bad)) == state.StatusQuarantined })
	// The archive's entries share one batch; each row names its entry.
	ids := hub.batchesOf("f1_lab_results_1.xml.zip")
	if len(ids) != 1 {
		t.Fatalf("good archive sent %d batches, want 1 for all its entries", len(ids))
	}
	want := []string{"f1_lab_results_1.xml.zip!f1_lab_results_1_0001.xml", "f1_lab_results_1.xml.zip!f1_lab_results_1_0003.xml"}
	if got := hub.entriesOf(ids[0]); !slices.Equal(got, want) {
		t.Errorf("batch rows come from %q, want %q", got, want)
	}
	if ids, n := hub.rejectsOf("f1_lab_results_1.xml.zip"), hub.rejectRows("f1_lab_results_1.xml.zip"); len(ids) != 1 || n != 1 {
		t.Errorf("good archive sent %d reject batches with %d rows, want 1 with its 1 rejected entry", len(ids), n)
	}
	if ids := hub.batchesOf("f1_lab_results_2.xml.zip"); len(ids) != 0 {
		t.Errorf("malformed archive sent %d batches", len(ids))
	}
	rj, err := os.ReadFile(filepath.Join(stateDir, "rejects", hashOf(good)+".jsonl"))
	if err != nil || strings.Count(string(rj), "\n") != 1 || !strings.Contains(string(rj), `"row":1`) || !strings.Contains(string(rj), "result_value") || !strings.Contains(string(rj), "f1_lab_results_1_0002.xml") {
		t.Fatalf("rejects of the good archive: %q %v", rj, err)
	}
	reason, err := os.ReadFile(filepath.Join(stateDir, "quarantine", hashOf(bad)[:16]+"_f1_lab_results_2.xml.zip.reason.txt"))
	if err != nil || !strings.Contains(string(reason), "malformed xml") || !strings.Contains(string(reason), "f1_lab_results_2_0002.xml") {
		t.Fatalf("quarantine reason %q: %v", reason, err)
	}
}

// TestAgentUndecodableCSV quarantines a CSV whose bytes are not text in the feed's
// declared encoding, instead of retrying it forever.
func TestAgentUndecodableCSV(t *testing.T) {
	f := newAgentFixture(t, "visits.yaml", `name: visits_csv
version: 1
table: visits
match: {glob: "*.csv"}
format: {type: csv, encoding: windows-1252}
columns:
  - {name: visit_id, type: string}
  - {name: note, type: string}
`)
	bad := []byte("visit_id,note\nV1,caf\xe9\nV2,bad \x81 byte\n") // 0x81 is undefined in windows-1252
	writeFile(t, filepath.Join(f.exports, "visits.csv"), bad)

	ag := startAgent(t, f.config())
	waitFor(t, "undecodable file quarantined", func() bool { return ag.status(t, hashOf(bad)) == state.StatusQuarantined })
	if ids := f.hub.batchesOf("visits.csv"); len(ids) != 0 {
		t.Errorf("undecodable file sent %d batches", len(ids))
	}
	reason, err := os.ReadFile(filepath.Join(f.state, "quarantine", hashOf(bad)[:16]+"_visits.csv.reason.txt"))
	if err != nil || !strings.Contains(string(reason), "0x81") || !strings.Contains(string(reason), "visits.csv") {
		t.Fatalf("quarantine reason %q: %v", reason, err)
	}
}
