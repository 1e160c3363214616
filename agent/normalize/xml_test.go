package normalize

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

// xmlFeed is a small XML definition used by the table tests.
const xmlFeed = `name: visits
version: 1
table: visits
match: {glob: "*visits*"}
format: {type: xml, record: "Visits/Visit"}
drift: ignore
columns:
  - {name: visit_id, source: "@id", type: string, required: true}
  - {name: age, source: "Age", type: int}
  - {name: note, source: "Note", type: string}
`

func parseDef(t testing.TB, yaml string) *feed.Definition {
	t.Helper()
	d, err := feed.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestXMLCases runs every testdata/xml/<case>/{feed.yaml,input.xml} and compares with
// expected.out, like TestCases (batches of 2 rows).
func TestXMLCases(t *testing.T) {
	dirs, err := filepath.Glob("testdata/xml/*/input.xml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no xml cases: %v", err)
	}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			def := loadDef(t, filepath.Join(dir, "feed.yaml"))
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, st, err := runSource(t, def, f, 2, "export.zip!"+def.Name+".xml")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if st.Rows != st.Accepted+st.Rejected {
				t.Errorf("rows %d != accepted %d + rejected %d", st.Rows, st.Accepted, st.Rejected)
			}
			compareGolden(t, filepath.Join(dir, "expected.out"), got)
		})
	}
}

// TestXMLGeneratorSample reads the generator's own archive: every entry is one record
// file and must give exactly one accepted row.
func TestXMLGeneratorSample(t *testing.T) {
	def := loadDef(t, "testdata/xml/gen/feed.yaml")
	zr, err := zip.OpenReader("testdata/xml/gen/f000001_lab_results_000001.xml.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		st, err := n.Run(context.Background(), rc, "sample.zip!"+zf.Name, func(b arrow.RecordBatch) error {
			if b.NumRows() != 1 || b.Column(int(b.NumCols())-1).(*array.Int64).Value(0) != 1 {
				t.Errorf("%s: batch of %d rows", zf.Name, b.NumRows())
			}
			for c := range int(b.NumCols()) {
				if f := b.Schema().Field(c); f.Name == "lab_id" {
					ids[b.Column(c).(*array.String).Value(0)] = true
				} else if f.Name == "collected_at" && b.Column(c).IsNull(0) {
					t.Errorf("%s: collected_at is NULL", zf.Name)
				}
			}
			return nil
		}, func(r Reject) error {
			t.Errorf("reject: %+v", r)
			return nil
		})
		rc.Close()
		if err != nil || st.Rows != 1 || st.Accepted != 1 {
			t.Errorf("%s: Run = %+v, %v", zf.Name, st, err)
		}
	}
	if len(zr.File) != 35 || len(ids) != 35 {
		t.Errorf("%d entries, %d distinct lab ids; want 35 each", len(zr.File), len(ids))
	}
}

