package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strings"
	"time"

	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/io/gocloud/blobfs"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"
)

// Raw archives: every file an agent took is kept in the warehouse, next to the tables,
// under its SHA-256 (raw/sha256/<2 hex>/<sha256>), so history can be re-read with a
// newer feed definition (medlake replay). Content addressing makes storing idempotent:
// the same content sent twice, by two agents or after a lost ack, is one object.
//
// An object is complete or absent: on S3 a PUT (or multipart upload) becomes visible
// only when it completes, and the local warehouse writes a temporary file that is
// renamed into place on success; a write whose content does not hash to the name it is
// stored under is aborted. Chunks of a file sent in several messages wait under
// raw/parts/<sha256>/ until the last one arrives.
//
// medlake_archives indexes the stored files by feed, for replay to find them.

// ErrArchiveHash: stored or assembled content does not hash to its name.
var ErrArchiveHash = errors.New("archive content does not match its sha256")

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ArchiveStore reads and writes raw archives in the warehouse. Safe for concurrent use.
type ArchiveStore struct {
	bucket *blob.Bucket
	prefix string // key prefix of the warehouse inside the bucket, "" or ending in "/"
}

// Archives opens the warehouse's archive store. Close releases it.
func (c *Catalog) Archives(ctx context.Context) (*ArchiveStore, error) {
	w := c.warehouse
	if !strings.HasPrefix(w, "s3://") && !strings.HasPrefix(w, "s3a://") {
		b, err := fileblob.OpenBucket(w, &fileblob.Options{CreateDir: true, NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
		if err != nil {
			return nil, fmt.Errorf("opening local warehouse %s for archives: %w", w, err)
		}
		return &ArchiveStore{bucket: b}, nil
	}
	fsys, err := iceio.LoadFS(c.WithObjectStore(ctx), c.props, w)
	if err != nil {
		return nil, fmt.Errorf("opening warehouse %s for archives: %w", w, err)
	}
	bfs, ok := fsys.(*blobfs.FileIO)
	if !ok {
		return nil, fmt.Errorf("warehouse %s: unexpected IO %T for archives", w, fsys)
	}
	rest := w[strings.Index(w, "://")+3:]
	prefix := ""
	if _, p, ok := strings.Cut(rest, "/"); ok && strings.Trim(p, "/") != "" {
		prefix = strings.Trim(p, "/") + "/"
	}
	return &ArchiveStore{bucket: bfs.Bucket, prefix: prefix}, nil
}

// Close releases the store.
func (s *ArchiveStore) Close() error { return s.bucket.Close() }

// ArchiveKey is where the archive with this SHA-256 is kept, relative to the warehouse.
func ArchiveKey(sha string) string { return "raw/sha256/" + sha[:2] + "/" + sha }

func partKey(sha string, part, parts int) string {
	return fmt.Sprintf("raw/parts/%s/%06d-of-%06d", sha, part, parts)
}

// Has reports whether the archive sha is stored.
func (s *ArchiveStore) Has(ctx context.Context, sha string) (bool, error) {
	if !sha256RE.MatchString(sha) {
		return false, fmt.Errorf("archive %q: not a hex sha256", sha)
	}
	ok, err := s.bucket.Exists(ctx, s.prefix+ArchiveKey(sha))
	if err != nil {
		return false, fmt.Errorf("looking up archive %s: %w", sha, err)
	}
	return ok, nil
}

// Put stores r as the archive sha; the object appears only if r's content hashes to
// sha (and has size bytes, when size >= 0), else it wraps ErrArchiveHash and nothing is
// stored.
func (s *ArchiveStore) Put(ctx context.Context, sha string, size int64, r io.Reader) error {
	if !sha256RE.MatchString(sha) {
		return fmt.Errorf("archive %q: not a hex sha256", sha)
	}
	return s.write(ctx, ArchiveKey(sha), &verifying{r: r, h: sha256.New(), want: sha, size: size})
}

// PutPart stores chunk part of parts of the archive sha.
func (s *ArchiveStore) PutPart(ctx context.Context, sha string, part, parts int, data []byte) error {
	if !sha256RE.MatchString(sha) {
		return fmt.Errorf("archive %q: not a hex sha256", sha)
	}
	return s.write(ctx, partKey(sha, part, parts), strings.NewReader(string(data)))
}

// Assemble stores the archive sha from its parts when all of them are present, and then
// removes them. It reports whether the archive is stored.
func (s *ArchiveStore) Assemble(ctx context.Context, sha string, parts int, size int64) (bool, error) {
	for p := 1; p <= parts; p++ {
		ok, err := s.bucket.Exists(ctx, s.prefix+partKey(sha, p, parts))
		if err != nil {
			return false, fmt.Errorf("looking up part %d of archive %s: %w", p, sha, err)
		}
		if !ok {
			return false, nil
		}
	}
	// The parts are read one after another into the upload by a copier that this call
	// owns: it stops it (cancelling its reads, closing the pipe) and waits for it
	// before returning, whatever the upload did.
	rctx, stopReads := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		pw.CloseWithError(s.copyParts(rctx, pw, sha, parts))
	}()
	err := s.Put(ctx, sha, size, pr)
	stopReads()
	pr.CloseWithError(io.ErrClosedPipe) // ends a copier blocked writing if Put stopped early
	<-copied
	if err != nil {
		// A part deleted by a concurrent assembly: the archive is there, or soon is.
		if ok, herr := s.Has(ctx, sha); herr == nil && ok {
			return true, nil
		}
		return false, err
	}
	for p := 1; p <= parts; p++ {
		// Leftover parts cost space, not correctness; a later assembly retries them.
		_ = s.bucket.Delete(ctx, s.prefix+partKey(sha, p, parts))
	}
	return true, nil
}

// copyParts writes the parts of archive sha to w in order; nil when all were copied.
func (s *ArchiveStore) copyParts(ctx context.Context, w io.Writer, sha string, parts int) error {
	for p := 1; p <= parts; p++ {
		r, err := s.bucket.NewReader(ctx, s.prefix+partKey(sha, p, parts), nil)
		if err != nil {
			return fmt.Errorf("opening part %d of archive %s: %w", p, sha, err)
		}
		_, err = io.Copy(w, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("reading part %d of archive %s: %w", p, sha, err)
		}
	}
	return nil
}

// Open returns a reader of the archive sha that fails with ErrArchiveHash at its end if
// the content does not hash to sha.
func (s *ArchiveStore) Open(ctx context.Context, sha string) (io.ReadCloser, error) {
	if !sha256RE.MatchString(sha) {
		return nil, fmt.Errorf("archive %q: not a hex sha256", sha)
	}
	r, err := s.bucket.NewReader(ctx, s.prefix+ArchiveKey(sha), nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil, fmt.Errorf("archive %s is not in the warehouse: %w", sha, err)
		}
		return nil, fmt.Errorf("opening archive %s: %w", sha, err)
	}
	return readCloser{&verifying{r: r, h: sha256.New(), want: sha, size: -1}, r}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// write copies r to key; the object exists afterwards only if the copy and the
// upload succeeded (the writer's context is cancelled otherwise, which aborts it).
func (s *ArchiveStore) write(ctx context.Context, key string, r io.Reader) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.bucket.NewWriter(wctx, s.prefix+key, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return fmt.Errorf("creating %s in the warehouse: %w", key, err)
	}
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		w.Close()
		return fmt.Errorf("writing %s to the warehouse: %w", key, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("storing %s in the warehouse: %w", key, err)
	}
	return nil
}

