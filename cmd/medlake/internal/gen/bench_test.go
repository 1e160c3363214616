package gen

import (
	"context"
	"testing"
)

// BenchmarkRun measures generation speed on the default size distribution, one worker.
// Reported: compressed MB/s of archives written and rows/s.
func BenchmarkRun(b *testing.B) {
	for _, format := range []string{FormatCSV, FormatTXT, FormatXML} {
		b.Run(format, func(b *testing.B) {
			var bytes, rows int64
			for b.Loop() {
				o := DefaultOptions()
				o.Out = b.TempDir()
				o.Facilities = 2
				o.FilesPerFacility = 8
				o.Formats = []string{format}
				o.Workers = 1
				m, err := Run(context.Background(), o, nil)
				if err != nil {
					b.Fatal(err)
				}
				bytes += m.Bytes
				rows += m.Rows
			}
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(bytes)/1e6/sec, "MB/s")
			b.ReportMetric(float64(rows)/sec, "rows/s")
		})
	}
}
