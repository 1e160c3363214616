package cache

import (
	"bytes"
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
	"sync/atomic"
	"testing"
	"time"

	icebergio "github.com/apache/iceberg-go/io"
)

// countingFS is the real local filesystem IO with an open counter.
type countingFS struct {
	icebergio.LocalFS
	opens atomic.Int64
}

func (c *countingFS) Open(name string) (icebergio.File, error) {
	c.opens.Add(1)
	return c.LocalFS.Open(name)
}

func newTestCache(tb testing.TB, dir string, maxBytes int64) *Cache {
	tb.Helper()
	c, err := New(Config{Dir: dir, MaxBytes: maxBytes}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	// A fake clock keeps LRU order deterministic without sleeping.
	var tick atomic.Int64
	c.now = func() time.Time { return time.Unix(0, tick.Add(1)) }
	return c
}

func writeSource(tb testing.TB, dir, name string, content []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestFetchOnce(t *testing.T) {
	src := t.TempDir()
	content := []byte("PAR1 some parquet bytes PAR1")
	tests := []struct {
		name     string
		location string
	}{
		{"plain path", writeSource(t, src, "a.parquet", content)},
		{"file url", "file://" + writeSource(t, src, "b.parquet", content)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &countingFS{}
			c := newTestCache(t, t.TempDir(), 1<<20)
			var first Object
			for i := range 3 {
				obj, err := c.Fetch(context.Background(), fs, tt.location, int64(len(content)))
				if err != nil {
					t.Fatalf("Fetch %d: %v", i, err)
				}
				if i == 0 {
					first = obj
				}
				if obj.Path != first.Path || obj.SHA256 != sha(content) {
					t.Fatalf("Fetch %d = %+v, want path %s sha %s", i, obj, first.Path, sha(content))
				}
				c.Release(obj)
			}
			if got := fs.opens.Load(); got != 1 {
				t.Errorf("opened source %d times, want 1", got)
			}
			got, err := os.ReadFile(first.Path)
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("cached content = %q, %v", got, err)
			}
			if filepath.Base(first.Path) != sha(content)+".parquet" {
				t.Errorf("object path %s is not content addressed", first.Path)
			}
		})
	}
}

