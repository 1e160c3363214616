package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults for zero Config fields.
const (
	DefaultQuietPeriod    = 2 * time.Second
	DefaultRescanInterval = 30 * time.Second
	DefaultDoneDir        = ".medlake-done"
)

// Config says what to watch. Zero durations take the defaults.
type Config struct {
	Roots []Root
	// QuietPeriod is how long size and modification time must stay unchanged before a
	// file counts as complete.
	QuietPeriod time.Duration
	// RescanInterval is how often every root is listed in full, catching files whose
	// events were lost.
	RescanInterval time.Duration
	// PollInterval is how often files waiting out their quiet period are re-checked.
	// Default QuietPeriod/4, between 50ms and 1s.
	PollInterval time.Duration
	// Ignore holds extra base-name patterns (path.Match, case-insensitive) on top of the
	// built-in temporary names (see IsTempName).
	Ignore []string
	// Clock is the time source; nil means the system clock. Tests pass a manual one.
	Clock Clock
}

// Root is one watched folder.
type Root struct {
	Path string
	// Recursive also watches every subfolder (except dot folders and DoneDir).
	Recursive bool
	// DoneDir is where the agent moves finished files; it is never watched. Default
	// Path/.medlake-done.
	DoneDir string
}

// Clock is the time source of a Watcher; tests swap in a manual one instead of sleeping.
// Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
	// After delivers the time once d has passed, as time.After does.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// File is a complete file, ready to hash and unpack.
type File struct {
	Path    string    // absolute path
	Root    string    // the Root.Path it was found under
	Size    int64     // size when it was found stable
	ModTime time.Time // modification time when it was found stable
}

// Watcher emits complete files from its roots. Run it once; Forget is safe to call from
// any goroutine at any time.
type Watcher struct {
	cfg Config
	log *slog.Logger

	kick    chan struct{} // wakes Run to take forgets
	mu      sync.Mutex
	forgets []string // guarded by mu; paths to re-emit, drained by Run
}

// New checks cfg and returns a Watcher. Roots need not exist yet (a share may be offline);
// they are retried at every rescan.
func New(cfg Config, logger *slog.Logger) (*Watcher, error) {
	if len(cfg.Roots) == 0 {
		return nil, errors.New("watch: no folders configured")
	}
	if cfg.QuietPeriod <= 0 {
		cfg.QuietPeriod = DefaultQuietPeriod
	}
	if cfg.RescanInterval <= 0 {
		cfg.RescanInterval = DefaultRescanInterval
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = min(max(cfg.QuietPeriod/4, 50*time.Millisecond), time.Second)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	for _, p := range cfg.Ignore {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("watch: ignore pattern %q: %w", p, err)
		}
	}
	roots := make([]Root, len(cfg.Roots))
	for i, r := range cfg.Roots {
		if r.Path == "" {
			return nil, fmt.Errorf("watch: folder %d has no path", i+1)
		}
		p, err := filepath.Abs(r.Path)
		if err != nil {
			return nil, fmt.Errorf("watch: folder %s: %w", r.Path, err)
		}
		r.Path = p
		if r.DoneDir == "" {
			r.DoneDir = filepath.Join(p, DefaultDoneDir)
		} else if r.DoneDir, err = filepath.Abs(r.DoneDir); err != nil {
			return nil, fmt.Errorf("watch: done folder %s: %w", r.DoneDir, err)
		}
		roots[i] = r
	}
	cfg.Roots = roots
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: logger.With("component", "watch"), kick: make(chan struct{}, 1)}, nil
}

// Forget makes the watcher emit path again, once it has been stable for the quiet period,
// for a consumer that could not process it and wants it retried. A path that no longer
// exists is simply dropped.
func (w *Watcher) Forget(path string) {
	w.mu.Lock()
	w.forgets = append(w.forgets, path)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default: // Run has a wake-up pending already
	}
}

