package feed_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/medlake/medlake/protocol/feed"
)

const positional = `
name: labs_txt
version: 1
table: labs
match: {glob: "*.txt"}
format: {type: csv, delimiter: "|", header: false}
columns:
  - {name: lab_id, index: 1, type: string, required: true}
  - {name: result, index: 3, type: float}
`

const fixed = `
name: labs_fixed
version: 1
table: labs_fw
match: {glob: "*.dat"}
format: {type: fixed, skip_lines: 1, comment: "*"}
columns:
  - {name: lab_id, start: 1, width: 8, type: string, required: true}
  - {name: result, start: 9, width: 6, type: float}
`

func TestParseFormatOptions(t *testing.T) {
	d, err := feed.Parse([]byte(positional))
	if err != nil {
		t.Fatal(err)
	}
	// Positional: nothing to rescue, but the always-NULL column keeps the table's shape.
	if !d.HasRescued() || d.BatchSchema().NumFields() != 5 || d.BatchSchema().Field(2).Name != feed.ColRescued {
		t.Errorf("headerless csv schema %s: want _rescued after the columns", d.BatchSchema())
	}
	if q, ok := d.Format.QuoteRune(); !ok || q != '"' || d.Format.EscapeRune() != 0 || d.Format.CommentRune() != 0 {
		t.Errorf("defaults: quote %q %v escape %q comment %q", q, ok, d.Format.EscapeRune(), d.Format.CommentRune())
	}
	d, err = feed.Parse([]byte(fixed))
	if err != nil {
		t.Fatal(err)
	}
	if d.Format.HasHeader() || !d.HasRescued() || d.Format.CommentRune() != '*' {
		t.Errorf("fixed: header %v rescued %v", d.Format.HasHeader(), d.HasRescued())
	}
	none := strings.Replace(valid, `format: {type: csv, delimiter: ","}`, `format: {type: csv, quote: "", comment: "#", skip_lines: 2, trailing_delimiter: true}`, 1)
	if d, err = feed.Parse([]byte(none)); err != nil {
		t.Fatal(err)
	} else if _, ok := d.Format.QuoteRune(); ok {
		t.Error(`quote: "" must turn quoting off`)
	}
	esc := strings.Replace(valid, `format: {type: csv, delimiter: ","}`, `format: {type: csv, quote: "'", escape: "\\"}`, 1)
	if d, err = feed.Parse([]byte(esc)); err != nil {
		t.Fatal(err)
	} else if q, _ := d.Format.QuoteRune(); q != '\'' || d.Format.EscapeRune() != '\\' {
		t.Errorf("quote %q escape %q", q, d.Format.EscapeRune())
	}
	for _, policy := range []string{"rescue", "reject", "add", "ignore"} {
		doc := strings.Replace(valid, "keys: [vital_id]", "keys: [vital_id]\ndrift: "+policy+"\nignore: [Comment]", 1)
		d, err := feed.Parse([]byte(doc))
		if err != nil {
			t.Fatalf("drift %s: %v", policy, err)
		}
		if d.HasRescued() != (policy == "rescue") {
			t.Errorf("drift %s: HasRescued %v", policy, d.HasRescued())
		}
		if !d.Ignored(" comment ") || d.Ignored("HR") {
			t.Errorf("drift %s: Ignored wrong", policy)
		}
	}
}

