package engine

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// DefaultManifestCacheBytes bounds the manifest cache (Config.ManifestCacheBytes).
const DefaultManifestCacheBytes = 64 << 20

// tableIO hands out one file IO per warehouse (scheme and bucket) for every table the
// engine loads, so refreshes reuse one object store client and its connections instead
// of building a client per table load, and wraps it in the manifest cache.
//
// Concurrency: safe for concurrent use; mu guards ios.
type tableIO struct {
	props     iceberg.Properties // nil: take each warehouse's IO from the first table of it
	manifests *manifestCache     // manifest files' bytes
	entries   *manifestEntries   // manifests' parsed entries (plan.go)

	mu  sync.Mutex
	ios map[string]iceio.IO // by scheme://host of a table location
}

func newTableIO(props iceberg.Properties, cacheBytes int64) *tableIO {
	return &tableIO{props: props, manifests: newManifestCache(cacheBytes), entries: newManifestEntries(0), ios: map[string]iceio.IO{}}
}

// warehouseKey is the scheme and host of location: the object store and bucket.
func warehouseKey(location string) string {
	u, err := url.Parse(location)
	if err != nil || u.Scheme == "" {
		return "file://"
	}
	return u.Scheme + "://" + u.Host
}

// fsFor returns the FS function tables at location read through. fallback builds the
// IO when there are no properties to build it from (a table loaded by the catalog).
func (t *tableIO) fsFor(location string, fallback table.FSysF) table.FSysF {
	key := warehouseKey(location)
	return func(ctx context.Context) (iceio.IO, error) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if fsys, ok := t.ios[key]; ok {
			return fsys, nil
		}
		var inner iceio.IO
		var err error
		switch {
		case t.props != nil:
			inner, err = iceio.LoadFS(ctx, t.props, location)
		case fallback != nil:
			inner, err = fallback(ctx)
		default:
			err = fmt.Errorf("no file IO for %s", key)
		}
		if err != nil {
			return nil, fmt.Errorf("opening file IO for %s: %w", key, err)
		}
		fsys := &cachingIO{IO: inner, cache: t.manifests}
		t.ios[key] = fsys
		return fsys, nil
	}
}

// cachingIO serves manifest lists and manifests (Avro files, immutable by the Iceberg
// spec: a commit writes new ones under new names) from the manifest cache, so planning a
// snapshot reads from the object store only the manifests that are new since the last
// plan. Every other file passes through.
type cachingIO struct {
	iceio.IO
	cache *manifestCache
}

// Open implements iceio.IO.
func (c *cachingIO) Open(name string) (iceio.File, error) {
	if !strings.HasSuffix(name, ".avro") {
		return c.IO.Open(name)
	}
	if data, ok := c.cache.get(name); ok {
		return newMemFile(name, data), nil
	}
	f, err := c.IO.Open(name)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	c.cache.put(name, data)
	return newMemFile(name, data), nil
}

// manifestCache keeps the bytes of recently read manifest files.
type manifestCache = lruCache[[]byte]

func newManifestCache(maxBytes int64) *manifestCache {
	if maxBytes <= 0 {
		maxBytes = DefaultManifestCacheBytes
	}
	return newLRU(maxBytes, func(b []byte) int64 { return int64(len(b)) })
}

// lruCache keeps values by file location up to a total weight, least recently used
// evicted first; a value heavier than an eighth of the bound is not kept. Safe for
// concurrent use; mu guards the rest.
type lruCache[V any] struct {
	max    int64
	weight func(V) int64

	mu     sync.Mutex
	total  int64
	lru    *list.List               // of *lruEntry[V], most recent first
	byPath map[string]*list.Element // by file location
	hits   int64
	misses int64
}

type lruEntry[V any] struct {
	path   string
	value  V
	weight int64
}

func newLRU[V any](max int64, weight func(V) int64) *lruCache[V] {
	return &lruCache[V]{max: max, weight: weight, lru: list.New(), byPath: map[string]*list.Element{}}
}

func (m *lruCache[V]) get(path string) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.byPath[path]
	if !ok {
		m.misses++
		var zero V
		return zero, false
	}
	m.hits++
	m.lru.MoveToFront(el)
	return el.Value.(*lruEntry[V]).value, true
}

func (m *lruCache[V]) put(path string, v V) {
	w := m.weight(v)
	if w > m.max/8 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byPath[path]; ok {
		return
	}
	m.byPath[path] = m.lru.PushFront(&lruEntry[V]{path: path, value: v, weight: w})
	m.total += w
	for m.total > m.max {
		el := m.lru.Back()
		ent := el.Value.(*lruEntry[V])
		m.lru.Remove(el)
		delete(m.byPath, ent.path)
		m.total -= ent.weight
	}
}

// stats returns the weight held and the hits and misses so far.
func (m *lruCache[V]) stats() (total, hits, misses int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total, m.hits, m.misses
}

// memFile is a read-only iceio.File over bytes held in memory.
type memFile struct {
	*bytes.Reader
	name string
	size int64
}

func newMemFile(name string, data []byte) *memFile {
	return &memFile{Reader: bytes.NewReader(data), name: name, size: int64(len(data))}
}

func (f *memFile) Close() error { return nil }
func (f *memFile) Stat() (fs.FileInfo, error) {
	return memFileInfo{name: path.Base(f.name), size: f.size}, nil
}

type memFileInfo struct {
	name string
	size int64
}

func (i memFileInfo) Name() string       { return i.name }
func (i memFileInfo) Size() int64        { return i.size }
func (i memFileInfo) Mode() fs.FileMode  { return 0o444 }
func (i memFileInfo) ModTime() time.Time { return time.Time{} }
func (i memFileInfo) IsDir() bool        { return false }
func (i memFileInfo) Sys() any           { return nil }