// Run watches until ctx is done and sends each complete file to out, blocking while out
// is full (that is the back-pressure: intake pauses, nothing is dropped). A file is sent
// again only after it changes, after Forget, or after a restart. Run returns nil when ctx
// ends and an error only if file watching cannot start at all.
func (w *Watcher) Run(ctx context.Context, out chan<- File) error {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("starting file watcher: %w", err)
	}
	defer fsw.Close()
	s := newState(w.cfg, w.log, fsw)
	clock := w.cfg.Clock

	s.rescan(clock.Now())
	pollC := clock.After(w.cfg.PollInterval)
	rescanC := clock.After(w.cfg.RescanInterval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			s.event(ev, clock.Now())
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("file watcher closed")
			}
			w.log.Warn("file watcher error, rescanning", "err", err)
			s.rescan(clock.Now())
		case <-rescanC:
			s.rescan(clock.Now())
			rescanC = clock.After(w.cfg.RescanInterval)
		case <-w.kick:
			w.mu.Lock()
			forgets := w.forgets
			w.forgets = nil
			w.mu.Unlock()
			for _, p := range forgets {
				s.forget(p, clock.Now())
			}
		case <-pollC:
			for _, f := range s.poll(clock.Now()) {
				select {
				case out <- f:
				case <-ctx.Done():
					return nil
				}
			}
			pollC = clock.After(w.cfg.PollInterval)
		}
	}
}

// IsTempName reports whether a base name is a file still being written or not meant for
// intake: Office lock files (~$*), dot files, and *.tmp, *.part, *.partial,
// *.crdownload, *.filepart (case-insensitive).
func IsTempName(name string) bool {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "~$") || strings.HasPrefix(n, ".") {
		return true
	}
	for _, ext := range [...]string{".tmp", ".part", ".partial", ".crdownload", ".filepart"} {
		if strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

// stamp is what must stay unchanged for a file to be complete.
type stamp struct {
	size  int64
	mtime time.Time
}

type candidate struct {
	root  int
	stamp stamp
	since time.Time // when stamp was last seen to change
}

type sent struct {
	root  int
	stamp stamp
}

// state is the Run goroutine's view of the roots; only that goroutine touches it.
type state struct {
	cfg     Config
	log     *slog.Logger
	fsw     *fsnotify.Watcher // nil in tests that drive state directly
	pending map[string]*candidate
	emitted map[string]sent
	watched map[string]bool
}

func newState(cfg Config, log *slog.Logger, fsw *fsnotify.Watcher) *state {
	return &state{cfg: cfg, log: log, fsw: fsw,
		pending: map[string]*candidate{}, emitted: map[string]sent{}, watched: map[string]bool{}}
}

func samePath(a, b string) bool {
	if runtime.GOOS == "windows" || runtime.GOOS == "darwin" {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// ignored reports whether a file's base name is excluded.
func (s *state) ignored(base string) bool {
	if IsTempName(base) {
		return true
	}
	lb := strings.ToLower(base)
	for _, p := range s.cfg.Ignore {
		if ok, _ := path.Match(strings.ToLower(p), lb); ok {
			return true
		}
	}
	return false
}

// skipDir reports whether a folder below root r is out of bounds.
func (s *state) skipDir(r Root, dir string) bool {
	return samePath(dir, r.DoneDir) || strings.HasPrefix(filepath.Base(dir), ".")
}

// locate finds the root a path belongs to and whether it lies where that root looks:
// directly in it, or in a non-skipped subfolder when recursive.
func (s *state) locate(p string) (int, bool) {
	best, bestLen := -1, -1
	for i, r := range s.cfg.Roots {
		rel, err := filepath.Rel(r.Path, p)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue
		}
		if len(r.Path) > bestLen {
			best, bestLen = i, len(r.Path)
		}
	}
	if best < 0 {
		return -1, false
	}
	r := s.cfg.Roots[best]
	dir := filepath.Dir(p)
	if samePath(dir, r.Path) {
		return best, true
	}
	if !r.Recursive {
		return best, false
	}
	for d := dir; !samePath(d, r.Path) && len(d) > len(r.Path); d = filepath.Dir(d) {
		if s.skipDir(r, d) {
			return best, false
		}
	}
	return best, true
}

func (s *state) event(ev fsnotify.Event, now time.Time) {
	p := filepath.Clean(ev.Name)
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		s.drop(p)
		return
	}
	ri, ok := s.locate(p)
	if !ok {
		return
	}
	info, err := os.Stat(p)
	if err != nil {
		return // gone again; a rescan settles it
	}
	if info.IsDir() {
		if r := s.cfg.Roots[ri]; r.Recursive && !s.skipDir(r, p) {
			// Files can land in a new folder before its watch exists: list it now.
			s.walk(ri, p, now, nil)
		}
		return
	}
	s.observe(ri, p, info, now)
}

// drop forgets a removed or renamed path and everything below it.
func (s *state) drop(p string) {
	prefix := p + string(filepath.Separator)
	for k := range s.pending {
		if k == p || strings.HasPrefix(k, prefix) {
			delete(s.pending, k)
		}
	}
	for k := range s.emitted {
		if k == p || strings.HasPrefix(k, prefix) {
			delete(s.emitted, k)
		}
	}
	for k := range s.watched {
		if k == p || strings.HasPrefix(k, prefix) {
			delete(s.watched, k) // the kernel dropped the watch with the folder
		}
	}
}

// forget drops p from the emitted set and looks at it again, so it is emitted anew.
func (s *state) forget(p string, now time.Time) {
	p = filepath.Clean(p)
	delete(s.emitted, p)
	ri, ok := s.locate(p)
	if !ok {
		return
	}
	if info, err := os.Stat(p); err == nil {
		s.observe(ri, p, info, now)
	}
}

// observe records a sighting of a regular file.
func (s *state) observe(root int, p string, info fs.FileInfo, now time.Time) {
	if !info.Mode().IsRegular() || s.ignored(filepath.Base(p)) {
		return
	}
	st := stamp{size: info.Size(), mtime: info.ModTime()}
	if e, ok := s.emitted[p]; ok {
		if e.stamp == st {
			return
		}
		delete(s.emitted, p)
	}
	if c, ok := s.pending[p]; ok {
		if c.stamp != st {
			c.stamp, c.since = st, now
		}
		return
	}
	s.pending[p] = &candidate{root: root, stamp: st, since: now}
}

// poll re-stats waiting files and returns those stable for the quiet period, oldest first.
func (s *state) poll(now time.Time) []File {
	var ready []File
	var since []time.Time
	for p, c := range s.pending {
		info, err := os.Stat(p)
		if err != nil || !info.Mode().IsRegular() {
			delete(s.pending, p)
			continue
		}
		st := stamp{size: info.Size(), mtime: info.ModTime()}
		if st != c.stamp {
			c.stamp, c.since = st, now
			continue
		}
		if now.Sub(c.since) < s.cfg.QuietPeriod {
			continue
		}
		delete(s.pending, p)
		s.emitted[p] = sent{root: c.root, stamp: st}
		ready = append(ready, File{Path: p, Root: s.cfg.Roots[c.root].Path, Size: st.size, ModTime: st.mtime})
		since = append(since, c.since)
	}
	idx := make([]int, len(ready))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if c := since[a].Compare(since[b]); c != 0 {
			return c
		}
		return strings.Compare(ready[a].Path, ready[b].Path)
	})
	out := make([]File, len(ready))
	for i, j := range idx {
		out[i] = ready[j]
	}
	return out
}

