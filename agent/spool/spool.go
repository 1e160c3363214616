package spool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/medlake/medlake/agent/internal/durable"
	"github.com/medlake/medlake/protocol"
)

// File name suffixes inside the spool and dead-letter directories.
const (
	frameExt  = ".mlb"
	tempExt   = ".tmp"
	reasonExt = ".reason.txt"
)

// Errors returned by the spool; test with errors.Is.
var (
	// ErrNotFound: no spooled batch has that id.
	ErrNotFound = errors.New("batch not in spool")
	// ErrClosed: the spool was closed.
	ErrClosed = errors.New("spool closed")
	// ErrBadID: the batch id is not usable as a file name.
	ErrBadID = errors.New("invalid batch id")
)

// Config bounds and places the spool.
type Config struct {
	// Dir holds the spooled frames, one <batch id>.mlb each.
	Dir string
	// DeadLetterDir receives batches the hub rejected and frames found corrupt on open,
	// each next to a <batch id>.reason.txt.
	DeadLetterDir string
	// MaxBytes and MaxBatches bound the spool; Put waits while either would be exceeded.
	// A single frame larger than MaxBytes is still accepted into an empty spool.
	MaxBytes   int64
	MaxBatches int
}

// Stats is a snapshot of the spool's size.
type Stats struct {
	Batches     int
	Bytes       int64
	Full        bool
	DeadLetters int
	// Oldest is when the oldest spooled batch was put (its file's mtime after a
	// restart); zero when the spool is empty. Every spooled batch waits for the hub's
	// ack, so this is the oldest unacknowledged batch.
	Oldest time.Time
}

type entry struct {
	id   string
	size int64
	seq  uint64
	at   time.Time // when it was put
}

// Spool is safe for concurrent use.
type Spool struct {
	cfg    Config
	logger *slog.Logger

	mu       sync.Mutex
	entries  map[string]*entry // guarded by mu
	order    []*entry          // guarded by mu; creation order, deleted entries removed
	bytes    int64             // guarded by mu
	pending  map[string]int64  // guarded by mu; Puts reserved but not yet renamed into place
	pendingB int64             // guarded by mu; sum of pending
	seq      uint64            // guarded by mu
	dead     int               // guarded by mu; files in DeadLetterDir
	blocked  int               // guarded by mu; Put calls waiting for space
	freed    chan struct{}     // guarded by mu; closed and replaced when space frees
	added    chan struct{}     // guarded by mu; closed and replaced when a batch is added
	closed   bool              // guarded by mu
	closedCh chan struct{}
}

