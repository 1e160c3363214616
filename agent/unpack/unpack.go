package unpack

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/flate"
)

// Errors returned (wrapped, with the file and entry named) by Walk. Every failure that is
// a property of the file rather than of the machine wraps one of them, so the caller can
// quarantine the file with a reason; use errors.Is.
var (
	// ErrCorrupt: the archive or an entry cannot be decoded (bad header, checksum
	// mismatch, truncation, duplicate entry names).
	ErrCorrupt = errors.New("corrupt or truncated archive")
	// ErrBomb: an entry or the archive expands beyond Limits (ratio, size, entry count).
	ErrBomb = errors.New("archive exceeds expansion limits")
	// ErrTraversal: an entry name is absolute, climbs out with "..", names a drive or
	// otherwise could escape a directory if extracted.
	ErrTraversal = errors.New("unsafe entry name")
	// ErrEncrypted: a zip entry is encrypted (ZipCrypto or WinZip AES) and
	// Limits.Passwords offers no candidate; the file must wait for a password, not be
	// dropped.
	ErrEncrypted = errors.New("encrypted entry needs a password")
	// ErrWrongPassword: a zip entry is encrypted and none of the candidate passwords
	// passes its password check. The error names the file and entry, never a password.
	ErrWrongPassword = errors.New("wrong password for encrypted entry")
	// ErrUnsupported: a valid archive uses a feature unpack cannot decode (for example an
	// unknown zip compression method).
	ErrUnsupported = errors.New("unsupported archive feature")
	// ErrTooDeep: an archive is nested deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("archive nested too deeply")
)

// sentinels lists the errors that classify a file, so wrapped ones pass through nested
// readers unchanged instead of being re-wrapped as ErrCorrupt.
var sentinels = [...]error{ErrCorrupt, ErrBomb, ErrTraversal, ErrEncrypted, ErrWrongPassword, ErrUnsupported, ErrTooDeep}

// Sentinels returns the errors that classify a file (see above), for callers that must
// tell a bad file from a failing machine.
func Sentinels() []error { return append([]error(nil), sentinels[:]...) }

// Limits bounds what Walk will expand. Zero fields take the Default values.
type Limits struct {
	// MaxRatio is the largest accepted uncompressed:compressed ratio of one zip entry or
	// one gzip stream (a tar.gz is measured as one stream). Default 200.
	MaxRatio int64
	// RatioGrace is how many uncompressed bytes an entry may produce before MaxRatio is
	// enforced, so tiny highly repetitive files are not flagged. Default 1 MiB.
	RatioGrace int64
	// MaxEntrySize is the largest uncompressed entry. Default 2 GiB.
	MaxEntrySize int64
	// MaxArchiveSize is the largest total of uncompressed entry bytes from one source
	// file, nested entries included. Default 8 GiB.
	MaxArchiveSize int64
	// MaxEntries is the most entries (including skipped ones) one source file may hold.
	// Default 100000.
	MaxEntries int
	// MaxDepth is how many archive levels are opened: 1 opens the source archive only,
	// 2 also opens archives inside it. Default 2.
	MaxDepth int
	// MemStage is the largest nested zip held in memory; bigger ones are staged in a
	// temporary file (zip needs random access). Default 8 MiB.
	MemStage int64
	// TempDir receives staged nested zips ("medlake-unpack-*", mode 0600, removed after
	// use). They hold patient data: point it at the agent's own state directory and
	// clear leftovers at start-up. Default os.TempDir().
	TempDir string
	// Passwords, when set, returns the candidate passwords for an encrypted entry of a
	// zip archive: archive is the base name of the zip (the innermost one when nested),
	// entry the base name of the encrypted entry. Each candidate is tried in order; none
	// gives ErrEncrypted, none fitting gives ErrWrongPassword. An error from Passwords
	// stops the walk and is returned as is (it is not a property of the file).
	// Decrypted output is held to the same limits as any other entry.
	Passwords func(archive, entry string) ([]string, error)
}

