package feed_test

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/protocol/feed"
)

const valid = `
name: vitals_csv
version: 2
table: vitals
match: {glob: "*_vitals_*.csv*"}
format: {type: csv, delimiter: ","}
partition_time: taken_at
keys: [vital_id]
columns:
  - {name: vital_id, type: string, required: true}
  - {name: heart_rate, source: "HR", type: int}
  - {name: temp_c, type: float}
  - {name: taken_at, type: timestamp, format: "2006-01-02 15:04:05"}
`

func TestParseValid(t *testing.T) {
	d, err := feed.Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "vitals_csv" || d.Version != 2 || d.Format.Comma() != ',' || !d.Format.HasHeader() {
		t.Errorf("parsed %+v", d)
	}
	if c, _ := d.Column("heart_rate"); c.SourceName() != "HR" {
		t.Errorf("source name = %q", c.SourceName())
	}
	if !d.Matches("f000001_vitals_000002.csv.gz") || d.Matches("f000001_labs_000002.csv.gz") {
		t.Error("glob matching is wrong")
	}
	bs := d.BatchSchema()
	if bs.NumFields() != 7 || bs.Field(4).Name != feed.ColRescued || bs.Field(5).Name != feed.ColSourceFile || bs.Field(6).Name != feed.ColRow || !arrow.TypeEqual(bs.Field(1).Type, arrow.PrimitiveTypes.Int64) {
		t.Errorf("batch schema = %s", bs)
	}
	ts := d.TableSchema()
	if ts.NumFields() != 7+len(feed.LineageFields()) || ts.Field(ts.NumFields()-1).Name != feed.ColIngestedAt {
		t.Errorf("table schema = %s", ts)
	}
	if v, _ := bs.Metadata().GetValue(feed.MetaFeed); v != "vitals_csv" {
		t.Errorf("schema metadata feed = %q", v)
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"unknown field", "version: 2", "version: 2\nsurprise: 1", "surprise"},
		{"bad name", "name: vitals_csv", "name: Vitals-CSV", "name must match"},
		{"bad type", `type: int}`, `type: integer}`, `unknown type "integer"`},
		{"missing glob", `match: {glob: "*_vitals_*.csv*"}`, `match: {}`, "match.glob is required"},
		{"key not a column", "keys: [vital_id]", "keys: [nope]", `keys: "nope"`},
		{"partition not time", "partition_time: taken_at", "partition_time: temp_c", "want date or timestamp"},
		{"unsupported format", `format: {type: csv, delimiter: ","}`, `format: {type: parquet}`, `format.type "parquet"`},
		{"xml without record", `format: {type: csv, delimiter: ","}`, `format: {type: xml}`, "format.record is required"},
		{"xml attribute record", `format: {type: csv, delimiter: ","}`, `format: {type: xml, record: "Vitals/@id"}`, "may only end a column's path"},
		{"xml with delimiter", `format: {type: csv, delimiter: ","}`, `format: {type: xml, record: Vital, delimiter: ","}`, "apply only to csv"},
		{"record on csv", `format: {type: csv, delimiter: ","}`, `format: {type: csv, record: Vital}`, "format.record applies only to xml"},
		{"unknown encoding", `format: {type: csv, delimiter: ","}`, `format: {type: csv, encoding: ebcdic}`, `format.encoding "ebcdic"`},
		{"long delimiter", `delimiter: ","`, `delimiter: ";;"`, "must be one character"},
		{"duplicate column", "{name: temp_c, type: float}", "{name: vital_id, type: float}", `duplicate column "vital_id"`},
		{"format on string", "{name: vital_id, type: string, required: true}", "{name: vital_id, type: string, format: x}", "format applies only"},
		{"version zero", "version: 2", "version: 0", "version must be 1 or more"},
		{"reserved table", "table: vitals", "table: medlake_rejects", "reserved for medlake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(valid, tt.from, tt.to, 1)
			if doc == valid {
				t.Fatalf("test edit %q did not apply", tt.from)
			}
			_, err := feed.Parse([]byte(doc))
			if !errors.Is(err, feed.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseXMLAndEncodings(t *testing.T) {
	doc := strings.Replace(valid, `format: {type: csv, delimiter: ","}`, `format: {type: xml, record: "Export/Vital", encoding: windows-1252}`, 1)
	doc = strings.Replace(doc, `source: "HR"`, `source: "Readings/@hr"`, 1)
	d, err := feed.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if d.Format.Type != feed.FormatXML || d.Format.Record != "Export/Vital" || d.Format.Encoding != feed.EncodingWindows1252 {
		t.Errorf("format = %+v", d.Format)
	}
	if _, err := feed.Parse([]byte(strings.Replace(doc, `source: "Readings/@hr"`, `source: "Readings/H R"`, 1))); err == nil ||
		!strings.Contains(err.Error(), `step "H R" is not an XML name`) {
		t.Errorf("bad XML source path: %v", err)
	}
	withSecret := strings.Replace(valid, `match: {glob: "*_vitals_*.csv*"}`, `match: {glob: "*_vitals_*.zip", password_secret: facility_zip}`, 1)
	if d, err := feed.Parse([]byte(withSecret)); err != nil || d.Match.PasswordSecret != "facility_zip" {
		t.Fatalf("password_secret: %+v, %v", d, err)
	}
}

func TestParseFSConflicts(t *testing.T) {
	other := strings.Replace(strings.Replace(valid, "name: vitals_csv", "name: vitals_txt", 1), "{name: temp_c, type: float}", "{name: temp_c, type: string}", 1)
	fsys := fstest.MapFS{
		"a.yaml":    {Data: []byte(valid)},
		"b.yml":     {Data: []byte(other)},
		"notes.txt": {Data: []byte("ignored")},
	}
	if _, err := feed.ParseFS(fsys); err == nil || !strings.Contains(err.Error(), `both write table "vitals"`) {
		t.Fatalf("ParseFS error = %v, want a table conflict", err)
	}
	fsys["b.yml"] = &fstest.MapFile{Data: []byte(valid)}
	if _, err := feed.ParseFS(fsys); err == nil || !strings.Contains(err.Error(), "already defined") {
		t.Fatalf("ParseFS error = %v, want a duplicate feed", err)
	}
	delete(fsys, "b.yml")
	defs, err := feed.ParseFS(fsys)
	if err != nil || len(defs) != 1 {
		t.Fatalf("ParseFS = %d defs, %v", len(defs), err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := feed.Parse(data)
		if err != nil {
			return
		}
		if d.Validate() != nil {
			t.Fatal("Parse returned a definition that does not validate")
		}
		d.TableSchema()
	})
}
