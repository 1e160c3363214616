package gen

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// sink is an archive file being written: it counts and hashes the bytes as they go out.
type sink struct {
	f  *os.File
	bw *bufio.Writer
	h  hash.Hash
	n  int64
}

func newSink(f *os.File) *sink {
	return &sink{f: f, bw: bufio.NewWriterSize(f, 256<<10), h: sha256.New()}
}

func (s *sink) Write(p []byte) (int, error) {
	s.h.Write(p)
	s.n += int64(len(p))
	return s.bw.Write(p)
}

func (s *sink) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

// counter counts bytes and drops them; it measures a compressed stream that is not kept.
type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// archiveWriter is one archive being filled entry by entry. size is the compressed size
// so far, exact after flush; flush costs a little compression, so callers flush only
// when an estimate says the target may be reached.
type archiveWriter interface {
	create(name string) (io.Writer, error)
	flush() error
	size() int64
	close() error
}

func newArchiveWriter(kind string, s *sink, tmpDir string, mtime time.Time) (archiveWriter, error) {
	switch kind {
	case ArchiveGzip:
		return &gzipArchive{s: s, mtime: mtime}, nil
	case ArchiveZip:
		z := &zipArchive{s: s, zw: zip.NewWriter(s), mtime: mtime}
		// One compressor reset per entry: a new flate.Writer allocates about 1 MB, which
		// dominated writing XML archives of hundreds of small entries.
		z.zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
			if z.cur == nil {
				fw, err := flate.NewWriter(w, flate.DefaultCompression)
				z.cur = fw
				return fw, err
			}
			z.cur.Reset(w)
			return z.cur, nil
		})
		return z, nil
	case ArchiveTarGz:
		gz, err := gzip.NewWriterLevel(s, gzip.DefaultCompression)
		if err != nil {
			return nil, err
		}
		gz.ModTime = mtime
		out := &counter{}
		probe, err := gzip.NewWriterLevel(out, gzip.DefaultCompression)
		if err != nil {
			return nil, err
		}
		return &tarArchive{s: s, gz: gz, tw: tar.NewWriter(gz), tmpDir: tmpDir, mtime: mtime, probe: probe, probeOut: out}, nil
	}
	return nil, fmt.Errorf("unknown archive kind %q", kind)
}

// gzipArchive is a single gzip member whose header names the file it holds.
type gzipArchive struct {
	s     *sink
	gz    *gzip.Writer
	mtime time.Time
}

func (a *gzipArchive) create(name string) (io.Writer, error) {
	if a.gz != nil {
		return nil, fmt.Errorf("gzip holds one file, cannot add %s", name)
	}
	gz, err := gzip.NewWriterLevel(a.s, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	gz.Name = name
	gz.ModTime = a.mtime
	a.gz = gz
	return gz, nil
}

func (a *gzipArchive) flush() error { return a.gz.Flush() }
func (a *gzipArchive) size() int64  { return a.s.n }
func (a *gzipArchive) close() error { return a.gz.Close() }

type zipArchive struct {
	s     *sink
	zw    *zip.Writer
	cur   *flate.Writer // the entries' compressor, reset for each; set by the registered compressor
	mtime time.Time
}

func (a *zipArchive) create(name string) (io.Writer, error) {
	return a.zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: a.mtime})
}

func (a *zipArchive) flush() error {
	if a.cur != nil {
		if err := a.cur.Flush(); err != nil {
			return err
		}
	}
	return a.zw.Flush()
}

func (a *zipArchive) size() int64  { return a.s.n }
func (a *zipArchive) close() error { return a.zw.Close() }

// tarArchive spools each entry to a temporary file, because a tar header carries the
// entry's size, and meanwhile compresses it into a discarded probe stream that predicts
// the archive's compressed size.
type tarArchive struct {
	s        *sink
	gz       *gzip.Writer
	tw       *tar.Writer
	tmpDir   string
	mtime    time.Time
	probe    *gzip.Writer
	probeOut *counter
	name     string
	tmp      *os.File
	tee      io.Writer
}

func (a *tarArchive) create(name string) (io.Writer, error) {
	if err := a.finishEntry(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(a.tmpDir, "tar-entry-*")
	if err != nil {
		return nil, fmt.Errorf("creating spool file for tar entry %s: %w", name, err)
	}
	a.name, a.tmp = name, f
	a.tee = io.MultiWriter(f, a.probe)
	return a.tee, nil
}

func (a *tarArchive) finishEntry() error {
	if a.tmp == nil {
		return nil
	}
	f := a.tmp
	a.tmp = nil
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("spooling tar entry %s: %w", a.name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spooling tar entry %s: %w", a.name, err)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: a.name, Size: n, Mode: 0o644, ModTime: a.mtime, Format: tar.FormatUSTAR}
	if err := a.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header for %s: %w", a.name, err)
	}
	if _, err := io.Copy(a.tw, f); err != nil {
		return fmt.Errorf("copying tar entry %s: %w", a.name, err)
	}
	return nil
}

func (a *tarArchive) flush() error { return a.probe.Flush() }

// size is the probe's compressed size; tar headers and padding add a few dozen bytes.
func (a *tarArchive) size() int64 { return a.probeOut.n }

func (a *tarArchive) close() error {
	if err := a.finishEntry(); err != nil {
		return err
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("closing tar stream: %w", err)
	}
	return a.gz.Close()
}
