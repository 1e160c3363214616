package normalize

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/protocol/feed"
)

// BenchmarkNormalize measures a seed-shaped lab file (8 typed columns) at the default
// batch size: go test -bench Normalize -benchmem ./agent/normalize
func BenchmarkNormalize(b *testing.B) {
	benchRun(b, loadDef(b, "testdata/cases/types/feed.yaml"), labCSV(50000, ""), 50000)
}

// labCSV is a lab file of rows rows with its header; patient ids are quoted with quote.
func labCSV(rows int, quote string) []byte {
	var buf bytes.Buffer
	buf.WriteString("lab_id,Patient ID,result_value,count,abnormal,collected_on,collected_at\n")
	for i := range rows {
		fmt.Fprintf(&buf, "L%08d,%sP%06d%s,%d.%02d,%d,%t,2024-%02d-%02d,2024-01-02 03:%02d:%02d\n",
			i, quote, i%100000, quote, i%500, i%100, i%7, i%3 == 0, i%12+1, i%28+1, i%60, i%60)
	}
	return buf.Bytes()
}

// BenchmarkXMLOneRecordFiles measures an archive's worth of one-record XML files (the
// customer's XML exports hold 20–300 per zip) going into one shared batch:
// go test -bench XMLOneRecord -benchmem ./agent/normalize
func BenchmarkXMLOneRecordFiles(b *testing.B) {
	def := parseDef(b, xmlFeed)
	const files = 300
	docs := make([][]byte, files)
	for i := range docs {
		docs[i] = fmt.Appendf(nil, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Visits>\n  <Visit id=\"V%08d\">\n    <Age>%d</Age>\n    <Note>note &amp; text %d</Note>\n  </Visit>\n</Visits>\n", i, i%90, i)
	}
	n, err := New(def, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		bt := n.NewBatcher(func(arrow.RecordBatch) error { return nil })
		for i, d := range docs {
			st, err := n.RunInto(context.Background(), bytes.NewReader(d), fmt.Sprintf("a.zip!%d.xml", i), bt, func(r Reject) error { return fmt.Errorf("reject: %+v", r) })
			if err != nil || st.Accepted != 1 {
				b.Fatalf("Run = %+v, %v", st, err)
			}
		}
		if err := bt.Flush(); err != nil {
			b.Fatal(err)
		}
		bt.Release()
	}
	b.ReportMetric(float64(files*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkNormalizeRowStage measures the row stage's cost: the same file shape with
// joined sources, transforms (trim, upper, lookup, replace, hash) and checks on most
// columns: go test -bench RowStage -benchmem ./agent/normalize
func BenchmarkNormalizeRowStage(b *testing.B) {
	def, err := feed.Parse([]byte(`
name: labs
version: 1
table: labs
match: {glob: "*"}
format: {type: csv}
lookups:
  flags: {"true": "abnormal", "false": "normal"}
columns:
  - {name: lab_id, type: string, required: true, transforms: [trim, upper], pattern: '^L\d{8}$'}
  - {name: patient_hash, source: Patient ID, type: string, transforms: [{hash: {secret: phi_key}}]}
  - {name: result_value, type: decimal, precision: 8, scale: 2, min: 0, max: 1000}
  - {name: count, type: int, min: 0, max: 10}
  - {name: abnormal, type: string, transforms: [{lookup: flags}]}
  - {name: collected_on, type: date, min: 2000-01-01}
  - {name: collected_at, type: timestamp, timezone: America/Chicago}
  - {name: lab_patient, type: string, sources: [lab_id, Patient ID], join: "/", transforms: [{replace: {pattern: '[^0-9/]', with: ""}}]}
`))
	if err != nil {
		b.Fatal(err)
	}
	benchRun(b, def, labCSV(50000, ""), 50000)
}

// BenchmarkNormalizeFixed measures a fixed-width roster (4 columns, 43 characters a
// line, accented names) at the default batch size:
// go test -bench NormalizeFixed -benchmem ./agent/normalize
func BenchmarkNormalizeFixed(b *testing.B) {
	def := loadDef(b, "testdata/cases/fixed/feed.yaml")
	var buf bytes.Buffer
	buf.WriteString("HDR 2024-01-02 PATIENTS\n")
	const rows = 50000
	names := []string{"José", "Zoë Brontë", "Müller", "Ann"}
	for i := range rows {
		fmt.Fprintf(&buf, "P%05d%-10s%04d%02d%02dnote%04d\n", i, names[i%len(names)], 1950+i%50, i%12+1, i%28+1, i%10000)
	}
	benchRun(b, def, buf.Bytes(), rows)
}

// BenchmarkNormalizeDelim measures the same lab file as BenchmarkNormalize read by the
// reader for custom dialects (single quotes with a backslash escape).
func BenchmarkNormalizeDelim(b *testing.B) {
	def := loadDef(b, "testdata/cases/types/feed.yaml")
	q := "'"
	def.Format.Quote, def.Format.Escape = &q, `\`
	benchRun(b, def, labCSV(50000, "'"), 50000)
}

func benchRun(b *testing.B, def *feed.Definition, input []byte, rows int) {
	n, err := New(def, Options{Secret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := n.Run(context.Background(), bytes.NewReader(input), "bench",
			func(arrow.RecordBatch) error { return nil }, func(r Reject) error { return fmt.Errorf("reject: %+v", r) })
		if err != nil || st.Accepted != int64(rows) {
			b.Fatalf("Run = %+v, %v", st, err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