// TestXMLManyRecords streams one file of 5,000 records, some bad, in batches of 1,000.
func TestXMLManyRecords(t *testing.T) {
	def := parseDef(t, xmlFeed)
	var buf bytes.Buffer
	buf.WriteString("<?xml version=\"1.0\"?>\n<Visits>\n")
	const total = 5000
	for i := 1; i <= total; i++ {
		age := fmt.Sprint(i % 90)
		if i%1000 == 0 {
			age = "bad"
		}
		fmt.Fprintf(&buf, "  <Visit id=\"V%d\">\n    <Age>%s</Age>\n    <Note>n&amp;%d</Note>\n  </Visit>\n", i, age, i)
	}
	buf.WriteString("</Visits>\n")
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{BatchRows: 1000, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	next := int64(1)
	var rejects []Reject
	st, err := n.Run(context.Background(), &buf, "big.xml", func(b arrow.RecordBatch) error {
		rows := b.Column(int(b.NumCols()) - 1).(*array.Int64)
		ids := b.Column(0).(*array.String)
		for i := range rows.Len() {
			for next%1000 == 0 {
				next++ // rejected
			}
			if rows.Value(i) != next || ids.Value(i) != fmt.Sprintf("V%d", next) {
				t.Fatalf("row %d is _row %d id %s", next, rows.Value(i), ids.Value(i))
			}
			next++
		}
		return nil
	}, func(r Reject) error {
		rejects = append(rejects, r)
		return nil
	})
	if err != nil || st.Rows != total || st.Accepted != total-5 || st.Rejected != 5 || st.Batches != 5 {
		t.Fatalf("Run = %+v, %v", st, err)
	}
	r := rejects[0]
	// Record i starts on line 3 + 4*(i-1).
	want := Reject{Source: "big.xml", Row: 1000, Line: 3 + 4*999, Column: "age",
		Raw:    "<Visit id=\"V1000\">\n    <Age>bad</Age>\n    <Note>n&amp;1000</Note>\n  </Visit>",
		Reason: `column age: "bad" is not an integer`}
	if r != want {
		t.Errorf("reject\n got %+v\nwant %+v", r, want)
	}
}

func TestXMLFileErrors(t *testing.T) {
	def := parseDef(t, xmlFeed)
	for _, tt := range []struct {
		name, input string
		sentinel    error
		where       string
		rows        int64 // records seen before the error
	}{
		{"empty", "", ErrMalformedXML, "no root element", 0},
		{"only a declaration", "<?xml version=\"1.0\"?>\n", ErrMalformedXML, "no root element", 0},
		{"truncated", "<Visits><Visit id=\"1\"/><Visit id=\"2\"><Age>3", ErrMalformedXML, "unexpected EOF", 1},
		{"mismatched tags", "<Visits>\n<Visit id=\"1\"></Visit>\n<Visit id=\"2\"></Visits>", ErrMalformedXML, "line 3", 1},
		{"bad attribute", "<Visits><Visit id=1/></Visits>", ErrMalformedXML, "unquoted or missing attribute value", 0},
		{"second root", "<Visits><Visit id=\"1\"/></Visits><Visits/>", ErrMalformedXML, "second root", 1},
		{"text after root", "<Visits/>trailing", ErrMalformedXML, "text outside the root", 0},
		{"wrong root", "<Patients><Visit id=\"1\"/></Patients>", ErrXMLRoot, "<Patients>", 0},
		{"undefined entity", "<Visits><Visit id=\"1\"><Note>&nbsp;</Note></Visit></Visits>", ErrMalformedXML, "entity", 0},
		{"invalid utf-8", "<Visits><Visit id=\"1\"><Note>\xff</Note></Visit></Visits>", ErrMalformedXML, "UTF-8", 0},
		{"declared latin-1", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Visits/>", ErrMalformedXML, "ISO-8859-1", 0},
		{"too deep", "<Visits>" + strings.Repeat("<a>", MaxXMLDepth) + strings.Repeat("</a>", MaxXMLDepth) + "</Visits>", ErrMalformedXML, "deeper than", 0},
		{"huge comment", "<Visits><!--" + strings.Repeat("x", MaxXMLMarkupBytes) + "--></Visits>", ErrMalformedXML, "markup", 0},
		{"huge attribute", "<Visits><Visit id=\"" + strings.Repeat("x", MaxXMLMarkupBytes) + "\"/></Visits>", ErrMalformedXML, "markup", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, st, err := runSource(t, def, strings.NewReader(tt.input), 10, "in.zip!visits.xml")
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("Run error %v, want %v\n%s", err, tt.sentinel, out)
			}
			if msg := err.Error(); !strings.Contains(msg, "in.zip!visits.xml line ") || !strings.Contains(msg, tt.where) {
				t.Errorf("error %q does not name the source, line and %q", msg, tt.where)
			}
			if st.Rows != tt.rows {
				t.Errorf("%d records before the error, want %d", st.Rows, tt.rows)
			}
		})
	}
}

