package watch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manual Clock: time moves only when the test calls Advance.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), c: ch})
	return ch
}

// waiting blocks until n timers are pending, i.e. the watcher has reached its loop.
func (c *fakeClock) waiting(t testing.TB, n int) {
	t.Helper()
	for i := 0; ; i++ {
		c.mu.Lock()
		k := len(c.waiters)
		c.mu.Unlock()
		if k >= n {
			return
		}
		if i > 20000 {
			t.Fatalf("watcher never armed %d timers", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.c <- c.now
	}
	c.waiters = kept
}

func write(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const quiet = 2 * time.Second

// TestStability drives the watcher's state directly with explicit times: a file is
// emitted once, only after size and mtime held still for the quiet period.
func TestStability(t *testing.T) {
	dir := t.TempDir()
	w, err := New(Config{Roots: []Root{{Path: dir}}, QuietPeriod: quiet}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newState(w.cfg, w.log, nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p := filepath.Join(dir, "labs.csv")
	mtime := t0.Add(-time.Hour)
	grow := func(content string) {
		write(t, p, content)
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	names := func(fs []File) []string {
		var n []string
		for _, f := range fs {
			n = append(n, filepath.Base(f.Path))
		}
		return n
	}

	grow("id\n")
	s.rescan(at(0))
	if got := s.poll(at(quiet - time.Millisecond)); len(got) != 0 {
		t.Fatalf("emitted before the quiet period: %v", names(got))
	}
	grow("id\n1\n") // still being written
	if got := s.poll(at(quiet)); len(got) != 0 {
		t.Fatalf("emitted a growing file: %v", names(got))
	}
	if got := s.poll(at(2*quiet - time.Millisecond)); len(got) != 0 {
		t.Fatalf("quiet period not restarted by a change: %v", names(got))
	}
	got := s.poll(at(2 * quiet))
	if len(got) != 1 || got[0].Path != p || got[0].Size != 5 || !got[0].ModTime.Equal(mtime) || got[0].Root != dir {
		t.Fatalf("poll = %+v, want labs.csv size 5", got)
	}
	s.rescan(at(3 * quiet))
	if got := s.poll(at(5 * quiet)); len(got) != 0 {
		t.Fatalf("unchanged file emitted twice: %v", names(got))
	}
	// A changed file is emitted again (its hash will differ; the consumer decides).
	grow("id\n1\n2\n")
	s.rescan(at(6 * quiet))
	if got := s.poll(at(7 * quiet)); !slices.Equal(names(got), []string{"labs.csv"}) {
		t.Fatalf("changed file: poll = %v", names(got))
	}
	// Forget makes an unchanged file come back.
	s.forget(p, at(8*quiet))
	if got := s.poll(at(9 * quiet)); !slices.Equal(names(got), []string{"labs.csv"}) {
		t.Fatalf("after forget: poll = %v", names(got))
	}
	// A file that disappears while waiting is dropped, and a deleted file is pruned.
	write(t, filepath.Join(dir, "gone.csv"), "x")
	s.rescan(at(10 * quiet))
	os.Remove(filepath.Join(dir, "gone.csv"))
	os.Remove(p)
	if got := s.poll(at(12 * quiet)); len(got) != 0 {
		t.Fatalf("vanished file emitted: %v", names(got))
	}
	s.rescan(at(12 * quiet))
	if len(s.emitted) != 0 || len(s.pending) != 0 {
		t.Fatalf("state not pruned: emitted %v pending %v", s.emitted, s.pending)
	}
}

// TestScope checks which files a rescan considers, per root options.
func TestScope(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{
		"flat/a.csv", "flat/sub/b.csv", "flat/~$a.csv", "flat/x.TMP", "flat/y.part", "flat/z.partial",
		"flat/.hidden.csv", "flat/d.crdownload", "flat/e.filepart", "flat/skip.bak",
		"deep/a.csv", "deep/sub/b.csv", "deep/sub/sub2/c.csv", "deep/.medlake-done/old.csv",
		"deep/.snapshot/s.csv", "deep/archive/done.csv", "deep/sub/t.tmp",
	} {
		write(t, filepath.Join(dir, f), "x")
	}
	if err := os.Symlink(filepath.Join(dir, "flat", "a.csv"), filepath.Join(dir, "flat", "link.csv")); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{
		Roots: []Root{
			{Path: filepath.Join(dir, "flat")},
			{Path: filepath.Join(dir, "deep"), Recursive: true},
			{Path: filepath.Join(dir, "deep2"), Recursive: true, DoneDir: filepath.Join(dir, "deep", "archive")},
		},
		Ignore: []string{"*.BAK"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// deep2 does not exist (an offline share): it must not stop the others.
	w.cfg.Roots[1].DoneDir = filepath.Join(dir, "deep", "archive")
	s := newState(w.cfg, w.log, nil)
	now := time.Now()
	s.rescan(now)
	var got []string
	for _, f := range s.poll(now.Add(quiet)) {
		rel, _ := filepath.Rel(dir, f.Path)
		got = append(got, filepath.ToSlash(rel))
	}
	slices.Sort(got)
	want := []string{"deep/a.csv", "deep/sub/b.csv", "deep/sub/sub2/c.csv", "flat/a.csv", "flat/link.csv"}
	if !slices.Equal(got, want) {
		t.Errorf("files found:\n got %q\nwant %q", got, want)
	}
}

func TestIsTempName(t *testing.T) {
	for name, want := range map[string]bool{
		"a.csv": false, "a.csv.gz": false, "tmp.csv": false, "part.zip": false,
		"~$a.xlsx": true, ".a.csv": true, "a.tmp": true, "A.TMP": true, "a.zip.part": true,
		"a.partial": true, "a.crdownload": true, "a.filepart": true, ".": true,
	} {
		if got := IsTempName(name); got != want {
			t.Errorf("IsTempName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Roots: []Root{{Path: ""}}},
		{Roots: []Root{{Path: "/x"}}, Ignore: []string{"["}},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// harness runs a real Watcher (real fsnotify) on a fake clock.
type harness struct {
	t     *testing.T
	w     *Watcher
	clock *fakeClock
	out   chan File
}

func start(t *testing.T, roots ...Root) *harness {
	t.Helper()
	clock := newFakeClock()
	w, err := New(Config{Roots: roots, QuietPeriod: quiet, PollInterval: quiet / 4, RescanInterval: time.Hour, Clock: clock}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, w: w, clock: clock, out: make(chan File)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h.out) }()
	clock.waiting(t, 2) // poll and rescan timers: the initial scan is done
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// next advances the fake clock in poll steps until the watcher emits a file. The real
// wait only covers fsnotify delivering an event; it bounds a hang, it times nothing.
func (h *harness) next() File {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case f := <-h.out:
			h.t.Logf("got %+v", f)
			return f
		case <-time.After(5 * time.Millisecond):
			h.clock.Advance(quiet / 4)
		}
	}
	h.t.Fatal("no file emitted")
	return File{}
}

func rel(t testing.TB, base string, f File) string {
	r, err := filepath.Rel(base, f.Path)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.ToSlash(r)
}

func TestRunEvents(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "existing.csv"), "a\n")
	h := start(t, Root{Path: dir, Recursive: true})
	if f := h.next(); rel(t, dir, f) != "existing.csv" || f.Root != dir || f.Size != 2 {
		t.Fatalf("initial scan emitted %+v", f)
	}

	// Temporary names and the done folder never come out; a file renamed into place does.
	write(t, filepath.Join(dir, "~$lock.csv"), "x")
	write(t, filepath.Join(dir, ".hidden.csv"), "x")
	write(t, filepath.Join(dir, ".medlake-done", "done.csv"), "x")
	write(t, filepath.Join(dir, "upload.csv.part"), "a\nb\n")
	if err := os.Rename(filepath.Join(dir, "upload.csv.part"), filepath.Join(dir, "upload.csv")); err != nil {
		t.Fatal(err)
	}
	if f := h.next(); rel(t, dir, f) != "upload.csv" || f.Size != 4 {
		t.Fatalf("after rename emitted %+v", f)
	}

	// A folder created after start is watched, including files written before its watch.
	write(t, filepath.Join(dir, "new", "deeper", "late.csv"), "abc")
	if f := h.next(); rel(t, dir, f) != "new/deeper/late.csv" {
		t.Fatalf("new folder: emitted %+v", f)
	}
	write(t, filepath.Join(dir, "new", "deeper", "later.csv"), "abcd")
	if f := h.next(); rel(t, dir, f) != "new/deeper/later.csv" {
		t.Fatalf("watched new folder: emitted %+v", f)
	}

	// Forget brings an unchanged file back without any event.
	h.w.Forget(filepath.Join(dir, "existing.csv"))
	if f := h.next(); rel(t, dir, f) != "existing.csv" {
		t.Fatalf("after forget emitted %+v", f)
	}
	// Nothing above was modified by watching it.
	if b, err := os.ReadFile(filepath.Join(dir, "existing.csv")); err != nil || string(b) != "a\n" {
		t.Fatalf("existing.csv now %q, %v", b, err)
	}
}

func TestRunNotRecursive(t *testing.T) {
	dir := t.TempDir()
	h := start(t, Root{Path: dir})
	write(t, filepath.Join(dir, "sub", "ignored.csv"), "x")
	write(t, filepath.Join(dir, "top.csv"), "x")
	if f := h.next(); rel(t, dir, f) != "top.csv" {
		t.Fatalf("emitted %+v, want top.csv only", f)
	}
	write(t, filepath.Join(dir, "top2.csv"), "x")
	if f := h.next(); rel(t, dir, f) != "top2.csv" {
		t.Fatalf("emitted %+v, want top2.csv", f)
	}
}

// TestRunRescanFindsMissedFiles: a share that is offline at start has no watch, so only
// the periodic rescan can see files appear; after it, the folder is watched again.
func TestRunRescanFindsMissedFiles(t *testing.T) {
	share := filepath.Join(t.TempDir(), "share")
	h := start(t, Root{Path: share})
	write(t, filepath.Join(share, "while_offline.csv"), "x")
	h.clock.Advance(time.Hour) // rescan interval
	if f := h.next(); rel(t, share, f) != "while_offline.csv" {
		t.Fatalf("emitted %+v", f)
	}
	write(t, filepath.Join(share, "after.csv"), "x")
	if f := h.next(); rel(t, share, f) != "after.csv" {
		t.Fatalf("emitted %+v", f)
	}
}
