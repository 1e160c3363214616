package normalize

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/protocol/feed"
)

// oneColumn builds a Normalizer for a CSV feed whose one column v is described by the
// YAML mapping body col (without the name), with the lookups table sex_codes.
func oneColumn(t testing.TB, col string) *Normalizer {
	t.Helper()
	doc := fmt.Sprintf(`
name: t
version: 1
table: t
match: {glob: "*"}
format: {type: csv}
lookups:
  sex_codes: {M: male, F: female}
columns:
  - name: v
    %s
`, strings.ReplaceAll(col, "\n", "\n    "))
	def, err := feed.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	n, err := New(def, Options{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTransformSteps(t *testing.T) {
	tests := []struct {
		name, transforms, in, want, reason string
	}{
		{"trim", "[trim]", "  a b \t", "a b", ""},
		{"upper", "[upper]", "straße", "STRAßE", ""},
		{"lower", "[lower]", "ÀB", "àb", ""},
		{"title", "[title]", "mary o'NEIL-smith  3RD", "Mary O'neil-Smith  3rd", ""},
		{"title empty", "[title]", "", "", ""},
		{"default on empty", "[{default: U}]", "", "U", ""},
		{"default on blank", "[{default: U}]", "   ", "U", ""},
		{"default keeps value", "[{default: U}]", "M", "M", ""},
		{"null_if list", `[{null_if: ["NULL", "N/A"]}]`, " N/A ", "", ""},
		{"null_if case-sensitive", `[{null_if: ["NULL"]}]`, "null", "null", ""},
		{"null_if scalar", `[{null_if: "-"}]`, "-", "", ""},
		{"null_if unquoted NULL is the text", `[{null_if: [NULL, null]}]`, "NULL", "", ""},
		{"lookup", "[{lookup: sex_codes}]", "F", "female", ""},
		{"lookup trimmed", "[{lookup: sex_codes}]", " M ", "male", ""},
		{"lookup empty stays empty", "[{lookup: sex_codes}]", "", "", ""},
		{"lookup missing rejects", "[{lookup: sex_codes}]", "X", "X", `"X" is not in lookup table sex_codes`},
		{"lookup missing keep", "[{lookup: {table: sex_codes, missing: keep}}]", "X", "X", ""},
		{"lookup missing null", "[{lookup: {table: sex_codes, missing: null}}]", "X", "", ""},
		{"lookup case matters", "[{lookup: sex_codes}]", "f", "f", `"f" is not in lookup table sex_codes`},
		{"split", `[{split: {separator: "^", index: 2}}]`, "a^b^c", "b", ""},
		{"split first", `[{split: {separator: "^", index: 1}}]`, "a^b", "a", ""},
		{"split last", `[{split: {separator: "^", index: 3}}]`, "a^b^c", "c", ""},
		{"split missing part", `[{split: {separator: "^", index: 4}}]`, "a^b^c", "", ""},
		{"split no separator", `[{split: {separator: "^", index: 2}}]`, "abc", "", ""},
		{"split multi-byte separator", `[{split: {separator: "||", index: 2}}]`, "a||b|c", "b|c", ""},
		{"regex group", `[{regex: {pattern: '(\d{5})(-\d{4})?', group: 1}}]`, "IL 62701-1234", "62701", ""},
		{"regex whole match", `[{regex: {pattern: '\d+'}}]`, "ab12cd34", "12", ""},
		{"regex no match", `[{regex: {pattern: '\d+'}}]`, "abc", "", ""},
		{"regex unmatched group", `[{regex: {pattern: 'a(b)?', group: 1}}]`, "ac", "", ""},
		{"replace", `[{replace: {pattern: '[^0-9]', with: ""}}]`, "(217) 555-0142", "2175550142", ""},
		{"replace groups", `[{replace: {pattern: '(\w+), (\w+)', with: "$2 $1"}}]`, "Doe, John", "John Doe", ""},
		{"hash", "[{hash: {secret: phi_key}}]", "123456789", "3d787a9eb2d5724977e734ef43a099300c314945fe5d0b4fcb986107ca97919d", ""},
		{"hash other key", "[{hash: {secret: other}}]", "123456789", hmacHex("key-other", "123456789"), ""},
		{"hash empty stays empty", "[{hash: {secret: phi_key}}]", "", "", ""},
		{"mask last", "[{mask: {keep_last: 4}}]", "5551234567", "******4567", ""},
		{"mask first and last", `[{mask: {keep_first: 1, keep_last: 1, char: "#"}}]`, "Jones", "J###s", ""},
		{"mask runes", "[{mask: {keep_last: 2}}]", "ßüéà", "**éà", ""},
		{"mask short value whole", "[{mask: {keep_last: 4}}]", "1234", "****", ""},
		{"mask all", "[{mask: {}}]", "abc", "***", ""},
		{"mask empty", "[{mask: {keep_last: 4}}]", "", "", ""},
		{"order matters", `[trim, upper, {null_if: ["N/A"]}, {default: U}, {lookup: {table: sex_codes, missing: keep}}]`, " n/a ", "U", ""},
		{"order matters 2", `[{default: U}, {null_if: ["U"]}]`, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := oneColumn(t, "type: string\ntransforms: "+tt.transforms)
			got, reason := n.cols[0].text([]string{tt.in}, []int{0})
			if got != tt.want && tt.reason == "" || reason != tt.reason {
				t.Errorf("%q → %q, reason %q; want %q, reason %q", tt.in, got, reason, tt.want, tt.reason)
			}
		})
	}
}

func hmacHex(key, s string) string {
	out, _ := hashStep([]byte(key))(s)
	return out
}

// TestRules checks every validation rule on both sides, and the reject reason.
func TestRules(t *testing.T) {
	tests := []struct {
		name, col, in, reason string
	}{
		{"int min ok", "type: int\nmin: 20", "20", ""},
		{"int below min", "type: int\nmin: 20", "19", "column v: 19 is below min 20"},
		{"int max ok", "type: int\nmax: 300", "300", ""},
		{"int above max", "type: int\nmax: 300", "412", "column v: 412 is above max 300"},
		{"int spaces", "type: int\nmax: 300", " 412 ", "column v: 412 is above max 300"},
		{"float min", "type: float\nmin: 35.5", "35.4", "column v: 35.4 is below min 35.5"},
		{"float max ok", "type: float\nmax: 42", "42.0", ""},
		{"decimal max", "type: decimal\nprecision: 6\nscale: 2\nmax: 10.5", "10.51", "column v: 10.51 is above max 10.5"},
		{"decimal max ok", "type: decimal\nprecision: 6\nscale: 2\nmax: 10.5", "10.50", ""},
		{"decimal negative min", "type: decimal\nprecision: 6\nscale: 2\nmin: -1", "-1.01", "column v: -1.01 is below min -1"},
		{"date min", "type: date\nmin: 2000-01-01", "1999-12-31", "column v: 1999-12-31 is below min 2000-01-01"},
		{"date min ok", "type: date\nmin: 2000-01-01", "2000-01-01", ""},
		{"date bound in column format", "type: date\nformat: 01/02/2006\nmax: 12/31/2030", "01/01/2031", "column v: 01/01/2031 is above max 12/31/2030"},
		{"timestamp max zoned", "type: timestamp\ntimezone: America/Chicago\nmax: 2024-01-01 00:00:00", "2024-01-01 00:00:01", "column v: 2024-01-01 00:00:01 is above max 2024-01-01 00:00:00"},
		{"timestamp max other zone ok", "type: timestamp\ntimezone: America/Chicago\nmax: 2024-01-01 00:00:00", "2024-01-01T05:59:59Z", ""},
		{"pattern ok", `type: string` + "\npattern: '[A-Z]{2}\\d+'", "AB12", ""},
		{"pattern whole value", `type: string` + "\npattern: '[A-Z]{2}\\d+'", "AB12x", `column v: "AB12x" does not match pattern [A-Z]{2}\d+`},
		{"pattern alternation anchored", "type: string\npattern: 'a|b'", "ab", `column v: "ab" does not match pattern a|b`},
		{"enum ok", "type: string\nenum: [M, F]", "F", ""},
		{"enum", "type: string\nenum: [M, F]", "X", `column v: "X" is not one of M, F`},
		{"enum int ok", "type: int\nenum: [1, 2]", "02", ""},
		{"enum int", "type: int\nenum: [1, 2]", "3", `column v: "3" is not one of 1, 2`},
		{"max_length ok", "type: string\nmax_length: 3", "äöü", ""},
		{"max_length", "type: string\nmax_length: 3", "abcd", `column v: "abcd" is 4 characters, longer than max_length 3`},
		{"empty skips rules", "type: int\nmin: 5", "", ""},
		{"required empty", "type: int\nrequired: true\nmin: 5", " ", "column v: required value is empty"},
		{"conversion before rules", "type: int\nmin: 5", "x", `column v: "x" is not an integer`},
		{"rules after transforms", "type: string\ntransforms: [upper]\nenum: [M]", "m", ""},
		{"long value shortened", "type: string\nenum: [a]", strings.Repeat("x", 100), `column v: "` + strings.Repeat("x", 64) + `..." is not one of a`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := oneColumn(t, tt.col)
			vals := make([]value, 1)
			rj, ok := n.convert([]string{tt.in}, []int{0}, vals)
			if ok != (tt.reason == "") || rj.Reason != tt.reason || !ok && rj.Column != "v" {
				t.Errorf("%q: ok %v, reject %+v; want reason %q", tt.in, ok, rj, tt.reason)
			}
		})
	}
}

// TestSourcesHeader checks that a column with sources needs its fields in the header
// (all of them when required) and joins what is there.
func TestSourcesHeader(t *testing.T) {
	doc := `
name: t
version: 1
table: t
match: {glob: "*"}
format: {type: csv}
columns:
  - {name: id, type: int}
  - {name: name, type: string, required: true, sources: [First, Last]}
  - {name: addr, type: string, sources: [Street, City], join: ", "}
  - {name: last, source: Last, type: string}
`
	def, err := feed.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, def, strings.NewReader("id,First,City\n1,a,b\n"), 10)
	if !errors.Is(err, ErrHeader) || !strings.Contains(err.Error(), `required column(s) ["Last"]`) {
		t.Fatalf("header lacking one source of a required column: %v", err)
	}
	got, _, err := run(t, def, strings.NewReader("id,last,First,City\n1,Doe,John,Springfield\n2,,,\n3, x ,, \n"), 10)
	if err != nil {
		t.Fatal(err)
	}
	want := `reject source=export.zip!t.csv row=2 line=3 column="name" reason="column name: required value is empty" raw="2,,,"
batch rows=2
  id=1 name="John Doe" addr="Springfield" last="Doe" _rescued=NULL _source_file="export.zip!t.csv" _row=1
  id=3 name="x" addr=NULL last=" x " _rescued=NULL _source_file="export.zip!t.csv" _row=3
stats rows=3 accepted=2 rejected=1 batches=1 unmapped=[]
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestNewHashSecrets checks that a hash step's secret is read once by name, and that a
// missing secret refuses the definition without naming any key.
func TestNewHashSecrets(t *testing.T) {
	def, err := feed.Parse([]byte(`
name: t
version: 1
table: t
match: {glob: "*"}
format: {type: csv}
columns:
  - {name: a, type: string, transforms: [{hash: {secret: k1}}]}
  - {name: b, type: string, transforms: [trim, {hash: {secret: k1}}]}
  - {name: c, type: string, transforms: [{hash: {secret: k2}}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	_, err = New(def, Options{Secret: func(name string) ([]byte, error) {
		calls[name]++
		return []byte("s3cr3t-" + name), nil
	}})
	if err != nil || calls["k1"] != 1 || calls["k2"] != 1 {
		t.Fatalf("New = %v, secret reads %v", err, calls)
	}
	tests := []struct {
		name   string
		secret func(string) ([]byte, error)
		want   string
	}{
		{"no store", nil, `normalize: feed "t": columns[0] "a": transforms[0]: hash: secret "k1": no secret store is configured`},
		{"missing", func(name string) ([]byte, error) {
			if name == "k2" {
				return nil, errors.New("secret k2: no file /secrets/k2")
			}
			return []byte("s3cr3t"), nil
		}, `columns[2] "c": transforms[0]: hash: secret "k2": secret k2: no file /secrets/k2`},
		{"empty", func(string) ([]byte, error) { return nil, nil }, `secret "k1": the secret is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(def, Options{Secret: tt.secret})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("New error = %v, want %q and no key", err, tt.want)
			}
		})
	}
}

// FuzzTransforms reads arbitrary transform lists and values: a list the definition
// parser accepts must compile and run on any text without panicking, every record must
// become a row or a reject, and hash output must be hex of the right length.
func FuzzTransforms(f *testing.F) {
	for _, s := range []struct{ transforms, value string }{
		{"[trim, upper, {default: U}, {lookup: codes}]", " m "},
		{`[{split: {separator: "^", index: 2}}, {regex: {pattern: '(\d+)', group: 1}}]`, "a^b12^c"},
		{`[{replace: {pattern: '[^0-9]', with: "$0$0"}}, {mask: {keep_first: 1, keep_last: 2}}]`, "(555) 0100"},
		{"[{hash: {secret: phi_key}}, title]", "x"},
		{`[{null_if: ["", "NULL"]}, lower, {lookup: {table: codes, missing: keep}}]`, "NULL"},
		{"[title]", "\xff\xfe o'x-y"},
	} {
		f.Add(s.transforms, s.value)
	}
	f.Fuzz(func(t *testing.T, transforms, value string) {
		if strings.ContainsAny(transforms, "\n\r") {
			return
		}
		doc := `
name: t
version: 1
table: t
match: {glob: "*"}
format: {type: csv, delimiter: "\t"}
lookups:
  codes: {M: male, F: female}
columns:
  - {name: v, type: string, transforms: ` + transforms + `}
`
		def, err := feed.Parse([]byte(doc))
		if err != nil {
			return
		}
		n, err := New(def, Options{Secret: testSecret})
		if err != nil {
			t.Fatalf("New refused a valid definition: %v", err)
		}
		out, reason := n.cols[0].text([]string{value}, []int{0})
		if ts := def.Columns[0].Transforms; len(ts) > 0 && ts[len(ts)-1].Step == feed.StepHash && reason == "" && !isBlank(out) && len(out) != 64 {
			t.Fatalf("hash step output %q", out)
		}
		var data bytes.Buffer
		data.WriteString("v\n\"")
		data.WriteString(strings.ReplaceAll(value, `"`, `""`))
		data.WriteString("\"\n")
		st, err := n.Run(context.Background(), &data, "fuzz.csv", func(arrow.RecordBatch) error { return nil }, func(r Reject) error {
			if r.Reason == "" || r.Column != "v" {
				t.Fatalf("reject %+v", r)
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrDecode) {
			t.Fatalf("Run: %v", err)
		}
		if err == nil && (st.Rows != 1 || st.Accepted+st.Rejected != 1) {
			t.Fatalf("stats %+v", st)
		}
	})
}