// Default limits.
const (
	DefaultMaxRatio       = 200
	DefaultRatioGrace     = 1 << 20
	DefaultMaxEntrySize   = 2 << 30
	DefaultMaxArchiveSize = 8 << 30
	DefaultMaxEntries     = 100000
	DefaultMaxDepth       = 2
	DefaultMemStage       = 8 << 20
)

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	if l.RatioGrace <= 0 {
		l.RatioGrace = DefaultRatioGrace
	}
	if l.MaxEntrySize <= 0 {
		l.MaxEntrySize = DefaultMaxEntrySize
	}
	if l.MaxArchiveSize <= 0 {
		l.MaxArchiveSize = DefaultMaxArchiveSize
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MemStage <= 0 {
		l.MemStage = DefaultMemStage
	}
	if l.TempDir == "" {
		l.TempDir = os.TempDir()
	}
	return l
}

// Entry is one unit of data found in a source file.
type Entry struct {
	// Name is the chain of names from the source file's base name to the entry, joined by
	// "!": "export.zip!labs/lab_results.csv", "x.csv.gz!x.csv", "x.csv" for a plain file.
	// It is what rows carry in their _source_file column.
	Name string
	// Size is the uncompressed size the archive declares, or -1 when unknown (gzip).
	Size int64
	// Reader streams the entry's bytes. It is valid only during the callback and is nil
	// when Skip is set. Read errors wrap the sentinels above; an entry's checksum is
	// verified when Reader is read to io.EOF.
	Reader io.Reader
	// Skip, when not empty, says why this entry carries no data (a symbolic link, device
	// or other non-regular entry). The caller must record it: it is not silently dropped.
	Skip string

	base string // base name of the innermost member; Name may hold "!" inside members
}

// BaseName is the base name of the innermost entry, the name feeds match against.
func (e Entry) BaseName() string {
	if e.base != "" {
		return e.base
	}
	return baseName(e.Name)
}