func TestFetchSurvivesReopen(t *testing.T) {
	src := t.TempDir()
	loc := writeSource(t, src, "a.parquet", []byte("hello"))
	dir := t.TempDir()
	fs := &countingFS{}
	c := newTestCache(t, dir, 1<<20)
	obj, err := c.Fetch(context.Background(), fs, loc, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Release(obj)
	// An interrupted fetch leaves a temp file; reopening removes it.
	writeSource(t, filepath.Join(dir, "tmp"), "fetch-123", []byte("partial"))

	c2 := newTestCache(t, dir, 1<<20)
	obj2, err := c2.Fetch(context.Background(), fs, loc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if obj2.Path != obj.Path || fs.opens.Load() != 1 {
		t.Errorf("after reopen: path %s (want %s), opens %d (want 1)", obj2.Path, obj.Path, fs.opens.Load())
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp dir not cleaned: %v", ents)
	}
}

func TestFetchSameContentTwoLocations(t *testing.T) {
	src := t.TempDir()
	a := writeSource(t, src, "a.parquet", []byte("same"))
	b := writeSource(t, src, "b.parquet", []byte("same"))
	c := newTestCache(t, t.TempDir(), 1<<20)
	oa, err := c.Fetch(context.Background(), nil, a, 0)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := c.Fetch(context.Background(), nil, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if oa.Path != ob.Path {
		t.Errorf("identical content stored twice: %s, %s", oa.Path, ob.Path)
	}
	if bytes, n := c.Stats(); bytes != 4 || n != 1 {
		t.Errorf("Stats = %d bytes, %d objects; want 4, 1", bytes, n)
	}
}

func TestFetchConcurrent(t *testing.T) {
	src := t.TempDir()
	var locs []string
	for i := range 4 {
		locs = append(locs, writeSource(t, src, fmt.Sprintf("f%d.parquet", i), bytes.Repeat([]byte{byte(i)}, 10000)))
	}
	fs := &countingFS{}
	c := newTestCache(t, t.TempDir(), 1<<30)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Go(func() {
			loc := locs[g%len(locs)]
			obj, err := c.Fetch(context.Background(), fs, loc, 10000)
			if err != nil {
				errs <- err
				return
			}
			b, err := os.ReadFile(obj.Path)
			if err != nil || len(b) != 10000 || b[0] != byte(g%len(locs)) {
				errs <- fmt.Errorf("goroutine %d read %d bytes, err %v", g, len(b), err)
			}
			c.Release(obj)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := fs.opens.Load(); got != int64(len(locs)) {
		t.Errorf("opened %d times, want %d (one per location)", got, len(locs))
	}
}

func TestEviction(t *testing.T) {
	src := t.TempDir()
	loc := func(i int) string {
		return writeSource(t, src, fmt.Sprintf("f%d.parquet", i), bytes.Repeat([]byte{byte(i)}, 100))
	}
	l0, l1, l2, l3 := loc(0), loc(1), loc(2), loc(3)
	c := newTestCache(t, t.TempDir(), 250)
	ctx := context.Background()
	fetch := func(l string) Object {
		t.Helper()
		o, err := c.Fetch(ctx, nil, l, 100)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	o0 := fetch(l0) // pinned throughout: must survive
	o1 := fetch(l1)
	c.Release(o1)
	o2 := fetch(l2)
	c.Release(o2)
	// Over the bound now: 300 > 250, o1 is the LRU unpinned object.
	if _, err := os.Stat(o1.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LRU object %s not evicted: %v", o1.Path, err)
	}
	o3 := fetch(l3)
	if _, err := os.Stat(o2.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("object %s not evicted: %v", o2.Path, err)
	}
	for _, o := range []Object{o0, o3} {
		if _, err := os.Stat(o.Path); err != nil {
			t.Errorf("pinned object %s evicted: %v", o.Path, err)
		}
	}
	// The evicted location is fetched again transparently.
	again := fetch(l1)
	if b, err := os.ReadFile(again.Path); err != nil || len(b) != 100 || b[0] != 1 {
		t.Errorf("refetched %s: %d bytes, %v", l1, len(b), err)
	}
}

func TestEvictionKeepsPinnedOverBound(t *testing.T) {
	src := t.TempDir()
	c := newTestCache(t, t.TempDir(), 10)
	var objs []Object
	for i := range 3 {
		o, err := c.Fetch(context.Background(), nil, writeSource(t, src, fmt.Sprintf("f%d", i), bytes.Repeat([]byte{byte(i)}, 50)), 0)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	for _, o := range objs {
		if _, err := os.Stat(o.Path); err != nil {
			t.Errorf("pinned object evicted: %v", err)
		}
	}
	for _, o := range objs {
		c.Release(o)
	}
	if b, n := c.Stats(); b != 0 || n != 0 {
		t.Errorf("after release: %d bytes, %d objects, want empty", b, n)
	}
}

func TestFetchErrors(t *testing.T) {
	src := t.TempDir()
	loc := writeSource(t, src, "a.parquet", []byte("12345"))
	c := newTestCache(t, t.TempDir(), 1<<20)
	if _, err := c.Fetch(context.Background(), nil, loc, 6); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("size mismatch: err = %v, want ErrSizeMismatch", err)
	}
	if _, err := c.Fetch(context.Background(), nil, filepath.Join(src, "missing"), 0); err == nil {
		t.Error("missing file: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Fetch(ctx, nil, loc, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	if b, n := c.Stats(); b != 0 || n != 0 {
		t.Errorf("failed fetches left %d bytes, %d objects", b, n)
	}
}

var _ io.Reader = ctxReader{}

func TestFetchAll(t *testing.T) {
	src := t.TempDir()
	var files []File
	for i := range 5 {
		files = append(files, File{Location: writeSource(t, src, fmt.Sprintf("f%d", i), bytes.Repeat([]byte{byte(i)}, 50)), Size: 50})
	}
	// A bound below one object: whatever is released is evicted at once.
	c := newTestCache(t, t.TempDir(), 10)
	ctx := context.Background()

	objs, err := c.FetchAll(ctx, nil, files, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range objs {
		if b, err := os.ReadFile(o.Path); err != nil || len(b) != 50 || b[0] != byte(i) {
			t.Errorf("object %d: %d bytes starting %v, %v; want file f%d", i, len(b), b[:min(1, len(b))], err, i)
		}
		c.Release(o)
	}

	bad := append(files[:2:2], File{Location: filepath.Join(src, "missing"), Size: 50}, files[2])
	if _, err := c.FetchAll(ctx, nil, bad, 2); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("with a missing file: err = %v, want one naming it", err)
	}
	if b, n := c.Stats(); b != 0 || n != 0 {
		t.Errorf("after a failed FetchAll: %d bytes in %d objects still pinned, want all released", b, n)
	}
}
