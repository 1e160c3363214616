package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
)

// BenchmarkParse measures the agent's per-file work (unpack, normalize, Arrow IPC zstd
// encode) on one goroutine, per export format, on generated seed-shaped archives:
//
//	go test -run '^$' -bench 'Parse/' -benchtime 3x ./cmd/medlake
//
// rows/s is wall-clock rows per second on one goroutine; rows/cpu-s divides by the CPU
// time the whole process used meanwhile (the garbage collector's on other threads
// included), which a loaded machine disturbs much less; run with -cpu 1 to keep the
// collector on the same core. peak-heap-MB is the most live heap seen while parsing.
func BenchmarkParse(b *testing.B) {
	for _, format := range []string{gen.FormatCSV, gen.FormatTXT, gen.FormatXML, gen.FormatDAT} {
		b.Run(format, func(b *testing.B) {
			o := gen.DefaultOptions()
			o.Out = b.TempDir()
			o.Formats = []string{format}
			o.Facilities, o.FilesPerFacility = 4, 10
			m, err := gen.Run(context.Background(), o, nil)
			if err != nil {
				b.Fatal(err)
			}
			var files []string
			var archiveBytes int64
			for _, f := range m.Files {
				files = append(files, filepath.Join(o.Out, filepath.FromSlash(f.Path)))
				archiveBytes += f.Bytes
			}
			runParse(b, filepath.Join(o.Out, "feeds"), files, m.Rows, archiveBytes)
		})
	}
}

// BenchmarkParseLarge measures memory on the largest inputs the agent must take: a
// 40 MB gzip archive, and a 1 GB plain CSV made by repeating that archive's rows.
// Live heap must stay near one batch whatever the file's size:
//
//	go test -run '^$' -bench ParseLarge -benchtime 1x ./cmd/medlake
func BenchmarkParseLarge(b *testing.B) {
	o := gen.DefaultOptions()
	o.Out = b.TempDir()
	o.Formats = []string{gen.FormatCSV}
	o.Facilities, o.FilesPerFacility, o.Large = 1, 1, 1
	m, err := gen.Run(context.Background(), o, nil)
	if err != nil {
		b.Fatal(err)
	}
	var large gen.File
	for _, f := range m.Files {
		if f.Large {
			large = f
		}
	}
	if !large.Large || large.Archive != gen.ArchiveGzip {
		b.Fatalf("no large gzip archive generated: %+v", m.Files)
	}
	archive := filepath.Join(o.Out, filepath.FromSlash(large.Path))
	b.Run("archive-40MB", func(b *testing.B) {
		runParse(b, filepath.Join(o.Out, "feeds"), []string{archive}, large.Rows, large.Bytes)
	})
	b.Run("csv-1GB", func(b *testing.B) {
		plain := filepath.Join(b.TempDir(), filepath.Base(archive[:len(archive)-len(".gz")]))
		rows, size := repeatCSV(b, archive, plain, 1<<30)
		runParse(b, filepath.Join(o.Out, "feeds"), []string{plain}, rows, size)
	})
}

func runParse(b *testing.B, feedsDir string, files []string, wantRows, inputBytes int64) {
	p, err := newFileParser(feedsDir)
	if err != nil {
		b.Fatal(err)
	}
	peak := sampleHeap(b)
	b.SetBytes(inputBytes)
	cpu0 := processCPU()
	for b.Loop() {
		p.rows = 0
		for _, f := range files {
			if err := p.parse(context.Background(), f); err != nil {
				b.Fatal(err)
			}
		}
		if p.rows != wantRows {
			b.Fatalf("parsed %d rows, want %d", p.rows, wantRows)
		}
	}
	cpu := processCPU() - cpu0
	b.ReportMetric(float64(wantRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	if cpu > 0 {
		b.ReportMetric(float64(wantRows)*float64(b.N)/cpu.Seconds(), "rows/cpu-s")
	}
	b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MB")
}

// sampleHeap tracks the live heap every 10 ms from now until the returned function is
// called, which reports the peak.
func sampleHeap(b *testing.B) func() uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var (
		mu   sync.Mutex
		peak uint64
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	read := func() {
		metrics.Read(sample)
		mu.Lock()
		peak = max(peak, sample[0].Value.Uint64())
		mu.Unlock()
	}
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				read()
			}
		}
	})
	var once sync.Once
	done := func() uint64 {
		once.Do(func() { close(stop); wg.Wait(); read() })
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
	b.Cleanup(func() { done() })
	return done
}

// repeatCSV writes dst: the header of the CSV in the gzip archive src, then its data rows
// repeated until dst holds at least size bytes. Repeated rows are fine for parsing: the
// agent's work per row does not depend on keys being distinct.
func repeatCSV(b *testing.B, src, dst string, size int64) (rows, written int64) {
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		b.Fatal(err)
	}
	nl := 0
	for nl < len(body) && body[nl] != '\n' {
		nl++
	}
	header, data := body[:nl+1], body[nl+1:]
	perCopy := int64(0)
	for _, c := range data {
		if c == '\n' {
			perCopy++
		}
	}
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	w.Write(header)
	written = int64(len(header))
	for written < size {
		w.Write(data)
		written += int64(len(data))
		rows += perCopy
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: %d bytes, %d rows", dst, written, rows)
	return rows, written
}