// TestXMLEntitiesAreNotExpanded: a DOCTYPE is skipped, so neither an external entity
// (XXE) nor nested custom entities (billion laughs) are ever resolved; referring to one
// is an undefined entity, which makes the file malformed.
func TestXMLEntitiesAreNotExpanded(t *testing.T) {
	def := parseDef(t, xmlFeed)
	laughs := `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">` + "\n"
	prev := "lol"
	for i := 1; i <= 9; i++ {
		laughs += fmt.Sprintf(" <!ENTITY lol%d \"%s\">\n", i, strings.Repeat("&"+prev+";", 10))
		prev = fmt.Sprintf("lol%d", i)
	}
	laughs += "]>\n<Visits><Visit id=\"1\"><Note>&lol9;</Note></Visit></Visits>\n"
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("TOP-SECRET-CONTENT"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, input string }{
		{"xxe file", `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://` + secret + `">]><Visits><Visit id="1"><Note>&e;</Note></Visit></Visits>`},
		{"xxe passwd", `<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Visits><Visit id="1"><Note>&e;</Note></Visit></Visits>`},
		{"xxe in attribute", `<!DOCTYPE x [<!ENTITY e SYSTEM "file://` + secret + `">]><Visits><Visit id="&e;"/></Visits>`},
		{"internal entity", `<!DOCTYPE x [<!ENTITY e "TOP-SECRET-CONTENT">]><Visits><Visit id="1"><Note>&e;</Note></Visit></Visits>`},
		{"parameter entity", `<!DOCTYPE x [<!ENTITY % p SYSTEM "file://` + secret + `"> %p;]><Visits><Visit id="1"><Note>x</Note></Visit></Visits>`},
		{"billion laughs", laughs},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			out, _, err := runSource(t, def, strings.NewReader(tt.input), 10, "x.xml")
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if strings.Contains(out, "TOP-SECRET") || strings.Contains(out, "root:") || err != nil && (strings.Contains(err.Error(), "TOP-SECRET") || strings.Contains(err.Error(), "root:")) {
				t.Fatalf("entity content leaked:\n%s\n%v", out, err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
				t.Errorf("allocated %d bytes", grew)
			}
			if tt.name == "parameter entity" {
				// Nothing refers to an entity in the document: the DOCTYPE is inert.
				if err != nil || !strings.Contains(out, `note="x"`) {
					t.Fatalf("Run = %v\n%s", err, out)
				}
				return
			}
			if !errors.Is(err, ErrMalformedXML) || !strings.Contains(err.Error(), "x.xml") {
				t.Fatalf("Run error %v, want ErrMalformedXML naming the file\n%s", err, out)
			}
		})
	}
}

// hugeText streams <Visits><Visit id="1"><Note>xxxx…</Note><Age>7</Age></Visit>
// <Visit id="2"><Age>8</Age></Visit></Visits> with a text node of size bytes, holding
// none of it.
type hugeText struct {
	head, tail string
	size, pos  int64
	fill       byte
}

func (h *hugeText) Read(p []byte) (int, error) {
	total := int64(len(h.head)) + h.size + int64(len(h.tail))
	if h.pos >= total {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && h.pos < total {
		switch {
		case h.pos < int64(len(h.head)):
			c := copy(p[n:], h.head[h.pos:])
			n += c
			h.pos += int64(c)
		case h.pos < int64(len(h.head))+h.size:
			c := min(int64(len(p)-n), int64(len(h.head))+h.size-h.pos)
			for i := range c {
				p[n+int(i)] = h.fill
			}
			n += int(c)
			h.pos += c
		default:
			c := copy(p[n:], h.tail[h.pos-int64(len(h.head))-h.size:])
			n += c
			h.pos += int64(c)
		}
	}
	return n, nil
}

func TestXMLHugeTextNode(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	def := parseDef(t, xmlFeed)
	for _, tt := range []struct {
		name string
		in   *hugeText
		want string
	}{
		{"in a column", &hugeText{
			head: "<Visits>\n<Visit id=\"1\"><Note>", fill: 'x',
			tail: "</Note>\n<Age>7</Age></Visit>\n<Visit id=\"2\"><Age>8</Age></Visit></Visits>",
		}, "reject source=x.xml row=1 line=2 column=\"note\" reason=\"column note: text longer than 1048576 bytes\""},
		{"multi-line, with references", &hugeText{
			head: "<Visits>\n<Visit id=\"1\"><Note>&amp;", fill: '\n',
			tail: "&#233;</Note>\n<Age>7</Age></Visit>\n<Visit id=\"2\"><Age>8</Age></Visit></Visits>",
		}, "reject source=x.xml row=1 line=2 column=\"note\""},
		{"outside any column", &hugeText{
			head: "<Visits>\n<Visit id=\"1\"><Other>", fill: 'y',
			tail: "</Other>\n<Age>7</Age></Visit>\n<Visit id=\"2\"><Age>8</Age></Visit></Visits>",
		}, "visit_id=\"1\" age=7 note=NULL _source_file=\"x.xml\" _row=1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.size = size
			if tt.name != "in a column" {
				tt.in.size = 16 << 20
			}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			out, st, err := runSource(t, def, tt.in, 10, "x.xml")
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if err != nil || st.Rows != 2 || !strings.Contains(out, tt.want) || !strings.Contains(out, "visit_id=\"2\" age=8 note=NULL _source_file=\"x.xml\" _row=2") {
				t.Fatalf("Run = %+v, %v\n%.2000s", st, err, out)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
				t.Errorf("allocated %d MiB for a %d MiB text node", grew>>20, size>>20)
			}
			if len(out) > 3*MaxXMLRawBytes {
				t.Errorf("output of %d bytes: raw not capped", len(out))
			}
		})
	}
}

