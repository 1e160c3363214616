package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	icebergio "github.com/apache/iceberg-go/io"
	"golang.org/x/sync/errgroup"
)

// DefaultMaxBytes bounds the cache when Config.MaxBytes is zero.
const DefaultMaxBytes int64 = 10 << 30

// Config configures a Cache.
type Config struct {
	// Dir is the cache root; it holds objects/, index/ and tmp/.
	Dir string `yaml:"cache_dir"`
	// MaxBytes is the soft bound on the bytes held in objects/. Objects
	// pinned by a current view are never evicted, so the cache may exceed
	// it while they are needed. Default DefaultMaxBytes.
	MaxBytes int64 `yaml:"cache_max_bytes"`
}

// Object is a fetched data file. Path is an absolute local path that stays
// valid until the Object is released (and usually much longer).
type Object struct {
	Location string
	SHA256   string
	Path     string
	Size     int64
}

// ErrSizeMismatch means the fetched bytes do not match the size the table
// metadata recorded for the data file: the copy is refused, never served.
var ErrSizeMismatch = errors.New("data file size differs from table metadata")

// Cache is a local Parquet file cache.
//
// Concurrency: all methods are safe for concurrent use. Fetches of the same
// location are coalesced (one download, all callers wait for it); fetches of
// different locations run in parallel. mu guards every field below it; no
// I/O that can block on the network happens while mu is held (downloads run
// outside it, only renames/removes of local files run under it so that
// eviction and publication cannot interleave).
type Cache struct {
	dir      string
	maxBytes int64
	logger   *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	objects  map[string]*object    // sha -> object
	index    map[string]string     // location -> sha
	inflight map[string]*fetchCall // location -> running fetch
	total    int64                 // bytes in objects
}

type object struct {
	sha       string
	size      int64
	pins      int
	lastUsed  time.Time
	locations map[string]struct{}
}

type fetchCall struct {
	done chan struct{}
	obj  Object
	err  error
}

