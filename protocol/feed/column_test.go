package feed_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"go.yaml.in/yaml/v3"

	"github.com/medlake/medlake/protocol/feed"
)

// rowStage is a definition using every row-stage field; the cases below break it one
// field at a time.
const rowStage = `
name: patients_csv
version: 1
table: patients
match: {glob: "*.csv"}
format: {type: csv}
mode: upsert
keys: [patient_id]
sequence: updated_at
lookups:
  sex_codes: {M: male, F: female, U: unknown}
columns:
  - {name: patient_id, type: string, required: true, pattern: '^P\d+$', max_length: 16}
  - name: full_name
    type: string
    sources: [First, Last]
    join: " "
    transforms: [trim, title]
  - name: sex
    type: string
    transforms:
      - upper
      - default: U
      - lookup: sex_codes
    enum: [male, female, unknown]
  - name: zip
    type: string
    transforms:
      - regex: {pattern: '(\d{5})', group: 1}
      - replace: {pattern: '[^0-9]', with: ""}
  - name: ssn
    type: string
    transforms:
      - split: {separator: "^", index: 2}
      - null_if: ["", "NULL", "N/A"]
      - hash: {secret: phi_key}
      - mask: {keep_last: 4, char: "*"}
  - {name: heart_rate, type: int, min: 20, max: 300, enum: [1, 2, 300]}
  - {name: balance, type: decimal, precision: 12, scale: 2, min: "-1000.00", max: 99999}
  - {name: born_on, type: date, min: 1900-01-01}
  - {name: updated_at, type: timestamp, timezone: America/Chicago, min: "2000-01-01T00:00:00"}
  - {name: kind, type: string}
`

func TestParseRowStage(t *testing.T) {
	d, err := feed.Parse([]byte(rowStage))
	if err != nil {
		t.Fatal(err)
	}
	if d.Mode != feed.ModeUpsert || d.Sequence != "updated_at" || d.Lookups["sex_codes"]["F"] != "female" {
		t.Errorf("table mode = %+v", d.TableMode)
	}
	sex, _ := d.Column("sex")
	want := []feed.Transform{{Step: "upper"}, {Step: "default", Default: "U"}, {Step: "lookup", Lookup: feed.LookupStep{Table: "sex_codes"}}}
	if len(sex.Transforms) != 3 || sex.Transforms[0].Step != want[0].Step || sex.Transforms[1].Default != "U" || sex.Transforms[2].Lookup != want[2].Lookup {
		t.Errorf("sex transforms = %+v", sex.Transforms)
	}
	zip, _ := d.Column("zip")
	re, err := zip.Transforms[0].Regex.Pattern.Compiled()
	if err != nil || re.String() != `(\d{5})` || zip.Transforms[0].Regex.Group != 1 {
		t.Errorf("regex step = %+v, %v", zip.Transforms[0], err)
	}
	name, _ := d.Column("full_name")
	if got := name.SourceNames(); len(got) != 2 || got[1] != "Last" || name.Separator() != " " {
		t.Errorf("sources = %q join %q", got, name.Separator())
	}
	if k, _ := d.Column("kind"); len(k.SourceNames()) != 1 || k.SourceNames()[0] != "kind" || k.Separator() != " " {
		t.Errorf("single source = %q", k.SourceNames())
	}
	bal, _ := d.Column("balance")
	f, _ := d.BatchSchema().FieldsByName("balance")
	if !arrow.TypeEqual(f[0].Type, &arrow.Decimal128Type{Precision: 12, Scale: 2}) {
		t.Errorf("balance type = %s", f[0].Type)
	}
	lo, hi, err := bal.Bounds()
	if err != nil || lo.Decimal.ToString(2) != "-1000.00" || hi.Decimal.ToString(2) != "99999.00" {
		t.Errorf("decimal bounds = %v %v %v", lo, hi, err)
	}
	up, _ := d.Column("updated_at")
	lo, _, err = up.Bounds()
	// 2000-01-01 00:00 in Chicago is 06:00 UTC.
	if err != nil || lo.Int != 946706400000000 {
		t.Errorf("timestamp bound = %d, %v", lo.Int, err)
	}
	born, _ := d.Column("born_on")
	if lo, _, _ := born.Bounds(); lo.Int != -25567 {
		t.Errorf("date bound = %d", lo.Int)
	}
	// A definition survives writing it out and reading it back.
	out, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := feed.Parse(out)
	if err != nil {
		t.Fatalf("re-parsing marshalled definition: %v\n%s", err, out)
	}
	if ssn, _ := d2.Column("ssn"); len(ssn.Transforms) != 4 || ssn.Transforms[3].Mask.KeepLast != 4 || ssn.Transforms[2].Hash.Secret != "phi_key" {
		t.Errorf("round trip ssn = %+v", ssn.Transforms)
	}
}