func TestParseFormatInvalid(t *testing.T) {
	csvFormat := `format: {type: csv, delimiter: ","}`
	tests := []struct {
		name, doc, from, to, want string
	}{
		{"long quote", valid, csvFormat, `format: {type: csv, quote: "''"}`, `format.quote "''" must be one character`},
		{"quote is delimiter", valid, csvFormat, `format: {type: csv, quote: ","}`, "format.quote \",\" cannot be the delimiter"},
		{"quote line break", valid, csvFormat, `format: {type: csv, quote: "\n"}`, "cannot be a line break"},
		{"delimiter line break", valid, csvFormat, `format: {type: csv, delimiter: "\n"}`, "cannot be a line break"},
		{"escape without quote", valid, csvFormat, `format: {type: csv, quote: "", escape: "\\"}`, "format.escape applies only with a format.quote"},
		{"long escape", valid, csvFormat, `format: {type: csv, escape: "\\\\"}`, "format.escape \"\\\\\\\\\" must be one character"},
		{"escape is delimiter", valid, csvFormat, `format: {type: csv, escape: ","}`, "cannot be a line break or the delimiter"},
		{"escape is quote", valid, csvFormat, `format: {type: csv, escape: "\""}`, "is the quote; leave escape out"},
		{"comment is delimiter", valid, csvFormat, `format: {type: csv, comment: ","}`, "format.comment \",\" cannot be the same as format.delimiter"},
		{"comment is quote", valid, csvFormat, `format: {type: csv, comment: "\""}`, "cannot be the same as format.quote"},
		{"comment is escape", valid, csvFormat, `format: {type: csv, comment: "\\", escape: "\\"}`, "cannot be the same as format.escape"},
		{"comment space", valid, csvFormat, `format: {type: csv, comment: " "}`, "cannot be white space"},
		{"long comment", valid, csvFormat, `format: {type: csv, comment: "//"}`, "format.comment \"//\" must be one character"},
		{"negative skip", valid, csvFormat, `format: {type: csv, skip_lines: -1}`, "format.skip_lines must be 0 or more"},
		{"index with header", valid, "{name: temp_c, type: float}", "{name: temp_c, type: float, index: 2}", `columns[2] "temp_c": index applies only with format.header: false`},
		{"start on csv", valid, "{name: temp_c, type: float}", "{name: temp_c, type: float, start: 2, width: 1}", `columns[2] "temp_c": start and width apply only to format.type fixed`},
		{"index missing", positional, "{name: result, index: 3, type: float}", "{name: result, type: float}", `columns[1] "result": index (1-based field number) is required`},
		{"index twice", positional, "{name: result, index: 3, type: float}", "{name: result, index: 1, type: float}", `columns[1] "result": index 1 is already taken by column "lab_id"`},
		{"source without header", positional, "{name: result, index: 3, type: float}", "{name: result, index: 3, source: R, type: float}", "use index"},
		{"drift without header", positional, "columns:", "drift: reject\ncolumns:", "no named fields to drift"},
		{"ignore without header", positional, "columns:", "ignore: [x]\ncolumns:", "no field names to ignore"},
		{"fixed start missing", fixed, "{name: result, start: 9, width: 6, type: float}", "{name: result, width: 6, type: float}", `columns[1] "result": start (1-based rune position) is required`},
		{"fixed width missing", fixed, "{name: result, start: 9, width: 6, type: float}", "{name: result, start: 9, type: float}", `columns[1] "result": width (runes) is required`},
		{"fixed index", fixed, "{name: result, start: 9, width: 6, type: float}", "{name: result, start: 9, width: 6, index: 2, type: float}", `columns[1] "result": index applies only to csv`},
		{"fixed source", fixed, "{name: result, start: 9, width: 6, type: float}", "{name: result, start: 9, width: 6, source: R, type: float}", `columns[1] "result": source does not apply to fixed width`},
		{"fixed delimiter", fixed, `format: {type: fixed, skip_lines: 1, comment: "*"}`, `format: {type: fixed, delimiter: ";"}`, "apply only to csv"},
		{"fixed header", fixed, `format: {type: fixed, skip_lines: 1, comment: "*"}`, `format: {type: fixed, header: true}`, "fixed-width files have no header line"},
		{"xml comment", valid, csvFormat, `format: {type: xml, record: Vital, comment: "#"}`, "do not apply to xml"},
		{"bad folder", valid, `match: {glob: "*_vitals_*.csv*"}`, `match: {glob: "*.csv", folder: "labs/["}`, `match.folder "labs/["`},
		{"absolute folder", valid, `match: {glob: "*_vitals_*.csv*"}`, `match: {glob: "*.csv", folder: "/labs"}`, "must be a relative, slash-separated path"},
		{"bad sniff", valid, `match: {glob: "*_vitals_*.csv*"}`, `match: {glob: "*.csv", sniff: "^MSH("}`, `match.sniff "^MSH("`},
		{"unknown drift", valid, "keys: [vital_id]", "keys: [vital_id]\ndrift: keep", `drift "keep" is not a policy`},
		{"ignore a source", valid, "keys: [vital_id]", "keys: [vital_id]\nignore: [hr]", `ignore[0]: "hr" is the source of columns[1] "heart_rate"`},
		{"ignore empty", valid, "keys: [vital_id]", "keys: [vital_id]\nignore: [\" \"]", "ignore[0]: empty field name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(tt.doc, tt.from, tt.to, 1)
			if doc == tt.doc {
				t.Fatalf("test edit %q did not apply", tt.from)
			}
			_, err := feed.Parse([]byte(doc))
			if !errors.Is(err, feed.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	d, err := feed.Parse([]byte(strings.Replace(valid, `match: {glob: "*_vitals_*.csv*"}`, `match: {glob: "*.csv", folder: "labs/**", sniff: "^vital_id,"}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	head := func(text string) func(string) (string, error) {
		return func(enc string) (string, error) { return text, nil }
	}
	tests := []struct {
		dir, base, text string
		want            bool
	}{
		{"labs", "a.csv", "vital_id,HR\n", true},
		{"labs/2024/01", "a.csv", "vital_id,HR\n", true},
		{"", "a.csv", "vital_id,HR\n", false},
		{"vitals", "a.csv", "vital_id,HR\n", false},
		{"labsx", "a.csv", "vital_id,HR\n", false},
		{"labs", "a.txt", "vital_id,HR\n", false},
		{"labs", "a.csv", "MSH|^~\\&|\n", false},
	}
	for _, tt := range tests {
		got, err := d.Accepts(tt.dir, tt.base, head(tt.text))
		if err != nil || got != tt.want {
			t.Errorf("Accepts(%q, %q, %q) = %v, %v; want %v", tt.dir, tt.base, tt.text, got, err, tt.want)
		}
	}
	boom := errors.New("boom")
	if _, err := d.Accepts("labs", "a.csv", func(string) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Errorf("head error: %v", err)
	}
	d.Match.Folder = "labs/*"
	for dir, want := range map[string]bool{"labs/a": true, "labs": false, "labs/a/b": false} {
		if d.MatchDir(dir) != want {
			t.Errorf("folder labs/*: MatchDir(%q) = %v", dir, !want)
		}
	}
	d.Match.Folder = ""
	if !d.MatchDir("any/where") {
		t.Error("empty folder must match any directory")
	}
}

func TestAddedColumnName(t *testing.T) {
	for in, want := range map[string]string{
		"Patient ID":            "patient_id",
		"Address/@zip":          "address_zip",
		"2nd Phone":             "f_2nd_phone",
		"  __Notes__ ":          "notes",
		"Émis":                  "mis",
		"###":                   "f_",
		strings.Repeat("a", 70): strings.Repeat("a", 63),
	} {
		if got := feed.AddedColumnName(in); got != want {
			t.Errorf("AddedColumnName(%q) = %q, want %q", in, got, want)
		}
	}
}
