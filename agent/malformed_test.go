package agent

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/agent/unpack"
)

// labsFeed is the malformed-input suite's main feed; secure.yaml is the same table read
// from password-protected zips.
const labsFeed = `name: labs_csv
version: 1
table: labs
match: {glob: "labs_*.csv"}
format: {type: csv}
columns:
  - {name: lab_id, type: string, required: true}
  - {name: value, type: float}
  - {name: taken, type: date}
  - {name: count, type: int}
`

// Feeds of the malformed-input suite. The suite's file names pick the feed.
var malformedFeeds = map[string]string{
	"secure.yaml": strings.NewReplacer("name: labs_csv", "name: secure_csv",
		`match: {glob: "labs_*.csv"}`, `match: {glob: "secure_*.csv", password_secret: lab_zip}`).Replace(labsFeed),
	"labs.yaml": labsFeed,
	"visits.yaml": `name: visits_xml
version: 1
table: visits
match: {glob: "visits_*.xml"}
format: {type: xml, record: Visits/Visit}
columns:
  - {name: visit_id, source: "@id", type: string, required: true}
  - {name: age, source: Age, type: int}
`,
	"notes.yaml": `name: notes_1252
version: 1
table: notes
match: {glob: "notes_*.csv"}
format: {type: csv, encoding: windows-1252}
columns:
  - {name: note_id, type: string, required: true}
  - {name: text, type: string}
`,
	"strict.yaml": `name: strict_csv
version: 1
table: strict
match: {glob: "strict_*.csv"}
format: {type: csv}
drift: reject
columns:
  - {name: id, type: string, required: true}
  - {name: amount, type: decimal, precision: 8, scale: 2, min: 0}
`,
	"roster.yaml": `name: roster_fixed
version: 1
table: roster
match: {glob: "roster_*.dat"}
format: {type: fixed}
columns:
  - {name: patient_id, start: 1, width: 6, type: string, required: true}
  - {name: name, start: 7, width: 10, type: string, required: true}
  - {name: birth, start: 17, width: 8, type: date, format: "20060102"}
`,
	"notes16.yaml": `name: notes_utf16
version: 1
table: notes
match: {glob: "notes16_*.csv"}
format: {type: csv, encoding: utf-16le}
columns:
  - {name: note_id, type: string, required: true}
  - {name: text, type: string}
`,
}

// malformedCase is one bad input and the outcome the agent must reach with it.
type malformedCase struct {
	name string
	// file is the name dropped into the watched folder; build returns its bytes, or
	// writes it itself (into dir, under file) and returns nil.
	file  string
	build func(t *testing.T, dir string) []byte
	// Outcome: quarantined with a reason holding every want string, or done with rows
	// accepted and one reject per wantRejects entry, each holding its strings.
	quarantine  bool
	want        []string
	rows        int64
	wantRejects [][]string
}

