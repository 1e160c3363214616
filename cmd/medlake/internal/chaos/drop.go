package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
)

// dropper moves the generated archives into the facilities' watched folders as an
// export job does (temporary name, then rename). Its methods are safe for concurrent
// use.
//
// The schedule spreads the files evenly over the fault phase in a seeded order, except
// the last file of every facility, held back for after the last fault so that every
// fault, the last one included, is followed by work to recover into. next drops a
// facility's next file at once, for an agent just restored.
type dropper struct {
	genDir string
	watch  map[string]string // facility → watched folder

	mu      sync.Mutex
	order   []gen.File            // guarded by mu; the schedule, tail excluded
	queue   map[string][]gen.File // guarded by mu; per facility, in schedule order, tail excluded
	tail    map[string]gen.File   // guarded by mu; held back per facility
	dropped map[string]bool       // guarded by mu; by path
	at      map[string]time.Time  // guarded by mu; when each file was dropped, by SHA-256
}

func newDropper(m *gen.Manifest, genDir string, watch map[string]string, seed int64) *dropper {
	var files []gen.File
	for _, f := range m.Files {
		if !f.Pending {
			files = append(files, f)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x64726f70)) // "drop"
	rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	d := &dropper{genDir: genDir, watch: watch, queue: map[string][]gen.File{}, tail: map[string]gen.File{}, dropped: map[string]bool{}, at: map[string]time.Time{}}
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		if _, ok := d.tail[f.Facility]; !ok {
			d.tail[f.Facility] = f
			continue
		}
		d.order = append([]gen.File{f}, d.order...)
	}
	for _, f := range d.order {
		d.queue[f.Facility] = append(d.queue[f.Facility], f)
	}
	return d
}

// run drops the scheduled files spread over span.
func (d *dropper) run(ctx context.Context, span time.Duration) error {
	start := time.Now()
	d.mu.Lock()
	n := len(d.order)
	d.mu.Unlock()
	for i := range n {
		due := start.Add(span * time.Duration(i) / time.Duration(n))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(due)):
		}
		d.mu.Lock()
		f := d.order[i]
		err := d.dropLocked(f)
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// next drops the facility's next scheduled file now, or its held-back file when none
// is left.
func (d *dropper) next(facility string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.queue[facility] {
		if !d.dropped[f.Path] {
			return d.dropLocked(f)
		}
	}
	if f, ok := d.tail[facility]; ok && !d.dropped[f.Path] {
		return d.dropLocked(f)
	}
	return nil
}

// rest drops every file not dropped yet.
func (d *dropper) rest() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.order {
		if err := d.dropLocked(f); err != nil {
			return err
		}
	}
	for _, f := range d.tail {
		if err := d.dropLocked(f); err != nil {
			return err
		}
	}
	return nil
}

// count is how many files have been dropped.
func (d *dropper) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.dropped)
}

// dropLocked drops f unless it was dropped already.
func (d *dropper) dropLocked(f gen.File) error {
	if d.dropped[f.Path] {
		return nil
	}
	dir, ok := d.watch[f.Facility]
	if !ok {
		return fmt.Errorf("no agent watches facility %s", f.Facility)
	}
	data, err := os.ReadFile(filepath.Join(d.genDir, filepath.FromSlash(f.Path)))
	if err != nil {
		return fmt.Errorf("reading %s: %w", f.Path, err)
	}
	dst := filepath.Join(dir, filepath.Base(f.Path))
	if err := os.WriteFile(dst+".tmp", data, 0o644); err != nil {
		return fmt.Errorf("dropping %s: %w", f.Path, err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		return fmt.Errorf("dropping %s: %w", f.Path, err)
	}
	d.dropped[f.Path] = true
	d.at[f.SHA256] = time.Now()
	if st, err := os.Stat(dst); err == nil {
		d.at[f.SHA256] = st.ModTime() // what the agent measures freshness from
	}
	return nil
}

// droppedAt returns when each dropped file was dropped (its mtime), by SHA-256.
func (d *dropper) droppedAt() map[string]time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.at)
}