// New opens (creating if needed) the cache at cfg.Dir. It rebuilds the index
// from disk, removes leftovers of interrupted fetches and orphaned objects.
func New(cfg Config, logger *slog.Logger) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: cache_dir is empty")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving cache dir %s: %w", cfg.Dir, err)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	c := &Cache{
		dir:      dir,
		maxBytes: cfg.MaxBytes,
		logger:   logger.With("component", "query/cache"),
		now:      time.Now,
		objects:  map[string]*object{},
		index:    map[string]string{},
		inflight: map[string]*fetchCall{},
	}
	for _, d := range []string{c.objectsDir(), c.indexDir(), c.tmpDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("creating cache dir %s: %w", d, err)
		}
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir returns the absolute cache root (for DuckDB's allowed_directories).
func (c *Cache) Dir() string { return c.dir }

// ObjectsDir returns the absolute directory holding the cached objects.
func (c *Cache) ObjectsDir() string { return c.objectsDir() }

func (c *Cache) objectsDir() string { return filepath.Join(c.dir, "objects") }
func (c *Cache) indexDir() string   { return filepath.Join(c.dir, "index") }
func (c *Cache) tmpDir() string     { return filepath.Join(c.dir, "tmp") }

func (c *Cache) objectPath(sha string) string {
	return filepath.Join(c.objectsDir(), sha+".parquet")
}

func (c *Cache) indexPath(location string) string {
	h := sha256.Sum256([]byte(location))
	return filepath.Join(c.indexDir(), hex.EncodeToString(h[:]))
}

// load rebuilds the in-memory state. An index entry is "<sha>\n<location>".
func (c *Cache) load() error {
	tmps, err := os.ReadDir(c.tmpDir())
	if err != nil {
		return fmt.Errorf("reading cache tmp dir: %w", err)
	}
	for _, e := range tmps {
		_ = os.Remove(filepath.Join(c.tmpDir(), e.Name()))
	}
	objs, err := os.ReadDir(c.objectsDir())
	if err != nil {
		return fmt.Errorf("reading cache objects dir: %w", err)
	}
	for _, e := range objs {
		sha, ok := strings.CutSuffix(e.Name(), ".parquet")
		info, ierr := e.Info()
		if !ok || !validSHA(sha) || ierr != nil || !info.Mode().IsRegular() {
			continue
		}
		c.objects[sha] = &object{sha: sha, size: info.Size(), lastUsed: info.ModTime(), locations: map[string]struct{}{}}
		c.total += info.Size()
	}
	entries, err := os.ReadDir(c.indexDir())
	if err != nil {
		return fmt.Errorf("reading cache index dir: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(c.indexDir(), e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("reading cache index entry %s: %w", p, err)
		}
		sha, loc, ok := strings.Cut(string(b), "\n")
		o := c.objects[sha]
		if !ok || o == nil || c.indexPath(loc) != p {
			// Object evicted or entry torn: forget it, the location is refetched.
			_ = os.Remove(p)
			continue
		}
		c.index[loc] = sha
		o.locations[loc] = struct{}{}
	}
	for sha, o := range c.objects {
		if len(o.locations) == 0 {
			_ = os.Remove(c.objectPath(sha))
			c.total -= o.size
			delete(c.objects, sha)
		}
	}
	return nil
}

func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Fetch returns the local copy of the data file at location, downloading it
// through fsys the first time. wantSize, when positive, is the size the table
// metadata recorded; a copy of a different size is an error. The returned
// Object is pinned (never evicted) until Release is called for it once.
func (c *Cache) Fetch(ctx context.Context, fsys icebergio.IO, location string, wantSize int64) (Object, error) {
	for {
		c.mu.Lock()
		if sha, ok := c.index[location]; ok {
			o := c.objects[sha]
			o.pins++
			o.lastUsed = c.now()
			c.mu.Unlock()
			return Object{Location: location, SHA256: sha, Path: c.objectPath(sha), Size: o.size}, nil
		}
		if call, ok := c.inflight[location]; ok {
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return Object{}, ctx.Err()
			}
			if call.err != nil {
				return Object{}, call.err
			}
			// Loop: the object is now indexed (pin it under mu) unless it
			// was evicted in between, in which case we fetch again.
			continue
		}
		call := &fetchCall{done: make(chan struct{})}
		c.inflight[location] = call
		c.mu.Unlock()

		obj, err := c.download(ctx, fsys, location, wantSize)

		c.mu.Lock()
		delete(c.inflight, location)
		if err == nil {
			err = c.publishLocked(location, &obj)
		}
		call.obj, call.err = obj, err
		close(call.done)
		var evict []string
		if err == nil {
			evict = c.evictLocked()
		}
		c.mu.Unlock()
		c.logEvicted(evict)
		return obj, err
	}
}