// rescan lists every root in full, (re)adds folder watches and forgets emitted files
// that are gone, so memory follows the folders' contents.
func (s *state) rescan(now time.Time) {
	for i, r := range s.cfg.Roots {
		seen := map[string]bool{}
		if !s.walk(i, r.Path, now, seen) {
			continue // root unavailable: keep what we know until it is back
		}
		for p, e := range s.emitted {
			if e.root == i && !seen[p] {
				delete(s.emitted, p)
			}
		}
	}
}

// walk lists dir (inside root ri), watching folders and observing files; it reports
// whether dir itself could be read. seen, if not nil, collects the files found.
func (s *state) walk(ri int, dir string, now time.Time, seen map[string]bool) bool {
	r := s.cfg.Roots[ri]
	ok := true
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				ok = false
				s.log.Warn("folder unavailable", "path", p, "err", err)
				return err
			}
			s.log.Warn("cannot list", "path", p, "err", err)
			return nil
		}
		if d.IsDir() {
			if p != dir && (!r.Recursive || s.skipDir(r, p)) {
				return filepath.SkipDir
			}
			s.watch(p)
			return nil
		}
		if s.ignored(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			info, err = os.Stat(p) // a link to a file counts as that file
		}
		if err != nil {
			return nil // vanished between listing and stat
		}
		if seen != nil {
			seen[p] = true
		}
		s.observe(ri, p, info, now)
		return nil
	})
	return ok && err == nil
}

func (s *state) watch(dir string) {
	if s.fsw == nil || s.watched[dir] {
		return
	}
	if err := s.fsw.Add(dir); err != nil {
		s.log.Warn("cannot watch folder, relying on rescans", "path", dir, "err", err)
		return
	}
	s.watched[dir] = true
}
