package normalize

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

// scanAgrees runs the scanner over doc and, when it takes doc, checks that encoding/xml
// (Strict, as runXML sets it up) reads doc without error into the same tokens, each
// starting at the same offset and line, and ends at the same line. It reports whether
// the scanner took doc.
func scanAgrees(t testing.TB, doc []byte) bool {
	t.Helper()
	var s xmlScan
	if !s.scan(doc) {
		return false
	}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	dec.Strict = true
	dec.CharsetReader = func(_ string, input io.Reader) (io.Reader, error) { return input, nil }
	want := &xmlDecoderTokens{dec: dec, in: &xmlInput{}}
	var got, exp xmlToken
	for i := 0; ; i++ {
		goff, gline := s.pos()
		woff, wline := want.pos()
		if goff != woff || gline != wline {
			t.Fatalf("%q: token %d starts at offset %d line %d, encoding/xml says %d line %d", doc, i, goff, gline, woff, wline)
		}
		gerr, werr := s.next(&got), want.next(&exp)
		if gerr == io.EOF && werr == io.EOF {
			return true
		}
		if werr != nil {
			t.Fatalf("%q: scanner took it, encoding/xml fails at token %d: %v", doc, i, werr)
		}
		if gerr != nil {
			t.Fatalf("%q: scanner ends at token %d (%v), encoding/xml gives %+v", doc, i, gerr, exp)
		}
		if g, w := fmtToken(got), fmtToken(exp); g != w {
			t.Fatalf("%q: token %d is %s, encoding/xml gives %s", doc, i, g, w)
		}
	}
}

// fmtToken renders what runXML reads of a token. Element names are compared by local
// name (the scanner takes no prefixes; encoding/xml puts a default namespace's URI in
// Space), attributes by prefix and local name.
func fmtToken(t xmlToken) string {
	switch t.kind {
	case tokStart:
		var b strings.Builder
		fmt.Fprintf(&b, "start %q", t.name.Local)
		for _, a := range t.attr {
			fmt.Fprintf(&b, " %q:%q=%q", a.Name.Space, a.Name.Local, a.Value)
		}
		return b.String()
	case tokEnd:
		return fmt.Sprintf("end %q", t.name.Local)
	case tokText:
		return fmt.Sprintf("text %q", t.data)
	case tokProcInst:
		return fmt.Sprintf("procinst %q %q", t.target, t.data)
	case tokComment:
		return fmt.Sprintf("comment %q", t.data)
	}
	return fmt.Sprintf("kind %d %q", t.kind, t.data)
}

// scanCases are documents the scanner must take (true) or leave to encoding/xml.
var scanCases = []struct {
	doc  string
	take bool
}{
	{"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LabResult facility=\"F001\">\n  <lab_id>L1</lab_id>\n  <value>4.5</value>\n</LabResult>\n", true},
	{"<?xml version='1.0' encoding='windows-1252' standalone='yes'?>\r\n<a x=\"1\"\ty = '2'>\r\n <b>x\r\ny\rz</b>\r\n</a>\r\n", true},
	{"<a><b>&lt;5 mg &amp; &gt;2 &quot;q&quot; &apos;</b><c v=\"&amp;&#x20;\"/></a>", false},
	{"<a><b>&lt;5 mg &amp; &gt;2 &quot;q&quot; &apos;</b><c v=\"&amp;]]>\"/></a>", true},
	{"<!-- export --><a><!----><b/><?xml-stylesheet href=\"s.xsl\"?></a><!-- - -->", true},
	{"<a xmlns=\"urn:hl7-org:v3\"><b.c-d_e>Zoë 東京 𝄞</b.c-d_e></a>", true},
	{"", true},
	{"  \n ", true},
	{"<a/>", true},
	{"<a></a>trailing", true},
	{"<a/><b/>", true},
	{"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>", false},
	{"<a><![CDATA[<x>]]></a>", false},
	{"<h:a xmlns:h=\"u\"><h:b/></h:a>", false},
	{"<a h:x=\"1\"/>", false},
	{"<a>&#65;</a>", false},
	{"<a>&nbsp;</a>", false},
	{"<a>& b</a>", false},
	{"<ä/>", false},
	{"<a></b>", false},
	{"<a>", false},
	{"</a>", false},
	{"<a x=1/>", false},
	{"<a x/>", false},
	{"<a x=\"<\"/>", false},
	{"<a>]]></a>", false},
	{"<a>\x01</a>", false},
	{"<a>\xff</a>", false},
	{"<a>\uFFFE</a>", false},
	{"<?xml version=\"1.1\"?><a/>", false},
	{"<?xml version = \"1.0\"?><a/>", false},
	{"<?xml version=\"1.0\" encoding=\"UTF-8\" foo=\"x\"?><a/>", false},
	{"<!-- a -- b --><a/>", false},
	{"<a/ >", false},
	{"<1a/>", false},
	{"<a b=\"1\"c=\"2\"/>", true},
	{"<", false},
	{"<a", false},
}