// download copies the file into tmp/ while hashing it and fsyncs it.
func (c *Cache) download(ctx context.Context, fsys icebergio.IO, location string, wantSize int64) (Object, error) {
	if fsys == nil {
		fsys = icebergio.LocalFS{}
	}
	src, err := fsys.Open(location)
	if err != nil {
		return Object{}, fmt.Errorf("opening data file %s: %w", location, err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(c.tmpDir(), "fetch-*")
	if err != nil {
		return Object{}, fmt.Errorf("creating temp file for %s: %w", location, err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx: ctx, r: src})
	if err != nil {
		return Object{}, fmt.Errorf("copying data file %s: %w", location, err)
	}
	if wantSize > 0 && n != wantSize {
		return Object{}, fmt.Errorf("data file %s: got %d bytes, metadata says %d: %w", location, n, wantSize, ErrSizeMismatch)
	}
	if err := tmp.Sync(); err != nil {
		return Object{}, fmt.Errorf("syncing cached copy of %s: %w", location, err)
	}
	if err := tmp.Close(); err != nil {
		return Object{}, fmt.Errorf("closing cached copy of %s: %w", location, err)
	}
	keep = true
	return Object{Location: location, SHA256: hex.EncodeToString(h.Sum(nil)), Path: tmp.Name(), Size: n}, nil
}

// publishLocked renames the downloaded temp file into objects/ (or drops it
// when identical content is already there), writes the index entry, and pins
// the object for the caller. On return obj.Path is the object path.
func (c *Cache) publishLocked(location string, obj *Object) error {
	tmpPath := obj.Path
	dst := c.objectPath(obj.SHA256)
	o, exists := c.objects[obj.SHA256]
	if exists {
		os.Remove(tmpPath)
	} else {
		if err := os.Chmod(tmpPath, 0o440); err != nil {
			os.Remove(tmpPath)
			return fmt.Errorf("protecting cached copy of %s: %w", location, err)
		}
		if err := os.Rename(tmpPath, dst); err != nil {
			os.Remove(tmpPath)
			return fmt.Errorf("publishing cached copy of %s: %w", location, err)
		}
		o = &object{sha: obj.SHA256, size: obj.Size, locations: map[string]struct{}{}}
		c.objects[obj.SHA256] = o
		c.total += obj.Size
	}
	if err := writeFileAtomic(c.tmpDir(), c.indexPath(location), []byte(obj.SHA256+"\n"+location)); err != nil {
		if !exists && len(o.locations) == 0 && o.pins == 0 {
			os.Remove(dst)
			c.total -= o.size
			delete(c.objects, obj.SHA256)
		}
		return fmt.Errorf("indexing cached copy of %s: %w", location, err)
	}
	c.index[location] = obj.SHA256
	o.locations[location] = struct{}{}
	o.pins++
	o.lastUsed = c.now()
	obj.Path = dst
	return nil
}

// File is a file of the warehouse to fetch: its location and expected size.
type File struct {
	Location string
	Size     int64
}

// FetchAll fetches files as Fetch does, parallel at a time, and returns their objects
// in files' order. If any fails, the others are released and the errors returned.
func (c *Cache) FetchAll(ctx context.Context, fsys icebergio.IO, files []File, parallel int) ([]Object, error) {
	objs := make([]Object, len(files))
	errs := make([]error, len(files))
	var g errgroup.Group
	g.SetLimit(parallel)
	for i, f := range files {
		g.Go(func() error {
			objs[i], errs[i] = c.Fetch(ctx, fsys, f.Location, f.Size)
			return nil
		})
	}
	_ = g.Wait() // the errors are in errs
	if err := errors.Join(errs...); err != nil {
		for i, o := range objs {
			if errs[i] == nil {
				c.Release(o)
			}
		}
		return nil, err
	}
	return objs, nil
}

// Release unpins an object returned by Fetch.
func (c *Cache) Release(obj Object) {
	c.mu.Lock()
	if o := c.objects[obj.SHA256]; o != nil && o.pins > 0 {
		o.pins--
		o.lastUsed = c.now()
	}
	evict := c.evictLocked()
	c.mu.Unlock()
	c.logEvicted(evict)
}

// evictLocked removes least recently used unpinned objects until the cache
// fits its bound, and returns the evicted hashes.
func (c *Cache) evictLocked() []string {
	var evicted []string
	for c.total > c.maxBytes {
		var victim *object
		for _, o := range c.objects {
			if o.pins > 0 {
				continue
			}
			if victim == nil || o.lastUsed.Before(victim.lastUsed) {
				victim = o
			}
		}
		if victim == nil {
			return evicted // everything left is in use by a current view
		}
		// Index entries go first: a crash in between leaves an orphaned
		// object that load removes, never an entry pointing at nothing.
		for loc := range victim.locations {
			_ = os.Remove(c.indexPath(loc))
			delete(c.index, loc)
		}
		_ = os.Remove(c.objectPath(victim.sha))
		c.total -= victim.size
		delete(c.objects, victim.sha)
		evicted = append(evicted, victim.sha)
	}
	return evicted
}

func (c *Cache) logEvicted(shas []string) {
	for _, sha := range shas {
		c.logger.Debug("cache object evicted", "sha256", sha)
	}
}

// Stats reports the bytes and object count currently held.
func (c *Cache) Stats() (bytes int64, objects int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, len(c.objects)
}

func writeFileAtomic(tmpDir, dst string, data []byte) error {
	f, err := os.CreateTemp(tmpDir, "index-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
