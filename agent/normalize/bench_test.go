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
	def := loadDef(b, "testdata/cases/types/feed.yaml")
	var buf bytes.Buffer
	buf.WriteString("lab_id,Patient ID,result_value,count,abnormal,collected_on,collected_at\n")
	const rows = 50000
	for i := range rows {
		fmt.Fprintf(&buf, "L%08d,P%06d,%d.%02d,%d,%t,2024-%02d-%02d,2024-01-02 03:%02d:%02d\n",
			i, i%100000, i%500, i%100, i%7, i%3 == 0, i%12+1, i%28+1, i%60, i%60)
	}
	n, err := New(def, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		st, err := n.Run(context.Background(), bytes.NewReader(buf.Bytes()), "bench.csv",
			func(arrow.RecordBatch) error { return nil }, func(r Reject) error { return fmt.Errorf("reject: %+v", r) })
		if err != nil || st.Accepted != rows {
			b.Fatalf("Run = %+v, %v", st, err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
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
	var buf bytes.Buffer
	buf.WriteString("lab_id,Patient ID,result_value,count,abnormal,collected_on,collected_at\n")
	const rows = 50000
	for i := range rows {
		fmt.Fprintf(&buf, "L%08d,'P%06d',%d.%02d,%d,%t,2024-%02d-%02d,2024-01-02 03:%02d:%02d\n",
			i, i%100000, i%500, i%100, i%7, i%3 == 0, i%12+1, i%28+1, i%60, i%60)
	}
	benchRun(b, def, buf.Bytes(), rows)
}

func benchRun(b *testing.B, def *feed.Definition, input []byte, rows int) {
	n, err := New(def, Options{})
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
