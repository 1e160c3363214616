package normalize

import (
	"encoding/csv"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/medlake/medlake/protocol/feed"
)

type delimRecord struct {
	Fields []string
	Line   int64
	Raw    string
	Err    string
}

func readDelim(t testing.TB, input string, comma, quote rune, quoted bool, escape, comment rune) []delimRecord {
	t.Helper()
	d := newDelimReader(strings.NewReader(input), comma, quote, quoted, escape, comment)
	var out []delimRecord
	for {
		fields, line, raw, err := d.Read()
		if err == io.EOF {
			return out
		}
		var re *recordError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("Read: %v", err)
		}
		r := delimRecord{Fields: append([]string(nil), fields...), Line: line, Raw: rawText(raw)}
		if re != nil {
			r.Err = re.reason
		}
		out = append(out, r)
	}
}

func TestDelimReader(t *testing.T) {
	type rec = delimRecord
	tests := []struct {
		name            string
		in              string
		comma, quote    rune
		quoted          bool
		escape, comment rune
		want            []rec
	}{
		{"plain", "a,b\nc,d\n", ',', '"', true, 0, 0, []rec{{[]string{"a", "b"}, 1, "a,b", ""}, {[]string{"c", "d"}, 2, "c,d", ""}}},
		{"crlf and no final newline", "a,b\r\nc,d", ',', '"', true, 0, 0, []rec{{[]string{"a", "b"}, 1, "a,b", ""}, {[]string{"c", "d"}, 2, "c,d", ""}}},
		{"empty fields", ",\n,,x\n", ',', '"', true, 0, 0, []rec{{[]string{"", ""}, 1, ",", ""}, {[]string{"", "", "x"}, 2, ",,x", ""}}},
		{"blank and comment lines", "\n#c,d\n\r\na\n", ',', '"', true, 0, '#', []rec{{[]string{"a"}, 4, "a", ""}}},
		{"single quote", "'a,b';'it''s'\n", ';', '\'', true, 0, 0, []rec{{[]string{"a,b", "it's"}, 1, "'a,b';'it''s'", ""}}},
		{"escape", `"a\"b","c\\d","e""f"` + "\n", ',', '"', true, '\\', 0, []rec{{[]string{`a"b`, `c\d`, `e"f`}, 1, `"a\"b","c\\d","e""f"`, ""}}},
		{"escape outside quotes is text", `a\b,"c"` + "\n", ',', '"', true, '\\', 0, []rec{{[]string{`a\b`, "c"}, 1, `a\b,"c"`, ""}}},
		{"multi-line quoted", "x,'one\r\ntwo'\ny\n", ',', '\'', true, 0, 0, []rec{{[]string{"x", "one\ntwo"}, 1, "x,'one\r\ntwo'", ""}, {[]string{"y"}, 3, "y", ""}}},
		{"comment char inside quotes", "'#a\n#b'\n", ',', '\'', true, 0, '#', []rec{{[]string{"#a\n#b"}, 1, "'#a\n#b'", ""}}},
		{"no quoting", `"a"|b"c|"` + "\n", '|', 0, false, 0, 0, []rec{{[]string{`"a"`, `b"c`, `"`}, 1, `"a"|b"c|"`, ""}}},
		{"multibyte delimiter and quote", "«a¦b«¦c\n", '¦', '«', true, 0, 0, nil},
		{"bare quote", "a,b'c\nd\n", ',', '\'', true, 0, 0, []rec{{nil, 1, "a,b'c", `line 1 column 4: bare "'" in non-quoted field`}, {[]string{"d"}, 2, "d", ""}}},
		{"text after closing quote", "'a'b,c\nd\n", ',', '\'', true, 0, 0, []rec{{nil, 1, "'a'b,c", `line 1 column 4: extraneous or missing "'" in quoted field`}, {[]string{"d"}, 2, "d", ""}}},
		{"open at end", "a\n'b\nc", ',', '\'', true, 0, 0, []rec{{[]string{"a"}, 1, "a", ""}, {nil, 2, "'b\nc", "quoted field not terminated before end of input"}}},
		{"escape at end", `"a\`, ',', '"', true, '\\', 0, []rec{{nil, 1, `"a\`, `escape "\\" at end of input`}}},
		{"unicode positions", "éé,x'y\n", ',', '\'', true, 0, 0, []rec{{nil, 1, "éé,x'y", `line 1 column 5: bare "'" in non-quoted field`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readDelim(t, tt.in, tt.comma, tt.quote, tt.quoted, tt.escape, tt.comment)
			if tt.want == nil {
				// Only that it parses as one record of two fields.
				if len(got) != 1 || !reflect.DeepEqual(got[0].Fields, []string{"a¦b", "c"}) {
					t.Errorf("got %+v", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// readStd reads input with encoding/csv; ok is false when it reports any error or the
// input ends inside a quoted field (which encoding/csv accepts and the normalizer rejects).
func readStd(input string, comma, comment rune) (recs []delimRecord, ok bool) {
	cr := csv.NewReader(strings.NewReader(input))
	cr.Comma, cr.Comment, cr.FieldsPerRecord = comma, comment, -1
	for {
		fields, err := cr.Read()
		if err == io.EOF {
			return recs, true
		}
		if err != nil {
			return nil, false
		}
		line, _ := cr.FieldPos(0)
		recs = append(recs, delimRecord{Fields: fields, Line: int64(line)})
	}
}

// checkDifferential holds delimReader to encoding/csv on input both accept, in the
// dialect they share (quote '"', quotes doubled).
func checkDifferential(t *testing.T, input string, comma, comment rune) {
	t.Helper()
	want, ok := readStd(input, comma, comment)
	if !ok || strings.Count(input, `"`)%2 != 0 {
		return
	}
	got := readDelim(t, input, comma, '"', true, 0, comment)
	for i := range got {
		got[i].Raw = ""
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %q:\ndelimReader  %+v\nencoding/csv %+v", input, got, want)
	}
}

func TestDelimReaderMatchesEncodingCSV(t *testing.T) {
	for _, in := range []string{
		"a,b\nc,d\n", "a,\"b\nc\"\r\nd\r\n", "\n\na\n\n", "#x\na,#b\n", "\"\"\n\"\"\"\"\n", "a\r", "a,b\rc\n",
		"\"a\r\nb\",c", " \"a\",b", "a,,\n,\n", "é,ü\n", "\"a\"\"\",b\n\n\n",
	} {
		checkDifferential(t, in, ',', '#')
		checkDifferential(t, in, ';', 0)
	}
}

// FuzzDelimReader checks that delimReader never panics, that every record it returns
// either has fields or a reason, with lines increasing, and that it reads as
// encoding/csv does on input both accept.
func FuzzDelimReader(f *testing.F) {
	for _, s := range []string{"a,b\nc,d\n", "'a''b',\"c\"\n#x\n", "\"a\\\"b\",c\r\n", "x,'y\nz'\n", "\"open", ""} {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, input string, mode uint8) {
		dialects := []struct {
			quote   rune
			quoted  bool
			escape  rune
			comment rune
		}{{'"', true, 0, 0}, {'\'', true, '\\', '#'}, {0, false, 0, '#'}, {'"', true, '\\', 0}}
		dl := dialects[int(mode)%len(dialects)]
		recs := readDelim(t, input, ',', dl.quote, dl.quoted, dl.escape, dl.comment)
		var last int64
		for _, r := range recs {
			if r.Line <= last || r.Err == "" && len(r.Fields) == 0 {
				t.Fatalf("record %+v after line %d", r, last)
			}
			last = r.Line
		}
		checkDifferential(t, input, ',', '#')
	})
}

// FuzzNormalizeDelim and FuzzNormalizeFixed check the no-loss contract of the other
// text readers on arbitrary input, as FuzzNormalizeCSV does for encoding/csv.
func FuzzNormalizeDelim(f *testing.F) {
	for _, s := range []string{"EXPORT\nx\nnote_id;author;body\n1;'a';'b\\'c'\n#c\n2;b;'x\ny'\n", "h\nh\nnote_id\n'open", ""} {
		f.Add([]byte(s))
	}
	def := loadDef(f, "testdata/cases/csv_quote_escape/feed.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		checkContract(t, def, data, "fuzz.txt", false, ErrHeader, ErrDecode)
	})
}

func FuzzNormalizeFixed(f *testing.F) {
	for _, s := range []string{"HDR\nP00001José      19500304note one\n* c\nP2\n", "", "\n\n\r\n"} {
		f.Add([]byte(s))
	}
	def := loadDef(f, "testdata/cases/fixed/feed.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		checkContract(t, def, data, "fuzz.dat", false, ErrDecode)
	})
}

// TestFixedLinePositions checks that fixed-width rejects name the physical line with
// skipped and comment lines counted, and columns are cut by rune.
func TestFixedLinePositions(t *testing.T) {
	def, err := feed.Parse([]byte(`name: fw
version: 1
table: fw
match: {glob: "*"}
format: {type: fixed, skip_lines: 2, comment: "#"}
columns:
  - {name: a, start: 1, width: 2, type: string, required: true}
  - {name: b, start: 3, width: 3, type: int}
`))
	if err != nil {
		t.Fatal(err)
	}
	got, st, err := run(t, def, strings.NewReader("skip\nskip\n#c\néé12\nx\n\nab 7 \n"), 10)
	if err != nil || st.Rows != 3 {
		t.Fatalf("Run = %+v, %v", st, err)
	}
	for _, want := range []string{
		`a="éé" b=12 _rescued=NULL _source_file="export.zip!fw.csv" _row=1`,
		`row=2 line=5 column="a" reason="line 5 has 1 characters; column a needs characters 1-2"`,
		`a="ab" b=7 _rescued=NULL _source_file="export.zip!fw.csv" _row=3`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
}
