package gen

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDelimWriter checks that any string values written as CSV or TXT read back
// unchanged with encoding/csv, as the agent reads them.
func FuzzDelimWriter(f *testing.F) {
	f.Add("plain", `Smith, Jr.`, `say "hi"`, "|pipe|")
	f.Add("", " leading space", "line\nbreak", "cr\rlf")
	f.Add(`"`, `""`, ",", "é, ü")
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		in := []string{a, b, c, d}
		for _, s := range in {
			// encoding/csv cannot represent a bare CR (it reads it as a line ending)
			// nor invalid UTF-8 faithfully; the generator emits neither.
			if !utf8.ValidString(s) || strings.ContainsRune(s, '\r') {
				t.Skip()
			}
		}
		cols := make([]column, len(in))
		vals := make([]value, len(in))
		for i, s := range in {
			cols[i] = column{name: "c" + string(rune('a'+i)), typ: "string"}
			vals[i] = str(s)
		}
		for _, format := range []string{FormatCSV, FormatTXT} {
			var buf bytes.Buffer
			w := newDelimWriter(&buf, styles[format])
			w.header(cols)
			w.row(cols, vals)
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
			if int64(buf.Len()) != w.raw {
				t.Fatalf("raw count %d, wrote %d", w.raw, buf.Len())
			}
			r := csv.NewReader(&buf)
			r.Comma = rune(styles[format].delim)
			recs, err := r.ReadAll()
			if err != nil {
				t.Fatalf("%s: reading back %q: %v", format, in, err)
			}
			// An all-empty single-column row would be skipped, but rows have 4 columns.
			if len(recs) != 2 || !slices.Equal(recs[1], in) {
				t.Fatalf("%s: wrote %q, read back %q", format, in, recs)
			}
		}
	})
}

// FuzzXMLRecord checks that any string values survive a one-record XML document.
func FuzzXMLRecord(f *testing.F) {
	f.Add("O'Brien", `<b>&amp;</b>`, `"quoted"`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		in := []string{a, b, c}
		for _, s := range in {
			if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool {
				// XML 1.0 cannot carry most control characters; line ends are normalized.
				return (r < 0x20 && r != '\t') || r == 0xFFFE || r == 0xFFFF
			}) {
				t.Skip()
			}
		}
		e := &entity{name: "fuzz", record: "rec", cols: []column{{name: "a"}, {name: "b"}, {name: "c"}}}
		doc := appendXMLRecord(nil, e, "f000001", []value{str(a), str(b), str(c)})
		rec := parseXMLRecord(t, doc)
		for i, col := range e.cols {
			if in[i] == "" {
				continue
			}
			if rec[col.name] != in[i] {
				t.Fatalf("wrote %q, read back %q", in[i], rec[col.name])
			}
		}
		if err := xml.Unmarshal(doc, new(struct{})); err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
	})
}

// FuzzReadManifest checks that ReadManifest rejects or accepts any input without
// panicking.
func FuzzReadManifest(f *testing.F) {
	f.Add([]byte(`{"version":1,"seed":1,"tables":{"t":{"keys":["id"],"rows":1,"key_checksum":"5"}}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`[`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "m.json")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := ReadManifest(p)
		if err == nil && m.Version != ManifestVersion {
			t.Fatalf("accepted version %d", m.Version)
		}
	})
}