// Open opens (creating if needed) the spool in cfg.Dir. It removes temp files left by a
// crash and moves frames that do not decode to the dead-letter directory with a reason,
// so a torn write is never sent and never silently deleted.
func Open(cfg Config, logger *slog.Logger) (*Spool, error) {
	if cfg.Dir == "" || cfg.DeadLetterDir == "" {
		return nil, errors.New("opening spool: dir and dead-letter dir are required")
	}
	if cfg.MaxBytes <= 0 || cfg.MaxBatches <= 0 {
		return nil, fmt.Errorf("opening spool %s: max bytes %d and max batches %d must be positive", cfg.Dir, cfg.MaxBytes, cfg.MaxBatches)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		cfg:      cfg,
		logger:   logger.With("component", "spool"),
		entries:  make(map[string]*entry),
		pending:  make(map[string]int64),
		freed:    make(chan struct{}),
		added:    make(chan struct{}),
		closedCh: make(chan struct{}),
	}
	for _, d := range []string{cfg.Dir, cfg.DeadLetterDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("opening spool: creating %s: %w", d, err)
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

type found struct {
	id    string
	size  int64
	mtime time.Time
}

func (s *Spool) load() error {
	des, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("opening spool: reading %s: %w", s.cfg.Dir, err)
	}
	var frames []found
	for _, de := range des {
		name := de.Name()
		p := filepath.Join(s.cfg.Dir, name)
		switch {
		case de.IsDir():
			continue
		case strings.HasSuffix(name, tempExt):
			// A temp file is a Put that never reached its rename: the caller did not get
			// success, so the batch is still owed by whoever produced it.
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("opening spool: removing leftover temp file %s: %w", p, err)
			}
			s.logger.Warn("removed leftover spool temp file", "path", p)
		case strings.HasSuffix(name, frameExt):
			id := strings.TrimSuffix(name, frameExt)
			frame, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("opening spool: reading %s: %w", p, err)
			}
			reason := ""
			if checkID(id) != nil {
				reason = fmt.Sprintf("spool file name %q is not a batch id", name)
			} else if b, err := protocol.DecodeBatch(frame); err != nil {
				reason = fmt.Sprintf("corrupt spool frame found on open: %v", err)
			} else if b.Header.BatchID != id {
				reason = fmt.Sprintf("spool file %s holds batch %s", name, b.Header.BatchID)
			}
			if reason != "" {
				if err := s.moveAside(id, name, reason); err != nil {
					return err
				}
				continue
			}
			info, err := de.Info()
			if err != nil {
				return fmt.Errorf("opening spool: stat %s: %w", p, err)
			}
			frames = append(frames, found{id: id, size: int64(len(frame)), mtime: info.ModTime()})
		}
	}
	// Rename preserves the temp file's mtime, which was written at Put: the best record
	// of creation order that survives a restart.
	slices.SortStableFunc(frames, func(a, b found) int {
		if c := a.mtime.Compare(b.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, f := range frames {
		s.addLocked(f.id, f.size, f.mtime)
	}
	dead, err := os.ReadDir(s.cfg.DeadLetterDir)
	if err != nil {
		return fmt.Errorf("opening spool: reading dead-letter dir %s: %w", s.cfg.DeadLetterDir, err)
	}
	for _, de := range dead {
		if !de.IsDir() && strings.HasSuffix(de.Name(), frameExt) {
			s.dead++
		}
	}
	return nil
}

// moveAside moves a bad spool file to the dead-letter directory under a name that cannot
// collide with a real batch, with its reason.
func (s *Spool) moveAside(id, name, reason string) error {
	src := filepath.Join(s.cfg.Dir, name)
	base := "corrupt-" + time.Now().UTC().Format("20060102T150405.000000000") + "-" + sanitize(id)
	dst := filepath.Join(s.cfg.DeadLetterDir, base+frameExt)
	if err := durable.WriteFile(filepath.Join(s.cfg.DeadLetterDir, base+reasonExt), []byte(reason+"\n")); err != nil {
		return fmt.Errorf("opening spool: writing reason for %s: %w", src, err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("opening spool: moving corrupt frame %s aside: %w", src, err)
	}
	if err := durable.SyncDirs(s.cfg.Dir, s.cfg.DeadLetterDir); err != nil {
		return fmt.Errorf("opening spool: %w", err)
	}
	s.logger.Error("moved corrupt spool frame to dead-letter", "path", src, "dead_letter", dst, "reason", reason)
	return nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// checkID keeps batch ids usable as plain file names on every platform.
func checkID(id string) error {
	if err := protocol.ValidateID("batch", id); err != nil {
		return fmt.Errorf("%w: %v", ErrBadID, err)
	}
	return nil
}

func (s *Spool) addLocked(id string, size int64, at time.Time) {
	s.seq++
	e := &entry{id: id, size: size, seq: s.seq, at: at}
	s.entries[id] = e
	s.order = append(s.order, e)
	s.bytes += size
	close(s.added)
	s.added = make(chan struct{})
}

func (s *Spool) removeLocked(id string) {
	e := s.entries[id]
	delete(s.entries, id)
	s.bytes -= e.size
	if i := slices.Index(s.order, e); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
	close(s.freed)
	s.freed = make(chan struct{})
}

func (s *Spool) fitsLocked(size int64) bool {
	n := len(s.order) + len(s.pending)
	if n == 0 {
		return true
	}
	return n < s.cfg.MaxBatches && s.bytes+s.pendingB+size <= s.cfg.MaxBytes
}

// Put stores a frame durably under batchID. It returns only once the frame and its
// directory entry are fsynced. While the spool is full it waits for space (intake pauses,
// nothing is dropped) until ctx ends. Putting an id that is already spooled is a no-op:
// batch ids are deterministic, so it is the same batch.
func (s *Spool) Put(ctx context.Context, batchID string, frame []byte) error {
	if err := checkID(batchID); err != nil {
		return fmt.Errorf("spooling batch: %w", err)
	}
	size := int64(len(frame))
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			return fmt.Errorf("spooling batch %s: %w", batchID, ErrClosed)
		}
		if _, ok := s.entries[batchID]; ok {
			s.mu.Unlock()
			return nil
		}
		_, busy := s.pending[batchID]
		if !busy && s.fitsLocked(size) {
			break
		}
		// Wait for space, or for a concurrent Put of the same id to finish.
		wake := s.freed
		if busy {
			wake = s.added
		} else {
			s.blocked++
		}
		s.mu.Unlock()
		select {
		case <-wake:
		case <-s.closedCh:
		case <-ctx.Done():
		}
		s.mu.Lock()
		if !busy {
			s.blocked--
		}
		if ctx.Err() != nil {
			s.mu.Unlock()
			return fmt.Errorf("spooling batch %s: waiting for space: %w", batchID, ctx.Err())
		}
	}
	// Reserve the space before the slow write so concurrent Puts respect the bound; the
	// batch becomes visible to List and Get only once it is durable.
	s.pending[batchID] = size
	s.pendingB += size
	s.mu.Unlock()

	err := s.write(batchID, frame)

	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, batchID)
	s.pendingB -= size
	if err != nil {
		close(s.freed)
		s.freed = make(chan struct{})
		// Wake a concurrent Put of the same id so it retries the write itself.
		close(s.added)
		s.added = make(chan struct{})
		return err
	}
	s.addLocked(batchID, size, time.Now())
	return nil
}

func (s *Spool) write(batchID string, frame []byte) error {
	f, err := os.CreateTemp(s.cfg.Dir, "."+batchID+".*"+tempExt)
	if err != nil {
		return fmt.Errorf("spooling batch %s: creating temp file in %s: %w", batchID, s.cfg.Dir, err)
	}
	tmp := f.Name()
	fail := func(what string, err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("spooling batch %s: %s %s: %w", batchID, what, tmp, err)
	}
	if _, err := f.Write(frame); err != nil {
		return fail("writing", err)
	}
	if err := f.Sync(); err != nil {
		return fail("fsyncing", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spooling batch %s: closing %s: %w", batchID, tmp, err)
	}
	dst := filepath.Join(s.cfg.Dir, batchID+frameExt)
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spooling batch %s: renaming to %s: %w", batchID, dst, err)
	}
	if err := durable.SyncDirs(s.cfg.Dir); err != nil {
		return fmt.Errorf("spooling batch %s: %w", batchID, err)
	}
	return nil
}

// Get reads a spooled frame.
func (s *Spool) Get(batchID string) ([]byte, error) {
	if err := checkID(batchID); err != nil {
		return nil, fmt.Errorf("reading spooled batch: %w", err)
	}
	s.mu.Lock()
	_, ok := s.entries[batchID]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("reading spooled batch %s: %w", batchID, ErrNotFound)
	}
	p := filepath.Join(s.cfg.Dir, batchID+frameExt)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading spooled batch %s: %w", batchID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading spooled batch %s: %w", batchID, err)
	}
	return b, nil
}