// TestMalformedInputs drops every kind of broken input the agent meets into one watched
// folder and checks that each ends in its documented outcome, with a reason naming the
// file and the position: the file quarantined (nothing of it sent), or bad rows
// rejected while the good rows of the file go on. Nothing is lost silently.
func TestMalformedInputs(t *testing.T) {
	for _, tool := range []string{"zip", "7z", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the suite's fixtures are made by %s: apt-get install zip p7zip-full gzip (.ci/run does)", tool)
		}
	}
	const goodCSV = "lab_id,value,taken,count\nL1,1.5,2026-01-02,3\n"
	csvWith := func(rows string) func(*testing.T, string) []byte {
		return func(*testing.T, string) []byte { return []byte("lab_id,value,taken,count\n" + rows) }
	}
	plain := func(s string) func(*testing.T, string) []byte {
		return func(*testing.T, string) []byte { return []byte(s) }
	}
	// shell runs script in dir and returns nil: the script leaves the file itself.
	shell := func(script string) func(*testing.T, string) []byte {
		return func(t *testing.T, dir string) []byte {
			cmd := exec.Command("sh", "-ec", script)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", script, err, out)
			}
			return nil
		}
	}
	half := func(b func(*testing.T, string) []byte, file string) func(*testing.T, string) []byte {
		return func(t *testing.T, dir string) []byte {
			if got := b(t, dir); got != nil {
				return got[:len(got)/2]
			}
			data, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			return data[:len(data)/2]
		}
	}
	zipped := func(entries ...string) func(*testing.T, string) []byte { // name, body, name, body...
		return func(t *testing.T, _ string) []byte {
			m := map[string]string{}
			for i := 0; i < len(entries); i += 2 {
				m[entries[i]] = entries[i+1]
			}
			return zipOf(t, m)
		}
	}
	xmlDoc := func(body string) func(*testing.T, string) []byte {
		return plain("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + body)
	}
	cases := []malformedCase{
		// Archives.
		{name: "truncated gzip", file: "labs_trunc.csv.gz", build: func(t *testing.T, _ string) []byte {
			b := gz(t, []byte(goodCSV+strings.Repeat("L2,2.5,2026-01-03,4\n", 2000)))
			return b[:len(b)/2]
		}, quarantine: true, want: []string{"labs_trunc.csv.gz", "corrupt"}},
		{name: "gzip with a bad checksum", file: "labs_crc.csv.gz", build: func(t *testing.T, _ string) []byte {
			b := gz(t, []byte(goodCSV))
			b[len(b)-6] ^= 0xff
			return b
		}, quarantine: true, want: []string{"labs_crc.csv.gz!labs_crc.csv", "corrupt"}},
		{name: "truncated zip", file: "labs_trunc.zip", build: half(zipped("labs_a.csv", goodCSV+strings.Repeat("L9,1,2026-01-01,1\n", 500)), ""),
			quarantine: true, want: []string{"labs_trunc.zip", "corrupt"}},
		{name: "not a zip", file: "labs_garbage.zip", build: plain("PK\x03\x04 this is not really a zip archive"),
			quarantine: true, want: []string{"labs_garbage.zip", "corrupt"}},
		{name: "zipcrypto, wrong password", file: "secure_wrong.zip", build: shell("printf '" + goodCSV + "' > secure_w.csv; zip -q -P not-it secure_wrong.zip secure_w.csv"),
			quarantine: true, want: []string{"secure_wrong.zip!secure_w.csv", "wrong password", "lab_zip"}},
		{name: "winzip aes-256, wrong password", file: "secure_aes.zip", build: shell("printf '" + goodCSV + "' > secure_a.csv; 7z a -tzip -bd -bso0 -pnot-it -mem=AES256 secure_aes.zip secure_a.csv"),
			quarantine: true, want: []string{"secure_aes.zip!secure_a.csv", "wrong password"}},
		{name: "encrypted, feed has no password", file: "labs_locked.zip", build: shell("printf '" + goodCSV + "' > labs_l.csv; zip -q -P right-pw labs_locked.zip labs_l.csv"),
			quarantine: true, want: []string{"labs_locked.zip!labs_l.csv", "encrypted"}},
		{name: "zip bomb by ratio", file: "labs_bomb.zip", build: shell("dd if=/dev/zero of=labs_z.csv bs=1M count=24 status=none; zip -q labs_bomb.zip labs_z.csv"),
			quarantine: true, want: []string{"labs_bomb.zip!labs_z.csv", "declares ratio", "expansion limits"}},
		{name: "gzip bomb by ratio", file: "labs_bomb.csv.gz", build: shell("dd if=/dev/zero of=labs_bomb.csv bs=1M count=24 status=none; gzip labs_bomb.csv"),
			quarantine: true, want: []string{"labs_bomb.csv.gz!labs_bomb.csv", "expands more than 200:1", "expansion limits"}},
		{name: "zip bomb by declared size", file: "labs_huge.zip", build: func(t *testing.T, _ string) []byte {
			return zipDeclaring(t, "labs_huge.csv", []byte(goodCSV), 3<<30)
		}, quarantine: true, want: []string{"labs_huge.zip!labs_huge.csv", "declares 3221225472 bytes", "expansion limits"}},
		{name: "path traversal entry", file: "labs_escape.zip", build: zipped("labs_ok.csv", goodCSV, "../labs_evil.csv", goodCSV),
			quarantine: true, want: []string{"labs_escape.zip", `"../labs_evil.csv"`, "unsafe entry name"}},
		{name: "absolute path entry", file: "labs_abs.zip", build: zipped("/etc/labs_evil.csv", goodCSV),
			quarantine: true, want: []string{"labs_abs.zip", "/etc/labs_evil.csv"}},
		{name: "archives nested too deep", file: "labs_deep.zip", build: shell("printf '" + goodCSV + "' > labs_n.csv; zip -q in.zip labs_n.csv; zip -q mid.zip in.zip; zip -q labs_deep.zip mid.zip"),
			quarantine: true, want: []string{"labs_deep.zip!mid.zip!in.zip", "nested"}},
		{name: "duplicate entry names", file: "labs_dup.zip", build: func(t *testing.T, _ string) []byte {
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			for range 2 {
				w, _ := zw.Create("labs_d.csv")
				w.Write([]byte(goodCSV))
			}
			zw.Close()
			return buf.Bytes()
		}, quarantine: true, want: []string{"labs_dup.zip", `duplicate entry "labs_d.csv"`}},
		{name: "entry matching no feed", file: "labs_stray.zip", build: zipped("labs_s.csv", goodCSV, "readme.txt", "hello"),
			quarantine: true, want: []string{"labs_stray.zip!readme.txt", "matches no feed"}},
		{name: "archive with no entries", file: "labs_void.zip", build: zipped(), rows: 0},
		{name: "binary garbage", file: "labs_binary.csv", build: plain("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00\x01\x00\x00\x00\xff\xfe\x00\x10"),
			quarantine: true, want: []string{"labs_binary.csv", "header"}},
		{name: "empty file", file: "labs_empty.csv", build: plain(""),
			quarantine: true, want: []string{"labs_empty.csv", "no header line"}},
		// Encodings.
		{name: "byte undefined in windows-1252", file: "notes_bad.csv", build: plain("note_id,text\nN1,caf\xe9\nN2,bad \x81 byte\n"),
			quarantine: true, want: []string{"notes_bad.csv", "0x81", "offset"}},
		{name: "utf-16 cut in the middle of a character", file: "notes16_odd.csv", build: plain("n\x00o\x00t\x00e\x00_\x00i\x00d\x00,\x00t\x00e\x00x\x00t\x00\n\x00N\x001\x00,\x00x"),
			quarantine: true, want: []string{"notes16_odd.csv", "utf-16"}},
		{name: "invalid utf-8 in one value", file: "labs_utf8.csv", build: csvWith("L1,1,2026-01-01,1\nL\xff\xfe2,2,2026-01-01,2\nL3,3,2026-01-01,3\n"),
			rows: 2, wantRejects: [][]string{{"labs_utf8.csv", "row 2", "lab_id", "not valid UTF-8"}}},
		// Delimited rows.
		{name: "ragged row, too many fields", file: "labs_wide.csv", build: csvWith("L1,1,2026-01-01,1\nL2,2,2026-01-01,2,extra\n"),
			rows: 1, wantRejects: [][]string{{"labs_wide.csv", "row 2", "line 3", "5 fields, header has 4"}}},
		{name: "ragged row, too few fields", file: "labs_narrow.csv", build: csvWith("L1,1\nL2,2,2026-01-01,2\n"),
			rows: 1, wantRejects: [][]string{{"labs_narrow.csv", "row 1", "line 2", "2 fields, header has 4"}}},
		{name: "unterminated quote at the end", file: "labs_quote.csv", build: csvWith("L1,1,2026-01-01,1\n\"L2,2,2026-01-01,2\n"),
			rows: 1, wantRejects: [][]string{{"labs_quote.csv", "row 2", "line 3", `extraneous or missing " in quoted-field`}}},
		{name: "bare quote in a field", file: "labs_bare.csv", build: csvWith("L1,1,2026-01-01,1\nL\"2,2,2026-01-01,2\nL3,3,2026-01-01,3\n"),
			rows: 2, wantRejects: [][]string{{"labs_bare.csv", "row 2", "line 3", "quote"}}},
		{name: "a 1 GB line", file: "labs_long.csv", build: func(t *testing.T, dir string) []byte {
			f, err := os.Create(filepath.Join(dir, "labs_long.csv"))
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(goodCSV)
			if err := f.Truncate(1 << 30); err != nil { // sparse: a 1 GB line of NULs, written in no time
				t.Fatal(err)
			}
			f.Close()
			return nil
		}, quarantine: true, want: []string{"labs_long.csv", "record 2, starting on line 3", "record too long"}},
		{name: "wrong types", file: "labs_types.csv", build: csvWith("L1,abc,2026-01-01,1\nL2,2,yesterday,2\nL3,3,2026-01-01,3.5\nL4,4,2026-01-01,4\n"),
			rows: 1, wantRejects: [][]string{
				{"labs_types.csv", "row 1", "line 2", "column value", `"abc" is not a finite number`},
				{"labs_types.csv", "row 2", "line 3", "column taken", `"yesterday" does not match`},
				{"labs_types.csv", "row 3", "line 4", "column count", `"3.5" is not an integer`},
			}},
		{name: "missing required value", file: "labs_required.csv", build: csvWith("L1,1,2026-01-01,1\n,2,2026-01-01,2\n"),
			rows: 1, wantRejects: [][]string{{"labs_required.csv", "row 2", "line 3", "column lab_id: required value is empty"}}},
		{name: "required column missing from the header", file: "labs_nokey.csv", build: plain("value,taken,count\n1,2026-01-01,1\n"),
			quarantine: true, want: []string{"labs_nokey.csv", `header lacks required column(s) ["lab_id"]`}},
		{name: "column named twice in the header", file: "labs_twice.csv", build: plain("lab_id,value,value,count\nL1,1,2,3\n"),
			quarantine: true, want: []string{"labs_twice.csv", `header names column "value" twice (fields 2 and 3)`}},
		{name: "header only", file: "labs_headonly.csv", build: plain("lab_id,value,taken,count\n"), rows: 0},
		// Schema drift, fixed width, validation.
		{name: "unknown column, drift rescue", file: "labs_extra.csv", build: plain("lab_id,value,taken,count,Comment\nL1,1,2026-01-01,1,call back\n"), rows: 1},
		{name: "unknown column, drift reject", file: "strict_extra.csv", build: plain("id,amount,Comment\nS1,1.50,hi\n"),
			quarantine: true, want: []string{"strict_extra.csv", "header line 1", `"Comment"`, "drift is reject"}},
		{name: "value outside its range, too many decimals", file: "strict_range.csv", build: plain("id,amount\nS1,1.50\nS2,-3\nS3,1.234\n"),
			rows: 1, wantRejects: [][]string{
				{"strict_range.csv", "row 2", "line 3", "column amount", "below min 0"},
				{"strict_range.csv", "row 3", "line 4", "column amount", "scale 2"},
			}},
		{name: "fixed width, line too short for a required column", file: "roster_short.dat", build: plain("P00001Ann       19500304\nP00002\nP00003Bob       1961013\n"),
			rows: 1, wantRejects: [][]string{
				{"roster_short.dat", "row 2", "line 2", "column name"},
				{"roster_short.dat", "row 3", "line 3", "column birth"},
			}},
		{name: "archive nested in an archive", file: "labs_nested.zip", build: func(t *testing.T, _ string) []byte {
			return zipOf(t, map[string]string{"labs_inner.csv.gz": string(gz(t, []byte(goodCSV)))})
		}, rows: 1},
		// XML.
		{name: "malformed xml", file: "visits_broken.xml", build: xmlDoc("<Visits>\n<Visit id=\"V1\"><Age>3</Age></Visit>\n<Visit id=\"V2\"><Age>4</Visit>\n</Visits>\n"),
			quarantine: true, want: []string{"visits_broken.xml", "line 4", "element <Age> closed by </Visit>", "malformed xml"}},
		{name: "xml external entity", file: "visits_xxe.xml", build: xmlDoc("<!DOCTYPE Visits [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n<Visits><Visit id=\"V1\"><Age>&xxe;</Age></Visit></Visits>\n"),
			quarantine: true, want: []string{"visits_xxe.xml", "line 3", "malformed xml"}},
		{name: "billion laughs", file: "visits_laughs.xml", build: xmlDoc("<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>\n<Visits><Visit id=\"V1\"><Age>&lol3;</Age></Visit></Visits>\n"),
			quarantine: true, want: []string{"visits_laughs.xml", "line 3", "malformed xml"}},
		{name: "xml of another shape", file: "visits_root.xml", build: xmlDoc("<Patients><Visit id=\"V1\"/></Patients>\n"),
			quarantine: true, want: []string{"visits_root.xml", "line 2", "root element <Patients>"}},
		{name: "xml record with a wrong type and a repeated field", file: "visits_rows.xml", build: xmlDoc("<Visits>\n<Visit id=\"V1\"><Age>old</Age></Visit>\n<Visit id=\"V2\"><Age>1</Age><Age>2</Age></Visit>\n<Visit><Age>5</Age></Visit>\n<Visit id=\"V4\"><Age>7</Age></Visit>\n</Visits>\n"),
			rows: 1, wantRejects: [][]string{
				{"visits_rows.xml", "row 1", "line 3", "column age", `"old" is not an integer`},
				{"visits_rows.xml", "row 2", "line 4", "age"},
				{"visits_rows.xml", "row 3", "line 5", "visit_id"},
			}},
		{name: "one malformed file among good ones in a zip", file: "visits_mixed.zip", build: zipped(
			"visits_1.xml", "<Visits><Visit id=\"V1\"><Age>1</Age></Visit></Visits>",
			"visits_2.xml", "<Visits><Visit id=\"V2\"><Age>2</Age></Visit>",
		), quarantine: true, want: []string{"visits_mixed.zip!visits_2.xml", "malformed xml"}},
	}

	f := newAgentFixture(t, "labs.yaml", malformedFeeds["labs.yaml"])
	for name, def := range malformedFeeds {
		writeFile(t, filepath.Join(f.feeds, name), []byte(def))
	}
	secrets := filepath.Join(f.root, "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "lab_zip"), []byte("right-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 30 {
		t.Fatalf("the suite has %d cases, want at least 30", len(cases))
	}
	shas := make([]string, len(cases))
	names := map[string]bool{}
	for i, c := range cases {
		if names[c.file] {
			t.Fatalf("case %q: file %s used twice", c.name, c.file)
		}
		names[c.file] = true
		dir := filepath.Join(f.work, "case", c.file)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		data := c.build(t, dir)
		src := filepath.Join(dir, c.file)
		if data != nil {
			writeFile(t, src, data)
		}
		sha, _, err := unpack.HashFile(src)
		if err != nil {
			t.Fatal(err)
		}
		shas[i] = sha
		// Made aside, then moved in whole, as a facility's export tool would.
		if err := os.Rename(src, filepath.Join(f.exports, c.file)); err != nil {
			t.Fatal(err)
		}
	}

	cfg := f.config()
	cfg.SecretsDir = secrets
	cfg.Limits.MaxRecordBytes = 1 << 20
	ag := startAgent(t, cfg)
	if got := len(ag.feedsFor(context.Background()).defs); got != len(malformedFeeds) {
		t.Fatalf("agent runs %d feeds, the suite defines %d", got, len(malformedFeeds))
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i, c := range cases {
		for {
			st := ag.status(t, shas[i])
			if st == state.StatusDone || st == state.StatusQuarantined {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("case %q (%s): status %q after 3 minutes", c.name, c.file, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, _, err := ag.File(shas[i])
			if err != nil {
				t.Fatal(err)
			}
			if c.quarantine {
				if rec.Status != state.StatusQuarantined {
					t.Fatalf("%s: status %s (%d rows), want quarantined", c.file, rec.Status, rec.Rows)
				}
				reason := quarantineReason(t, f.state, shas[i], c.file)
				for _, w := range c.want {
					if !strings.Contains(reason, w) {
						t.Errorf("quarantine reason %q does not say %q", reason, w)
					}
				}
				if ids := f.hub.batchesOf(c.file); len(ids) != 0 {
					t.Errorf("%s: quarantined, yet %d batches were sent", c.file, len(ids))
				}
				return
			}
			if rec.Status != state.StatusDone || rec.Rows != c.rows {
				t.Fatalf("%s: status %s with %d rows, want done with %d", c.file, rec.Status, rec.Rows, c.rows)
			}
			got := rejectsOf(t, f.state, shas[i])
			if len(got) != len(c.wantRejects) {
				t.Fatalf("%s: %d rejects, want %d: %q", c.file, len(got), len(c.wantRejects), got)
			}
			for j, want := range c.wantRejects {
				for _, w := range want {
					if !strings.Contains(got[j], w) {
						t.Errorf("reject %d %q does not say %q", j+1, got[j], w)
					}
				}
			}
		})
	}
}

// quarantineReason reads the reason file written beside a quarantined copy.
func quarantineReason(t *testing.T, stateDir, sha, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "quarantine", sha[:16]+"_"+file+".reason.txt"))
	if err != nil {
		t.Fatalf("quarantine reason of %s: %v", file, err)
	}
	return string(b)
}

// rejectsOf returns a file's rejects, each as "source row N line N column C: reason".
func rejectsOf(t *testing.T, stateDir, sha string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(stateDir, "rejects", sha+".jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l RejectLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Source+" row "+itoa(l.Row)+" line "+itoa(l.Line)+" column "+l.Column+": "+l.Reason)
	}
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// zipDeclaring is a zip whose one stored entry claims declared uncompressed bytes.
func zipDeclaring(t *testing.T, name string, data []byte, declared uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(data),
		CompressedSize64: uint64(len(data)), UncompressedSize64: declared})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