// baseName is the base name of a member name, whichever slash the archiver used.
func baseName(member string) string {
	return path.Base(strings.ReplaceAll(member, `\`, "/"))
}

// Walk calls fn for every entry of the file at path, in archive order. Directories are
// passed over; nested archives (by name: .zip, .gz, .tgz, .tar.gz, .tar) are opened up to
// lim.MaxDepth. An error from fn stops the walk and is returned as is. A limit or decoding
// failure stops it with an error wrapping a sentinel, even if fn ignored the read error;
// entries already passed to fn stay passed, so callers treat the file as a whole and
// discard partial output on error.
func Walk(ctx context.Context, path string, lim Limits, fn func(Entry) error) error {
	w := &walker{ctx: ctx, lim: lim.withDefaults(), fn: fn}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	base := filepath.Base(path)
	switch k := kindOf(base); k {
	case kindPlain:
		if err := w.count(base); err != nil {
			return err
		}
		g := w.newGuard(base, f, false, nil)
		g.maxBytes = -1 // a plain file is what it is; limits guard expansion only
		return w.emit(Entry{Name: base, Size: st.Size(), Reader: g, base: base}, g)
	case kindZip:
		if st.Size() <= w.lim.MemStage {
			// Most exports are small: read once instead of one read per entry header and
			// entry, which for an archive of hundreds of one-record files is most of the
			// cost of unpacking it.
			data := make([]byte, st.Size())
			if _, err := io.ReadFull(f, data); err != nil {
				return fmt.Errorf("reading %s: %w", path, err)
			}
			return w.zip(base, base, bytes.NewReader(data), st.Size(), 1)
		}
		return w.zip(base, base, f, st.Size(), 1)
	default:
		return w.stream(k, base, base, f, 1)
	}
}

// HashFile returns the hex sha256 and size of the file at path: the file's identity in
// the state store and the batch header's SourceSHA256. It opens the file read-only.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("opening %s for hashing: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

type kind int

const (
	kindPlain kind = iota
	kindGzip
	kindZip
	kindTar
	kindTarGz
)

func kindOf(name string) kind {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return kindTarGz
	case strings.HasSuffix(n, ".gz"):
		return kindGzip
	case strings.HasSuffix(n, ".zip"):
		return kindZip
	case strings.HasSuffix(n, ".tar"):
		return kindTar
	}
	return kindPlain
}

// walker holds the state of one Walk; it is used by one goroutine.
type walker struct {
	ctx     context.Context
	lim     Limits
	fn      func(Entry) error
	total   int64 // leaf bytes produced, against MaxArchiveSize
	entries int   // entries seen, against MaxEntries
	// inflaters holds deflate readers free for the next zip entry: an archive of
	// hundreds of small entries would otherwise set one up, with its buffers, for each.
	inflaters []*inflater
}

// inflater decompresses one deflated zip entry at a time; Close makes it free again.
type inflater struct {
	w    *walker
	fr   io.ReadCloser // a flate.Resetter
	br   *bufio.Reader // the compressed bytes, read ahead for fr
	free bool
}

// inflate is the zip readers' deflate decompressor: a free inflater reset onto r.
func (w *walker) inflate(r io.Reader) io.ReadCloser {
	if n := len(w.inflaters); n > 0 {
		f := w.inflaters[n-1]
		w.inflaters = w.inflaters[:n-1]
		f.free = false
		f.br.Reset(r)
		if err := f.fr.(flate.Resetter).Reset(f.br, nil); err == nil {
			return f
		}
	}
	f := &inflater{w: w, br: bufio.NewReaderSize(r, 4096)}
	f.fr = flate.NewReader(f.br)
	return f
}

func (f *inflater) Read(p []byte) (int, error) { return f.fr.Read(p) }

// Close frees f for the next entry; a second Close does nothing.
func (f *inflater) Close() error {
	if !f.free {
		f.free = true
		f.br.Reset(nil)
		f.w.inflaters = append(f.w.inflaters, f)
	}
	return nil
}

func (w *walker) count(name string) error {
	w.entries++
	if w.entries > w.lim.MaxEntries {
		return fmt.Errorf("%s: more than %d entries: %w", name, w.lim.MaxEntries, ErrBomb)
	}
	return nil
}

// emit hands a leaf entry to fn and reports a fatal read error fn may have swallowed.
func (w *walker) emit(e Entry, g *guard) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.fn(e); err != nil {
		return err
	}
	if g != nil && g.err != nil {
		return g.err
	}
	return nil
}

// entry dispatches one archive member: nested archives are opened, others emitted.
func (w *walker) entry(chain, inner string, r io.Reader, size int64, ratioBase func() int64, depth int) error {
	base := baseName(inner)
	k := kindOf(base)
	if k == kindPlain {
		g := w.newGuard(chain, r, true, ratioBase)
		return w.emit(Entry{Name: chain, Size: size, Reader: g, base: base}, g)
	}
	if depth >= w.lim.MaxDepth {
		return fmt.Errorf("%s: archive inside %d archive levels: %w", chain, depth, ErrTooDeep)
	}
	g := w.newGuard(chain, r, false, ratioBase)
	if k == kindZip {
		ra, n, cleanup, err := w.stage(chain, g)
		if err != nil {
			return err
		}
		defer cleanup()
		return w.zip(chain, base, ra, n, depth+1)
	}
	if err := w.stream(k, chain, base, g, depth+1); err != nil {
		return err
	}
	return g.err
}

// stream walks a gzip, tar or tar.gz stream named chain (base name base) at the given depth.
func (w *walker) stream(k kind, chain, base string, r io.Reader, depth int) error {
	src := r
	var in *countingReader
	if k == kindGzip || k == kindTarGz {
		in = &countingReader{r: r}
		zr, err := gzip.NewReader(in)
		if err != nil {
			return w.classify(chain, err)
		}
		defer zr.Close()
		if k == kindGzip {
			inner := base[:len(base)-len(".gz")] // kindOf guarantees the suffix
			if inner == "" {
				inner = "data"
			}
			if err := w.count(chain); err != nil {
				return err
			}
			return w.entry(chain+"!"+inner, inner, zr, -1, in.count, depth)
		}
		// The tar inside is one gzip stream: its ratio is measured as a whole, each member
		// is bounded by MaxEntrySize below.
		g := w.newGuard(chain, zr, false, in.count)
		g.maxBytes = w.lim.MaxArchiveSize + w.lim.MaxArchiveSize/8 // tar headers and padding
		src = g
	}
	if err := w.tar(chain, src, depth); err != nil {
		return err
	}
	if in != nil {
		// Read past the tar trailer to the gzip footer, so a truncated or altered stream
		// fails its checksum instead of passing as a shorter archive.
		if _, err := io.Copy(io.Discard, src); err != nil {
			return w.classify(chain, err)
		}
	}
	return nil
}

func (w *walker) tar(chain string, r io.Reader, depth int) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return w.classify(chain, err)
		}
		name := chain + "!" + h.Name
		if err := checkName(h.Name); err != nil {
			return fmt.Errorf("%s: entry %q: %w", chain, h.Name, err)
		}
		switch h.Typeflag {
		case tar.TypeDir, tar.TypeXGlobalHeader:
			continue
		}
		if err := w.count(chain); err != nil {
			return err
		}
		if seen[h.Name] {
			return fmt.Errorf("%s: duplicate entry %q: %w", chain, h.Name, ErrCorrupt)
		}
		seen[h.Name] = true
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse: //nolint:staticcheck // old writers still emit TypeRegA
		case tar.TypeSymlink:
			if err := w.emit(Entry{Name: name, Size: -1, Skip: fmt.Sprintf("symbolic link to %q", h.Linkname), base: baseName(h.Name)}, nil); err != nil {
				return err
			}
			continue
		case tar.TypeLink:
			if err := w.emit(Entry{Name: name, Size: -1, Skip: fmt.Sprintf("hard link to %q", h.Linkname), base: baseName(h.Name)}, nil); err != nil {
				return err
			}
			continue
		default:
			if err := w.emit(Entry{Name: name, Size: -1, Skip: fmt.Sprintf("not a regular file (tar type %q)", h.Typeflag), base: baseName(h.Name)}, nil); err != nil {
				return err
			}
			continue
		}
		if h.Size > w.lim.MaxEntrySize {
			return fmt.Errorf("%s: declares %d bytes, limit %d: %w", name, h.Size, w.lim.MaxEntrySize, ErrBomb)
		}
		if err := w.entry(name, h.Name, tr, h.Size, nil, depth); err != nil {
			return err
		}
	}
}

// zip walks the zip archive in ra (size bytes) named chain (base name base) at the given depth.
func (w *walker) zip(chain, base string, ra io.ReaderAt, size int64, depth int) error {
	zr, err := zip.NewReader(ra, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // names are checked below
		return w.classify(chain, err)
	}
	zr.RegisterDecompressor(zip.Deflate, w.inflate)
	seen := make(map[string]bool, len(zr.File))
	for _, f := range zr.File {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		name := chain + "!" + f.Name
		if err := checkName(f.Name); err != nil {
			return fmt.Errorf("%s: entry %q: %w", chain, f.Name, err)
		}
		mode := f.Mode()
		if mode.IsDir() || strings.HasSuffix(f.Name, "/") {
			continue
		}
		if err := w.count(chain); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("%s: duplicate entry %q: %w", chain, f.Name, ErrCorrupt)
		}
		seen[f.Name] = true
		if !mode.IsRegular() {
			if err := w.emit(Entry{Name: name, Size: -1, Skip: fmt.Sprintf("not a regular file (mode %s)", mode), base: baseName(f.Name)}, nil); err != nil {
				return err
			}
			continue
		}
		usize, csize := f.UncompressedSize64, f.CompressedSize64
		if usize > uint64(w.lim.MaxEntrySize) {
			return fmt.Errorf("%s: declares %d bytes, limit %d: %w", name, usize, w.lim.MaxEntrySize, ErrBomb)
		}
		if usize > uint64(w.lim.RatioGrace) && usize/max(csize, 1) > uint64(w.lim.MaxRatio) {
			return fmt.Errorf("%s: declares ratio %d:1, limit %d:1: %w", name, usize/max(csize, 1), w.lim.MaxRatio, ErrBomb)
		}
		cs := int64(csize)
		if f.Flags&zipFlagEncrypted != 0 || f.Method == zipMethodAES {
			r, err := w.openEncrypted(base, name, f)
			if err != nil {
				return err
			}
			if err := w.entry(name, f.Name, r, int64(usize), func() int64 { return cs }, depth); err != nil {
				return err
			}
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return w.classify(name, err)
		}
		err = w.entry(name, f.Name, rc, int64(usize), func() int64 { return cs }, depth)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// stage copies a nested zip to memory or a temporary file for random access.
func (w *walker) stage(chain string, r io.Reader) (io.ReaderAt, int64, func(), error) {
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, w.lim.MemStage+1)
	if err != nil && err != io.EOF {
		return nil, 0, nil, w.classify(chain, err)
	}
	if n <= w.lim.MemStage {
		return bytes.NewReader(buf.Bytes()), n, func() {}, nil
	}
	f, err := os.CreateTemp(w.lim.TempDir, "medlake-unpack-*")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("staging nested archive %s: %w", chain, err)
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("staging nested archive %s: %w", chain, err)
	}
	m, err := io.Copy(f, r)
	if err != nil {
		cleanup()
		return nil, 0, nil, w.classify(chain, err)
	}
	return f, n + m, cleanup, nil
}

// classify wraps a decoding error as ErrCorrupt (or ErrUnsupported / ErrEncrypted) unless
// it already carries a sentinel or is the context's.
func (w *walker) classify(name string, err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return err
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, zip.ErrAlgorithm) {
		return fmt.Errorf("%s: %w: %w", name, ErrUnsupported, err)
	}
	return fmt.Errorf("%s: %w: %w", name, ErrCorrupt, err)
}

// checkName rejects entry names that would escape a directory if the entry were ever
// extracted, on Windows or Unix.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name: %w", ErrTraversal)
	}
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("NUL in name: %w", ErrTraversal)
	}
	n := strings.ReplaceAll(name, `\`, "/")
	if strings.HasPrefix(n, "/") {
		return fmt.Errorf("absolute path: %w", ErrTraversal)
	}
	if len(n) >= 2 && n[1] == ':' && ('a' <= n[0]|0x20 && n[0]|0x20 <= 'z') {
		return fmt.Errorf("drive letter: %w", ErrTraversal)
	}
	for _, seg := range strings.Split(n, "/") {
		if seg == ".." {
			return fmt.Errorf("parent directory: %w", ErrTraversal)
		}
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) count() int64 { return c.n }

// guard enforces limits on one decompressed stream and makes its errors name the entry.
type guard struct {
	w         *walker
	r         io.Reader
	name      string
	leaf      bool         // counts toward MaxArchiveSize
	maxBytes  int64        // -1: unbounded
	ratioBase func() int64 // compressed bytes consumed so far; nil: no ratio check
	n         int64
	err       error // sticky: once a limit or decoding error, always
}

func (w *walker) newGuard(name string, r io.Reader, leaf bool, ratioBase func() int64) *guard {
	return &guard{w: w, r: r, name: name, leaf: leaf, maxBytes: w.lim.MaxEntrySize, ratioBase: ratioBase}
}

func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if err := g.w.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	if g.leaf {
		g.w.total += int64(n)
		if g.w.total > g.w.lim.MaxArchiveSize {
			g.err = fmt.Errorf("%s: archive expands past %d bytes: %w", g.name, g.w.lim.MaxArchiveSize, ErrBomb)
			return 0, g.err
		}
	}
	if g.maxBytes >= 0 && g.n > g.maxBytes {
		g.err = fmt.Errorf("%s: expands past %d bytes: %w", g.name, g.maxBytes, ErrBomb)
		return 0, g.err
	}
	if g.ratioBase != nil && g.n > g.w.lim.RatioGrace {
		if c := max(g.ratioBase(), 1); g.n/c > g.w.lim.MaxRatio {
			g.err = fmt.Errorf("%s: expands more than %d:1: %w", g.name, g.w.lim.MaxRatio, ErrBomb)
			return 0, g.err
		}
	}
	if err != nil && err != io.EOF {
		g.err = g.w.classify(g.name, err)
		return n, g.err
	}
	return n, err
}