// Has reports whether batchID is spooled (not yet deleted or dead-lettered).
func (s *Spool) Has(batchID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.entries[batchID]
	return ok
}

// List returns the spooled batch ids in creation order.
func (s *Spool) List() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, len(s.order))
	for i, e := range s.order {
		ids[i] = e.id
	}
	return ids
}

// Added returns a channel closed at the next Put, so a sender can wait for work.
func (s *Spool) Added() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added
}

// Delete removes a batch once the hub has acknowledged it. Deleting an id that is not
// spooled returns ErrNotFound.
func (s *Spool) Delete(batchID string) error {
	if err := checkID(batchID); err != nil {
		return fmt.Errorf("deleting spooled batch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[batchID]; !ok {
		return fmt.Errorf("deleting spooled batch %s: %w", batchID, ErrNotFound)
	}
	p := filepath.Join(s.cfg.Dir, batchID+frameExt)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting spooled batch %s: %w", batchID, err)
	}
	if err := durable.SyncDirs(s.cfg.Dir); err != nil {
		return fmt.Errorf("deleting spooled batch %s: %w", batchID, err)
	}
	s.removeLocked(batchID)
	return nil
}

// MoveToDeadLetter moves a batch the hub rejected to the dead-letter directory and writes
// <batch id>.reason.txt beside it. Nothing is deleted.
func (s *Spool) MoveToDeadLetter(batchID, reason string) error {
	if err := checkID(batchID); err != nil {
		return fmt.Errorf("dead-lettering batch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[batchID]; !ok {
		return fmt.Errorf("dead-lettering batch %s: %w", batchID, ErrNotFound)
	}
	src := filepath.Join(s.cfg.Dir, batchID+frameExt)
	dst := filepath.Join(s.cfg.DeadLetterDir, batchID+frameExt)
	// The reason goes first: a crash between the two leaves the batch spooled (it is
	// re-sent and rejected again), never a dead-letter frame without its reason.
	text := fmt.Sprintf("batch %s rejected at %s\n%s\n", batchID, time.Now().UTC().Format(time.RFC3339), reason)
	if err := durable.WriteFile(filepath.Join(s.cfg.DeadLetterDir, batchID+reasonExt), []byte(text)); err != nil {
		return fmt.Errorf("dead-lettering batch %s: writing reason: %w", batchID, err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("dead-lettering batch %s: moving %s to %s: %w", batchID, src, dst, err)
	}
	if err := durable.SyncDirs(s.cfg.DeadLetterDir, s.cfg.Dir); err != nil {
		return fmt.Errorf("dead-lettering batch %s: %w", batchID, err)
	}
	s.removeLocked(batchID)
	s.dead++
	s.logger.Warn("batch moved to dead-letter", "batch_id", batchID, "reason", reason)
	return nil
}

// Full reports whether a Put is waiting for space, or the spool is at a bound.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fullLocked()
}

func (s *Spool) fullLocked() bool {
	return s.blocked > 0 || len(s.order)+len(s.pending) >= s.cfg.MaxBatches || s.bytes+s.pendingB >= s.cfg.MaxBytes
}

// Stats returns the spool's current size.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Batches: len(s.order), Bytes: s.bytes, Full: s.fullLocked(), DeadLetters: s.dead}
	if len(s.order) > 0 {
		st.Oldest = s.order[0].at // creation order
	}
	return st
}

// Close wakes blocked Puts with ErrClosed. Spooled frames stay on disk. Safe to call twice.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.closedCh)
	}
	return nil
}