// TestXMLRawCapped: a rejected record larger than MaxXMLRawBytes carries only its first
// MaxXMLRawBytes bytes, cut on a character boundary.
func TestXMLRawCapped(t *testing.T) {
	def := parseDef(t, xmlFeed)
	input := "<Visits><Visit id=\"1\"><Note>" + strings.Repeat("é", MaxXMLRawBytes) + "</Note><Age>x</Age></Visit></Visits>"
	var got Reject
	n, err := New(def, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := n.Run(context.Background(), strings.NewReader(input), "x.xml", func(arrow.RecordBatch) error { return nil }, func(r Reject) error {
		got = r
		return nil
	})
	if err != nil || st.Rejected != 1 {
		t.Fatalf("Run = %+v, %v", st, err)
	}
	if len(got.Raw) > MaxXMLRawBytes || len(got.Raw) < MaxXMLRawBytes-4 || !utf8.ValidString(got.Raw) || !strings.HasPrefix(got.Raw, "<Visit id=\"1\"><Note>éé") {
		t.Errorf("raw of %d bytes, valid %v, starts %.40q", len(got.Raw), utf8.ValidString(got.Raw), got.Raw)
	}
}

func TestXMLByteOrderMark(t *testing.T) {
	def := parseDef(t, xmlFeed)
	out, st, err := runSource(t, def, strings.NewReader("\uFEFF<?xml version=\"1.0\" encoding=\"utf-8\"?><Visits><Visit id=\"1\"/></Visits>"), 10, "x.xml")
	if err != nil || st.Accepted != 1 {
		t.Fatalf("Run = %+v, %v\n%s", st, err, out)
	}
}

func TestXMLRunStops(t *testing.T) {
	def := parseDef(t, xmlFeed)
	input := "<Visits><Visit id=\"1\"/><Visit id=\"2\"><Age>x</Age></Visit><Visit id=\"3\"/></Visits>"
	boom := errors.New("boom")
	n, err := New(def, Options{BatchRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	ok := func(arrow.RecordBatch) error { return nil }
	okReject := func(Reject) error { return nil }
	ctx := context.Background()
	if _, err := n.Run(ctx, strings.NewReader(input), "s", func(arrow.RecordBatch) error { return boom }, okReject); !errors.Is(err, boom) {
		t.Errorf("emit error: Run = %v", err)
	}
	if _, err := n.Run(ctx, strings.NewReader(input), "s", ok, func(Reject) error { return boom }); !errors.Is(err, boom) || !strings.Contains(err.Error(), "row 2") {
		t.Errorf("reject error: Run = %v", err)
	}
	r := io.MultiReader(strings.NewReader(input[:30]), failingReader{boom})
	if _, err := n.Run(ctx, r, "s", ok, okReject); !errors.Is(err, boom) || errors.Is(err, ErrMalformedXML) || !strings.Contains(err.Error(), "reading s") {
		t.Errorf("read error: Run = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.Run(cctx, strings.NewReader(input), "s", ok, okReject); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: Run = %v", err)
	}
}

// FuzzNormalizeXML checks the CSV contract on arbitrary XML: every record becomes exactly
// one row or one reject, numbered 1..Rows, no Arrow memory leaks, and the only errors are
// the documented file-level ones.
func FuzzNormalizeXML(f *testing.F) {
	for _, s := range []string{
		"<Visits><Visit id=\"1\"><Age>2</Age><Note>n</Note></Visit><Visit><Age>x</Age></Visit></Visits>",
		"\uFEFF<?xml version=\"1.0\"?><!DOCTYPE v [<!ENTITY e \"x\">]><Visits><Visit id='a'><Note>&e;</Note></Visit></Visits>",
		"<a:Visits xmlns:a=\"u\"><a:Visit a:id=\"1\"><Note><![CDATA[<x>]]></Note><Note/></a:Visit></a:Visits>",
		"<Visits><Visit id=\"1\"><Age>1</Age><Age>2</Age></Visit><Visit id=\"2\"><Note><b/></Note></Visit>",
		"",
	} {
		f.Add([]byte(s))
	}
	def := parseDef(f, xmlFeed)
	// The drift policies that read the values of paths no column takes.
	rescue := parseDef(f, strings.Replace(xmlFeed, "drift: ignore", "drift: rescue", 1))
	add := parseDef(f, strings.Replace(xmlFeed, "drift: ignore", "drift: add", 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkContract(t, def, data, "fuzz.xml", true, ErrMalformedXML, ErrXMLRoot)
		checkContract(t, rescue, data, "fuzz.xml", true, ErrMalformedXML, ErrXMLRoot)
		checkContract(t, add, data, "fuzz.xml", true, ErrMalformedXML, ErrXMLRoot, ErrDrift)
		for _, d := range []*feed.Definition{def, rescue, add} {
			runBothReaders(t, d, data)
		}
	})
}

// TestXMLEncoding: the feed's encoding (or a byte order mark) decides how bytes are read;
// an XML declaration must agree with it or the file is malformed.
func TestXMLEncoding(t *testing.T) {
	utf16le := func(s string) string {
		b := []byte{0xFF, 0xFE}
		for _, r := range s {
			b = append(b, byte(r), byte(r>>8))
		}
		return string(b)
	}
	for _, tt := range []struct {
		name, encoding, input string
		note                  string // expected note value; "" means a file error
		errIs                 error
	}{
		{"windows-1252 declared", "windows-1252", "<?xml version=\"1.0\" encoding=\"windows-1252\"?><Visits><Visit id=\"1\"><Note>caf\xe9 \x80</Note></Visit></Visits>", "café €", nil},
		{"windows-1252 labelled iso-8859-1", "windows-1252", "<?xml version='1.0' encoding='ISO-8859-1'?><Visits><Visit id=\"1\"><Note>\xe9</Note></Visit></Visits>", "é", nil},
		{"latin-1 without declaration", "latin-1", "<Visits><Visit id=\"1\"><Note>\xe9</Note></Visit></Visits>", "é", nil},
		{"ascii declaration", "", "<?xml version=\"1.0\" encoding=\"US-ASCII\"?><Visits><Visit id=\"1\"><Note>a</Note></Visit></Visits>", "a", nil},
		{"utf-16 bom wins over utf-8 feed", "", utf16le("<?xml version=\"1.0\" encoding=\"UTF-16\"?><Visits><Visit id=\"1\"><Note>é</Note></Visit></Visits>"), "é", nil},
		{"utf-8 declared, feed windows-1252", "windows-1252", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Visits/>", "", ErrMalformedXML},
		{"utf-16 declared without bom", "", "<?xml version=\"1.0\" encoding=\"UTF-16\"?><Visits/>", "", ErrMalformedXML},
		{"undecodable byte", "windows-1252", "<Visits><Visit id=\"1\"><Note>\x81</Note></Visit></Visits>", "", ErrDecode},
	} {
		t.Run(tt.name, func(t *testing.T) {
			def := parseDef(t, strings.Replace(xmlFeed, "format: {type: xml,", "format: {encoding: \""+tt.encoding+"\", type: xml,", 1))
			out, st, err := runSource(t, def, strings.NewReader(tt.input), 10, "x.xml")
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) || !errors.Is(err, ErrMalformedXML) || !strings.Contains(err.Error(), "x.xml line ") {
					t.Fatalf("Run = %v, want %v and ErrMalformedXML\n%s", err, tt.errIs, out)
				}
				return
			}
			if err != nil || st.Accepted != 1 || !strings.Contains(out, fmt.Sprintf("note=%q", tt.note)) {
				t.Fatalf("Run = %+v, %v\n%s", st, err, out)
			}
		})
	}
}

// BenchmarkNormalizeXML measures one file of 50,000 records shaped like the generator's
// (attribute plus leaf elements): go test -bench NormalizeXML -benchmem ./agent/normalize
func BenchmarkNormalizeXML(b *testing.B) {
	def := parseDef(b, xmlFeed)
	var buf bytes.Buffer
	buf.WriteString("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Visits>\n")
	const rows = 50000
	for i := range rows {
		fmt.Fprintf(&buf, "  <Visit id=\"V%08d\">\n    <Age>%d</Age>\n    <Note>note &amp; text %d</Note>\n  </Visit>\n", i, i%90, i)
	}
	buf.WriteString("</Visits>\n")
	n, err := New(def, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		st, err := n.Run(context.Background(), bytes.NewReader(buf.Bytes()), "bench.xml",
			func(arrow.RecordBatch) error { return nil }, func(r Reject) error { return fmt.Errorf("reject: %+v", r) })
		if err != nil || st.Accepted != rows {
			b.Fatalf("Run = %+v, %v", st, err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// TestXMLHugeCDATA: a CDATA section longer than MaxXMLFieldBytes is skipped up to its end
// like text, wherever its "]]>" falls relative to the cut, and the records after it are
// read in step.
func TestXMLHugeCDATA(t *testing.T) {
	def := parseDef(t, xmlFeed)
	const open = "<![CDATA["
	for _, extra := range []int{-3, -2, -1, 0, 1, 2, 3, 50} {
		for _, where := range []string{"Note", "Other"} {
			t.Run(fmt.Sprintf("%s%+d", where, extra), func(t *testing.T) {
				// The section's bytes, from '<' to the first ']' of "]]>", number
				// MaxXMLFieldBytes+extra.
				body := "é" + strings.Repeat("x", MaxXMLFieldBytes+extra-len(open)-2)
				input := "<Visits>\n<Visit id=\"1\"><" + where + ">" + open + body + "]]></" + where + "><Age>7</Age></Visit>\n" +
					"<Visit id=\"2\"><Note><![CDATA[short]]></Note></Visit></Visits>"
				out, st, err := runSource(t, def, strings.NewReader(input), 10, "x.xml")
				if err != nil || st.Rows != 2 || !strings.Contains(out, `visit_id="2" age=NULL note="short" _source_file="x.xml" _row=2`) {
					t.Fatalf("Run = %+v, %v\n%.3000s", st, err, out)
				}
				switch {
				case where == "Other":
					if st.Accepted != 2 {
						t.Errorf("CDATA outside any column rejected the record:\n%.2000s", out)
					}
				case extra <= 0:
					if st.Accepted != 2 || !strings.Contains(out, `note="é`+body[2:]+`"`) {
						t.Errorf("CDATA within the limit not taken:\n%.300s", out)
					}
				default:
					if st.Rejected != 1 || !strings.Contains(out, "text longer than") {
						t.Errorf("long CDATA not rejected:\n%.2000s", out)
					}
				}
			})
		}
	}
}

// TestXMLDrift runs one XML entry under each drift policy: leaves and attributes no
// column takes are rescued as JSON, added as columns, refused, or ignored; ignore lists
// paths that never drift.
func TestXMLDrift(t *testing.T) {
	const input = `<Visits>
<Visit id="V1" ward="N"><Age>40</Age><Extra><Bed>12</Bed></Extra><Phone>1</Phone><Phone>2</Phone><Skip>s</Skip></Visit>
<Visit id="V2"><Age>41</Age><Extra><Bed> </Bed></Extra><Late>new</Late></Visit>
<Visit id="V3"><Age>42</Age></Visit>
</Visits>`
	for _, tt := range []struct {
		policy string
		want   []string
		err    string
	}{
		{"rescue", []string{
			`visit_id="V1" age=40 note=NULL _rescued="{\"@ward\":\"N\",\"Extra/Bed\":\"12\",\"Phone\":\"1\",\"Phone[2]\":\"2\"}" _source_file="x.xml" _row=1`,
			`visit_id="V2" age=41 note=NULL _rescued="{\"Late\":\"new\"}" _source_file="x.xml" _row=2`,
			`visit_id="V3" age=42 note=NULL _rescued=NULL _source_file="x.xml" _row=3`,
		}, ""},
		{"add", []string{
			`reject source=x.xml row=1 line=2 column="" reason="field Phone appears more than once in one record; drift add takes one value"`,
			`visit_id="V2" age=41 note=NULL ward=NULL extra_bed=NULL phone=NULL late="new" _source_file="x.xml" _row=2`,
			`visit_id="V3" age=42 note=NULL ward=NULL extra_bed=NULL phone=NULL late=NULL _source_file="x.xml" _row=3`,
		}, ""},
		{"reject", nil, `x.xml record 1 at line 2: field(s) ["@ward" "Extra/Bed" "Phone" "Phone"] that no column takes and ignore does not list, and drift is reject`},
		{"ignore", []string{`visit_id="V1" age=40 note=NULL _source_file="x.xml" _row=1`, `unmapped=["@ward" "Extra/Bed" "Phone" "Late"]`}, ""},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			def := parseDef(t, strings.Replace(xmlFeed, "drift: ignore", "drift: "+tt.policy+"\nignore: [Skip]", 1))
			out, _, err := runSource(t, def, strings.NewReader(input), 10, "x.xml")
			if tt.err != "" {
				if !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Run error %v, want ErrDrift: %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %s:\n%s", w, out)
				}
			}
			for _, line := range strings.Split(out, "\n") {
				if !strings.HasPrefix(line, "reject") && strings.Contains(line, "Skip") {
					t.Errorf("ignored path drifted: %s", line)
				}
			}
		})
	}
}

// TestSharedBatcherMatchesSeparateRuns runs an archive's worth of XML entries through one
// Batcher, as the agent does, and checks every row and reject against running each entry
// on its own: the buffers the runs share carry nothing from one entry to the next.
func TestSharedBatcherMatchesSeparateRuns(t *testing.T) {
	entries := []string{
		`<Visits><Visit id="V1"><Age>40</Age><Note>first &amp; only</Note></Visit></Visits>`,
		`<Visits><Visit id="V2"><Age>old</Age><Note>rejected</Note></Visit></Visits>`,
		`<Visits><Visit id="V3"><Note>no age</Note></Visit></Visits>`,
		`<Visits><Visit><Age>5</Age></Visit></Visits>`,
		`<Visits><Visit id="V5"><Age>1</Age><Age>2</Age></Visit><Visit id="V6"/></Visits>`,
		`<Visits><Visit id="V7"><Age>7</Age><Extra>x</Extra></Visit></Visits>`,
	}
	for _, drift := range []string{"ignore", "rescue"} {
		t.Run(drift, func(t *testing.T) {
			def := parseDef(t, strings.Replace(xmlFeed, "drift: ignore", "drift: "+drift, 1))
			var separate strings.Builder
			for i, e := range entries {
				out, _, err := runSource(t, def, strings.NewReader(e), 100, fmt.Sprintf("a.zip!%d.xml", i))
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range strings.Split(out, "\n") {
					if strings.HasPrefix(l, "  ") || strings.HasPrefix(l, "reject ") {
						separate.WriteString(l + "\n")
					}
				}
			}
			n, err := New(def, Options{BatchRows: 100})
			if err != nil {
				t.Fatal(err)
			}
			var shared, rejects strings.Builder
			b := n.NewBatcher(func(rec arrow.RecordBatch) error {
				for r := range int(rec.NumRows()) {
					shared.WriteString(" ")
					for c := range int(rec.NumCols()) {
						fmt.Fprintf(&shared, " %s=%s", rec.ColumnName(c), cell(rec.Column(c), r))
					}
					shared.WriteString("\n")
				}
				return nil
			})
			defer b.Release()
			for i, e := range entries {
				src := fmt.Sprintf("a.zip!%d.xml", i)
				if _, err := n.RunInto(context.Background(), strings.NewReader(e), src, b, func(r Reject) error {
					fmt.Fprintf(&rejects, "reject source=%s row=%d line=%d column=%q reason=%q raw=%q\n", r.Source, r.Row, r.Line, r.Column, r.Reason, r.Raw)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			// Separate runs interleave rejects with rows; compare them as sets of lines.
			want := strings.Split(strings.TrimRight(separate.String(), "\n"), "\n")
			got := strings.Split(strings.TrimRight(rejects.String()+shared.String(), "\n"), "\n")
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("shared batcher:\n%s\nseparate runs:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