// verifying passes r through and, at its end, returns ErrArchiveHash instead of io.EOF
// when the content read does not hash to want or has not size bytes.
type verifying struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	want string
	size int64
}

func (v *verifying) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("archive %s: content hashes to %s: %w", v.want, got, ErrArchiveHash)
		}
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("archive %s: %d bytes, want %d: %w", v.want, v.n, v.size, ErrArchiveHash)
		}
	}
	return n, err
}

// ArchiveEntry is one archive in the index, for one feed its entries matched.
type ArchiveEntry struct {
	Feed        string
	SHA256      string
	Tenant      string
	Facility    string
	Agent       string
	SourceFile  string // base name at the facility
	SourceDir   string // folder relative to the watched folder, "" at its root
	Size        int64
	SourceMtime time.Time
	ArchivedAt  time.Time
}

// RecordArchive indexes a stored archive under each of its feeds; an entry already
// there is kept as it was (the first copy stored wins).
func (c *Catalog) RecordArchive(ctx context.Context, entries []ArchiveEntry) error {
	p := c.placeholder
	for _, e := range entries {
		_, err := c.db.ExecContext(ctx, `INSERT INTO medlake_archives (feed, sha256, tenant, facility, agent, source_file, source_dir, size_bytes, source_mtime, archived_at) VALUES (`+
			p(1)+`, `+p(2)+`, `+p(3)+`, `+p(4)+`, `+p(5)+`, `+p(6)+`, `+p(7)+`, `+p(8)+`, `+p(9)+`, `+p(10)+`) ON CONFLICT (feed, sha256) DO NOTHING`,
			e.Feed, e.SHA256, e.Tenant, e.Facility, e.Agent, e.SourceFile, e.SourceDir, e.Size, e.SourceMtime.UTC().UnixMicro(), e.ArchivedAt.UTC().UnixMicro())
		if err != nil {
			return fmt.Errorf("indexing archive %s of feed %s: %w", e.SHA256, e.Feed, err)
		}
	}
	return nil
}

// ArchivesOf lists the archives indexed under feed and archived in [since, until)
// (until zero: no end), oldest first.
func (c *Catalog) ArchivesOf(ctx context.Context, feed string, since, until time.Time) ([]ArchiveEntry, error) {
	p := c.placeholder
	q := `SELECT feed, sha256, tenant, facility, agent, source_file, source_dir, size_bytes, source_mtime, archived_at FROM medlake_archives WHERE feed = ` +
		p(1) + ` AND archived_at >= ` + p(2)
	args := []any{feed, since.UTC().UnixMicro()}
	if !until.IsZero() {
		q += ` AND archived_at < ` + p(3)
		args = append(args, until.UTC().UnixMicro())
	}
	q += ` ORDER BY archived_at, sha256`
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing archives of feed %s: %w", feed, err)
	}
	defer rows.Close()
	var out []ArchiveEntry
	for rows.Next() {
		var e ArchiveEntry
		var mt, at int64
		if err := rows.Scan(&e.Feed, &e.SHA256, &e.Tenant, &e.Facility, &e.Agent, &e.SourceFile, &e.SourceDir, &e.Size, &mt, &at); err != nil {
			return nil, fmt.Errorf("reading archives of feed %s: %w", feed, err)
		}
		e.SourceMtime, e.ArchivedAt = time.UnixMicro(mt).UTC(), time.UnixMicro(at).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing archives of feed %s: %w", feed, err)
	}
	return out, nil
}