func TestParseRowStageInvalid(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"lookup table undefined", "lookup: sex_codes", "lookup: sexx",
			`columns[2] "sex": transforms[2]: lookup table "sexx" is not defined`},
		{"lookup missing policy", "lookup: sex_codes", "lookup: {table: sex_codes, missing: drop}",
			`columns[2] "sex": transforms[2]: lookup missing "drop" is not supported`},
		{"unknown step", "- upper", "- shout", `columns[2] "sex": transforms[0]: unknown transform "shout"`},
		{"bare step with argument", "- upper", "- upper: yes", "upper takes no argument"},
		{"two keys", "- default: U", "- {default: U, lookup: x}", "a map with one key"},
		{"unknown step field", "{separator: \"^\", index: 2}", "{separator: \"^\", index: 2, limit: 3}", `split: unknown field "limit"`},
		{"split index", "index: 2}", "index: 0}", `columns[4] "ssn": transforms[0]: split index must be 1 or more`},
		{"split separator", `separator: "^"`, `separator: ""`, "split needs a separator"},
		{"regex invalid", `pattern: '(\d{5})'`, `pattern: '(\d{5}'`, `columns[3] "zip": transforms[0]: regex pattern "(\\d{5}": error parsing regexp`},
		{"regex group", "group: 1", "group: 2", "regex group 2: the pattern has 1 group(s)"},
		{"replace invalid", `pattern: '[^0-9]'`, `pattern: '[^0-9'`, `transforms[1]: replace pattern`},
		{"hash without secret", "hash: {secret: phi_key}", "hash: {secret: \"\"}", "hash needs a secret name"},
		{"mask char", `char: "*"`, `char: "**"`, `mask char "**" must be one character`},
		{"mask negative", "keep_last: 4", "keep_last: -1", "must be 0 or more"},
		{"null_if empty", `null_if: ["", "NULL", "N/A"]`, `null_if: []`, "null_if needs at least one value"},
		{"decimal precision", "precision: 12", "precision: 39", `columns[6] "balance": decimal precision must be 1 to 38, got 39`},
		{"decimal scale", "scale: 2", "scale: 13", "decimal scale must be 0 to precision (12), got 13"},
		{"precision on int", "{name: heart_rate, type: int,", "{name: heart_rate, type: int, precision: 3,", "precision and scale apply only to decimal"},
		{"bad timezone", "timezone: America/Chicago", "timezone: Mars/Olympus", `timezone "Mars/Olympus" is not an IANA zone name`},
		{"timezone on date", "{name: born_on, type: date,", "{name: born_on, type: date, timezone: UTC,", "timezone applies only to timestamp"},
		{"source and sources", "sources: [First, Last]", "sources: [First, Last]\n    source: Name", "source and sources exclude each other"},
		{"source twice", "sources: [First, Last]", "sources: [First, First]", `sources[1]: "First" is named twice`},
		{"empty source", "sources: [First, Last]", `sources: [First, ""]`, "sources[1] is empty"},
		{"join without sources", "{name: kind, type: string}", `{name: kind, type: string, join: "-"}`, "join applies only with sources"},
		{"min not a number", "min: 20", "min: low", `columns[5] "heart_rate": min: "low" is not a int value`},
		{"max decimal scale", "max: 99999}", "max: 1.234}", `max: "1.234" has more than 2 digit(s) after the decimal point (scale 2)`},
		{"min above max", "min: 20", "min: 400", "min 400 is above max 300"},
		{"min on string", "{name: kind, type: string}", "{name: kind, type: string, min: 1}", "min: applies only to int, float, decimal, date and timestamp"},
		{"date bound", "min: 1900-01-01", "min: yesterday", `min: "yesterday" is not a date value`},
		{"pattern on int", "{name: heart_rate, type: int,", "{name: heart_rate, type: int, pattern: x,", "pattern applies only to string"},
		{"pattern invalid", `pattern: '^P\d+$'`, `pattern: '^P(\d+$'`, `columns[0] "patient_id": pattern "^P(\\d+$"`},
		{"enum not int", "enum: [1, 2, 300]", "enum: [1, two]", `enum[1]: "two" is not an integer`},
		{"enum on date", "{name: born_on, type: date,", "{name: born_on, type: date, enum: [x],", "enum applies only to string and int"},
		{"max_length on int", "{name: heart_rate, type: int,", "{name: heart_rate, type: int, max_length: 3,", "max_length applies only to string"},
		{"max_length negative", "max_length: 16", "max_length: -1", "max_length must be 1 or more"},
		{"unknown mode", "mode: upsert", "mode: merge", `mode "merge" is not supported`},
		{"upsert without keys", "keys: [patient_id]", "keys: []", "mode upsert needs keys"},
		{"sequence not a column", "sequence: updated_at", "sequence: nope", `sequence: "nope" is not a column`},
		{"sequence string", "sequence: updated_at", "sequence: kind", `sequence: column "kind" is string, want int, date or timestamp`},
		{"sequence on append", "mode: upsert", "mode: append", "sequence applies only to mode upsert or cdc"},
		{"cdc without op", "mode: upsert", "mode: cdc", "op is required for mode cdc"},
		{"op on upsert", "sequence: updated_at", "sequence: updated_at\nop: {column: kind}", "op applies only to mode cdc"},
		{"op column not string", "mode: upsert", "mode: cdc\nop: {column: heart_rate}", `op.column: column "heart_rate" is int, want string`},
		{"op column missing", "mode: upsert", "mode: cdc\nop: {column: nope}", `op.column: "nope" is not a column`},
		{"op value twice", "mode: upsert", "mode: cdc\nop: {column: kind, insert: [I, u]}", `op.update[0]: "U" also means insert`},
		{"duplicates on upsert", "mode: upsert", "mode: upsert\nduplicates: drop", "duplicates applies only to mode append"},
		{"duplicates drop without keys", "mode: upsert\nkeys: [patient_id]\nsequence: updated_at", "duplicates: drop", "duplicates: drop needs keys"},
		{"duplicates unknown", "mode: upsert", "mode: upsert\nduplicates: merge", `duplicates "merge" is not supported`},
		{"empty lookup table", "sex_codes: {M: male, F: female, U: unknown}", "sex_codes: {M: male, F: female, U: unknown}\n  other: {}", "lookups.other: the table is empty"},
		{"decimal type", "type: decimal, precision: 12, scale: 2", "type: money", `unknown type "money" (string, int, float, bool, date, timestamp, decimal)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(rowStage, tt.from, tt.to, 1)
			if doc == rowStage {
				t.Fatalf("test edit %q did not apply", tt.from)
			}
			_, err := feed.Parse([]byte(doc))
			if !errors.Is(err, feed.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v\nwant ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestLookupMissingNull(t *testing.T) {
	for _, missing := range []string{"null", `"null"`, "~"} {
		doc := strings.Replace(rowStage, "lookup: sex_codes", "lookup: {table: sex_codes, missing: "+missing+"}", 1)
		d, err := feed.Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := d.Column("sex"); c.Transforms[2].Lookup.Missing != feed.MissingNull {
			t.Errorf("missing: %s read as %q", missing, c.Transforms[2].Lookup.Missing)
		}
	}
}

func TestParseRowStageXMLSources(t *testing.T) {
	doc := strings.Replace(rowStage, "format: {type: csv}", "format: {type: xml, record: Patient}", 1)
	if _, err := feed.Parse([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	doc = strings.Replace(doc, "sources: [First, Last]", "sources: [Name/First, Name/@bad step]", 1)
	if _, err := feed.Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), `sources[1] "Name/@bad step"`) {
		t.Fatalf("bad XML source path: %v", err)
	}
}

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in         string
		prec, sc   int
		want, fail string
	}{
		{in: "12.50", prec: 5, sc: 2, want: "12.50"},
		{in: "-12.5", prec: 5, sc: 2, want: "-12.50"},
		{in: "+3", prec: 5, sc: 2, want: "3.00"},
		{in: ".5", prec: 5, sc: 2, want: "0.50"},
		{in: "7.", prec: 5, sc: 0, want: "7"},
		{in: "1.2300", prec: 5, sc: 2, want: "1.23"},
		{in: "000123.4", prec: 4, sc: 1, want: "123.4"},
		{in: "12345678901234567890123456789012345678", prec: 38, sc: 0, want: "12345678901234567890123456789012345678"},
		{in: "-1234567890123456789012345.6789012345678", prec: 38, sc: 13, want: "-1234567890123456789012345.6789012345678"},
		{in: "0.0000000000000000000000000000000000001", prec: 38, sc: 37, want: "0.0000000000000000000000000000000000001"},
		{in: "1.234", prec: 5, sc: 2, fail: `"1.234" has more than 2 digit(s) after the decimal point`},
		{in: "1234", prec: 5, sc: 2, fail: `"1234" has more than 3 digit(s) before the decimal point (precision 5, scale 2)`},
		{in: "1e3", prec: 5, sc: 2, fail: `"1e3" is not a decimal number`},
		{in: "1,000", prec: 9, sc: 2, fail: "is not a decimal number"},
		{in: "", prec: 5, sc: 2, fail: "is not a decimal number"},
		{in: "-", prec: 5, sc: 2, fail: "is not a decimal number"},
		{in: ".", prec: 5, sc: 2, fail: "is not a decimal number"},
		{in: "1.2.3", prec: 5, sc: 2, fail: "is not a decimal number"},
		{in: " 1", prec: 5, sc: 2, fail: "is not a decimal number"},
	}
	for _, tt := range tests {
		n, err := feed.ParseDecimal(tt.in, tt.prec, tt.sc)
		if tt.fail != "" {
			if err == nil || !strings.Contains(err.Error(), tt.fail) {
				t.Errorf("ParseDecimal(%q, %d, %d) error = %v, want %q", tt.in, tt.prec, tt.sc, err, tt.fail)
			}
			continue
		}
		if err != nil || n.ToString(int32(tt.sc)) != tt.want {
			t.Errorf("ParseDecimal(%q, %d, %d) = %s, %v, want %s", tt.in, tt.prec, tt.sc, n.ToString(int32(tt.sc)), err, tt.want)
		}
	}
}

func TestOpDefaults(t *testing.T) {
	ins, upd, del := feed.Op{Column: "op", Delete: []string{"X"}}.Values()
	if strings.Join(ins, ",") != "I,INSERT" || strings.Join(upd, ",") != "U,UPDATE" || strings.Join(del, ",") != "X" {
		t.Errorf("op values = %q %q %q", ins, upd, del)
	}
}

func FuzzParseDecimal(f *testing.F) {
	for _, s := range []string{"12.50", "-0.001", "+.5", "99999999999999999999999999999999999999", "1e3", ""} {
		f.Add(s, 10, 3)
	}
	f.Fuzz(func(t *testing.T, s string, prec, scale int) {
		if prec < 1 || prec > 38 || scale < 0 || scale > prec {
			return
		}
		n, err := feed.ParseDecimal(s, prec, scale)
		if err != nil {
			return
		}
		if !n.FitsInPrecision(int32(prec)) {
			t.Fatalf("ParseDecimal(%q, %d, %d) = %s does not fit its precision", s, prec, scale, n.ToString(int32(scale)))
		}
		// The value read back is the value written, up to sign, leading and trailing zeros.
		back, err := feed.ParseDecimal(n.ToString(int32(scale)), prec, scale)
		if err != nil || back != n {
			t.Fatalf("ParseDecimal(%q) = %s does not read back: %v", s, n.ToString(int32(scale)), err)
		}
	})
}