func TestXMLScan(t *testing.T) {
	for _, c := range scanCases {
		if got := scanAgrees(t, []byte(c.doc)); got != c.take {
			t.Errorf("%q: scanner takes it: %v, want %v", c.doc, got, c.take)
		}
	}
}

// FuzzXMLScan: whatever the scanner takes, encoding/xml reads without error into the
// same tokens at the same offsets and lines.
func FuzzXMLScan(f *testing.F) {
	for _, c := range scanCases {
		f.Add([]byte(c.doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		scanAgrees(t, doc)
	})
}

// runBothReaders runs def over doc with the scanner allowed and with every entry read
// by encoding/xml, and fails unless rows, rejects, stats and the error are the same.
func runBothReaders(t testing.TB, def *feed.Definition, doc []byte) {
	t.Helper()
	scanned := runXMLWith(t, def, doc, false)
	decoded := runXMLWith(t, def, doc, true)
	if scanned != decoded {
		t.Fatalf("%q:\nwith the scanner:\n%s\nwith encoding/xml:\n%s", doc, scanned, decoded)
	}
}

func runXMLWith(t testing.TB, def *feed.Definition, doc []byte, noScan bool) string {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{BatchRows: 2, Allocator: mem, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	b := n.NewBatcher(func(rec arrow.RecordBatch) error {
		for r := range int(rec.NumRows()) {
			for c := range int(rec.NumCols()) {
				fmt.Fprintf(&out, " %s=%s", rec.ColumnName(c), cell(rec.Column(c), r))
			}
			out.WriteString("\n")
		}
		return nil
	})
	defer b.Release()
	b.noScan = noScan
	// Twice through one batcher, as an archive's entries go: the second run must not
	// see anything of the first.
	for i := range 2 {
		st, err := n.RunInto(context.Background(), bytes.NewReader(doc), fmt.Sprintf("e%d.xml", i), b, func(r Reject) error {
			fmt.Fprintf(&out, "reject row=%d line=%d column=%q reason=%q raw=%q\n", r.Row, r.Line, r.Column, r.Reason, r.Raw)
			return nil
		})
		fmt.Fprintf(&out, "stats %+v err %v\n", st, err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestXMLScannerAsDecoder runs the XML golden cases and the scanner cases both ways.
func TestXMLScannerAsDecoder(t *testing.T) {
	inputs, err := filepath.Glob("testdata/xml/*/input.xml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no xml cases: %v", err)
	}
	for _, in := range inputs {
		doc, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		runBothReaders(t, loadDef(t, filepath.Join(filepath.Dir(in), "feed.yaml")), doc)
	}
	def := parseDef(t, xmlFeed)
	for _, c := range scanCases {
		runBothReaders(t, def, []byte(c.doc))
	}
}
