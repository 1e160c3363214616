package gen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/medlake/medlake/protocol/feed"
)

// Output layout under Options.Out.
const (
	ExportsDir      = "exports"       // exports/<tenant>/<facility>/<archive>
	FeedsDir        = "feeds"         // feed definitions feed.ParseFS accepts
	FeedsPendingDir = "feeds-pending" // definitions that need feed format support not there yet
	ManifestFile    = "manifest.json"
	tmpDir          = ".gen-tmp" // partial archives; renamed into exports/ when complete
)

// ErrOutputExists is returned when the output directory already holds a data set.
var ErrOutputExists = errors.New("output directory already holds generated data")

// Run generates the data set described by opts. progress, if not nil, is called after
// each archive is written with the number written and the total; calls are serialized
// and done increases by one each time. Archives appear in exports/ only when complete
// (written under a temporary name and renamed), so a watching agent never sees a
// partial file. On error or cancellation the archives written so far are left in place
// and no manifest is written.
func Run(ctx context.Context, opts Options, progress func(done, total int)) (*Manifest, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p, err := makePlan(opts)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{ExportsDir, ManifestFile} {
		if _, err := os.Stat(filepath.Join(opts.Out, d)); err == nil {
			return nil, fmt.Errorf("%w: %s exists; choose another directory or remove it", ErrOutputExists, filepath.Join(opts.Out, d))
		}
	}
	tmp := filepath.Join(opts.Out, tmpDir)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("creating output directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	m := &Manifest{
		Version:     ManifestVersion,
		Seed:        opts.Seed,
		Options:     opts,
		WindowStart: p.start,
		WindowEnd:   p.end,
		Tenants:     p.tenants,
		Tables:      map[string]*Table{},
	}
	pending, err := writeFeeds(opts, m)
	if err != nil {
		return nil, err
	}
	for _, fp := range p.facilities {
		dir := filepath.Join(opts.Out, ExportsDir, fp.Tenant, fp.ID)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating export directory: %w", err)
		}
	}

	r := &runner{opts: opts, plan: p, tmp: tmp, progress: progress, pending: pending,
		total: len(p.facilities) * opts.FilesPerFacility}
	results, err := r.run(ctx)
	if err != nil {
		return nil, err
	}
	assemble(m, results)
	if err := writeManifest(opts.Out, m); err != nil {
		return nil, err
	}
	return m, nil
}

// writeFeeds writes one feed per entity and format, in feeds/ when feed.Parse accepts it
// and in feeds-pending/ otherwise, and reports which feeds are pending.
func writeFeeds(opts Options, m *Manifest) (map[string]bool, error) {
	pending := map[string]bool{}
	if err := os.MkdirAll(filepath.Join(opts.Out, FeedsDir), 0o755); err != nil {
		return nil, fmt.Errorf("creating feeds directory: %w", err)
	}
	for _, e := range entities {
		t := &Table{Keys: e.keys, ByFormat: map[string]Counts{}}
		for _, c := range e.cols {
			t.Columns = append(t.Columns, c.name)
		}
		for _, format := range opts.Formats {
			name := feedName(e, format)
			data := feedYAML(e, format)
			f := Feed{Name: name, Table: e.name, Format: format, Path: path.Join(FeedsDir, name+".yaml")}
			if _, err := feed.Parse(data); err != nil {
				if format != FormatXML && format != FormatDAT {
					return nil, fmt.Errorf("generated feed %s does not parse: %w", name, err)
				}
				f.Pending, f.PendingReason = true, strings.Join(strings.Fields(err.Error()), " ")
				f.Path = path.Join(FeedsPendingDir, name+".yaml")
				pending[name] = true
				if !slices.Contains(m.PendingFormats, format) {
					m.PendingFormats = append(m.PendingFormats, format)
				}
			}
			if err := writeFileAtomic(filepath.Join(opts.Out, filepath.FromSlash(f.Path)), data); err != nil {
				return nil, err
			}
			m.Feeds = append(m.Feeds, f)
			t.ByFormat[format] = Counts{KeyChecksum: "0", RowChecksum: "0"}
		}
		t.KeyChecksum, t.Ready.KeyChecksum = "0", "0"
		t.RowChecksum, t.Ready.RowChecksum = "0", "0"
		m.Tables[e.name] = t
	}
	if _, err := feed.ParseFS(os.DirFS(filepath.Join(opts.Out, FeedsDir))); err != nil {
		return nil, fmt.Errorf("generated feeds do not load together: %w", err)
	}
	return pending, nil
}

type runner struct {
	opts     Options
	plan     *plan
	tmp      string
	pending  map[string]bool // read-only once running
	progress func(done, total int)
	total    int

	mu   sync.Mutex // guards done and serializes progress calls
	done int
}

// fileResult is one written archive with its keys' checksum.
type fileResult struct {
	File
	sum, rowSum KeyChecksum
}

func (r *runner) fileDone() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done++
	if r.progress != nil {
		r.progress(r.done, r.total)
	}
}

// run generates facilities on a pool of workers. Each facility is generated by one
// worker from its own random streams, so scheduling never changes the output.
func (r *runner) run(ctx context.Context) ([][]fileResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([][]fileResult, len(r.plan.facilities))
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(r.opts.workers(), len(r.plan.facilities)) {
		wg.Go(func() {
			for i := range next {
				res, err := r.facility(ctx, r.plan.facilities[i])
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					continue
				}
				results[i] = res
			}
		})
	}
feed:
	for i := range r.plan.facilities {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("generating: %w", err)
	}
	return results, nil
}

func (r *runner) facility(ctx context.Context, fp *facilityPlan) ([]fileResult, error) {
	st := &facilityState{Facility: fp.Facility, kind: fp.kind}
	ar := newRand(r.opts.Seed, streamAttending, uint64(fp.num))
	for range 6 + ar.IntN(20) {
		st.attending = append(st.attending, fmt.Sprintf("%s, %s %s", lastNames[ar.IntN(len(lastNames))],
			firstNames[ar.IntN(len(firstNames))], []string{"MD", "MD", "MD", "DO", "NP", "PA-C"}[ar.IntN(6)]))
	}
	out := make([]fileResult, 0, len(fp.files))
	for _, pf := range fp.files {
		res, err := r.writeFile(ctx, st, fp, pf)
		if err != nil {
			return nil, fmt.Errorf("generating %s for facility %s: %w", pf.name(), fp.ID, err)
		}
		out = append(out, res)
		r.fileDone()
	}
	return out, nil
}

func (r *runner) writeFile(ctx context.Context, st *facilityState, fp *facilityPlan, pf *plannedFile) (fileResult, error) {
	p := r.plan
	span := p.end.Sub(p.start) / time.Duration(r.opts.FilesPerFacility)
	from := p.start.Add(span * time.Duration(pf.index))
	to := from.Add(span)
	rel := path.Join(ExportsDir, fp.Tenant, fp.ID, pf.name())
	res := fileResult{File: File{
		Path: rel, Tenant: fp.Tenant, Facility: fp.ID, Table: pf.ent.name, Feed: feedName(pf.ent, pf.format),
		Format: pf.format, Archive: pf.archive, Large: pf.large, From: from, To: to,
	}}
	res.Pending = r.pending[res.Feed]

	f, err := os.CreateTemp(r.tmp, "archive-*")
	if err != nil {
		return res, fmt.Errorf("creating temporary archive: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	s := newSink(f)
	aw, err := newArchiveWriter(pf.archive, s, r.tmp, to)
	if err != nil {
		return res, err
	}
	e := pf.ent
	g := &rowGen{
		rng:  newRand(r.opts.Seed, streamRows, uint64(fp.num)<<24|uint64(pf.index)),
		fac:  st,
		from: from.Unix(), to: to.Unix(), end: p.end.Unix(),
		vals: make([]value, len(e.cols)),
	}
	keyIdx := e.keyIndexes()
	keyVals := make([]string, len(keyIdx))
	var row []byte
	addKey := func() {
		for i, k := range keyIdx {
			keyVals[i] = g.vals[k].s
		}
		res.sum.Add(keyVals...)
		row = row[:0]
		for i, v := range g.vals {
			if i > 0 {
				row = append(row, fieldSep)
			}
			row = v.appendCanonical(row)
		}
		res.rowSum.AddBytes(row)
	}

	var werr error
	if pf.format == FormatXML {
		var doc []byte
		g.emit = func() {
			if werr != nil {
				return
			}
			name := pf.entryName(len(res.Entries))
			w, err := aw.create(name)
			if err != nil {
				werr = fmt.Errorf("adding %s: %w", name, err)
				return
			}
			doc = appendXMLRecord(doc[:0], e, st.ID, g.vals)
			if _, err := w.Write(doc); err != nil {
				werr = fmt.Errorf("writing %s: %w", name, err)
				return
			}
			addKey()
			res.Entries = append(res.Entries, Entry{Name: name, Rows: 1})
		}
		for n := 0; len(res.Entries) < pf.records && werr == nil; n++ {
			if n%64 == 0 && ctx.Err() != nil {
				return res, ctx.Err()
			}
			e.gen(g)
		}
	} else {
		z := sizer{aw: aw}
		for i := range pf.entries {
			name := pf.entryName(i)
			w, err := aw.create(name)
			if err != nil {
				return res, fmt.Errorf("adding %s: %w", name, err)
			}
			dw := newDelimWriter(w, styles[pf.format])
			z.startEntry(dw, pf.target*int64(i+1)/int64(pf.entries))
			dw.header(e.cols)
			ent := Entry{Name: name}
			g.emit = func() {
				dw.row(e.cols, g.vals)
				addKey()
				ent.Rows++
			}
			for n := 0; ; n++ {
				if n%256 == 0 && ctx.Err() != nil {
					return res, ctx.Err()
				}
				e.gen(g)
				if dw.err != nil {
					return res, fmt.Errorf("writing %s: %w", name, dw.err)
				}
				done, err := z.reached()
				if err != nil {
					return res, fmt.Errorf("writing %s: %w", name, err)
				}
				if done {
					break
				}
			}
			if err := dw.flush(); err != nil {
				return res, fmt.Errorf("writing %s: %w", name, err)
			}
			z.endEntry()
			res.Entries = append(res.Entries, ent)
		}
	}
	if werr != nil {
		return res, werr
	}
	if err := aw.close(); err != nil {
		return res, fmt.Errorf("closing archive: %w", err)
	}
	if err := s.bw.Flush(); err != nil {
		return res, fmt.Errorf("writing archive: %w", err)
	}
	if err := f.Close(); err != nil {
		return res, fmt.Errorf("writing archive: %w", err)
	}
	tmpName := f.Name()
	f = nil
	final := filepath.Join(r.opts.Out, filepath.FromSlash(rel))
	if err := os.Chtimes(tmpName, to, to); err != nil {
		os.Remove(tmpName)
		return res, fmt.Errorf("setting archive time: %w", err)
	}
	if err := os.Rename(tmpName, final); err != nil {
		os.Remove(tmpName)
		return res, fmt.Errorf("moving archive into place: %w", err)
	}
	res.Bytes, res.SHA256, res.KeyChecksum, res.RowChecksum = s.n, s.sum(), res.sum.String(), res.rowSum.String()
	for _, en := range res.Entries {
		res.Rows += en.Rows
	}
	return res, nil
}

// sizer decides when an archive has reached its target compressed size. Compressors
// buffer, so it estimates the pending output from the compression ratio seen so far
// and flushes (which makes the size exact) only once the estimate reaches the target.
type sizer struct {
	aw       archiveWriter
	dw       *delimWriter
	target   int64
	rawDone  int64 // raw bytes of finished entries
	lastOut  int64
	rawAtOut int64 // raw bytes handed to the compressor when its output last grew
}

func (z *sizer) startEntry(dw *delimWriter, target int64) { z.dw, z.target = dw, target }
func (z *sizer) endEntry()                                { z.rawDone += z.dw.raw; z.dw = nil }

func (z *sizer) reached() (bool, error) {
	raw := z.rawDone + z.dw.raw
	out := z.aw.size()
	if out != z.lastOut {
		z.lastOut, z.rawAtOut = out, raw-int64(len(z.dw.buf))
	}
	ratio := 0.25 // until a block is out, guess high: an early flush is cheaper than overshooting
	if out >= 1024 && z.rawAtOut > 0 {
		ratio = float64(out) / float64(z.rawAtOut)
	}
	if out+int64(float64(raw-z.rawAtOut)*ratio) < z.target {
		return false, nil
	}
	if err := z.dw.flush(); err != nil {
		return false, err
	}
	if err := z.aw.flush(); err != nil {
		return false, err
	}
	z.lastOut, z.rawAtOut = z.aw.size(), raw
	return z.lastOut >= z.target, nil
}

// assemble fills the manifest's files and table counts from the per-facility results.
func assemble(m *Manifest, results [][]fileResult) {
	type acc struct{ all, ready, allRows, readyRows KeyChecksum }
	sums := map[string]*acc{}
	byFormat := map[string]map[string]*[2]KeyChecksum{}
	for _, rs := range results {
		for _, r := range rs {
			m.Files = append(m.Files, r.File)
			m.Rows += r.Rows
			m.Bytes += r.Bytes
			t := m.Tables[r.Table]
			a := sums[r.Table]
			if a == nil {
				a = &acc{}
				sums[r.Table] = a
				byFormat[r.Table] = map[string]*[2]KeyChecksum{}
			}
			a.all.Merge(r.sum)
			a.allRows.Merge(r.rowSum)
			t.Files++
			if !r.Pending {
				a.ready.Merge(r.sum)
				a.readyRows.Merge(r.rowSum)
				t.Ready.Files++
			}
			fs := byFormat[r.Table][r.Format]
			if fs == nil {
				fs = &[2]KeyChecksum{}
				byFormat[r.Table][r.Format] = fs
			}
			fs[0].Merge(r.sum)
			fs[1].Merge(r.rowSum)
			c := t.ByFormat[r.Format]
			c.Files++
			t.ByFormat[r.Format] = c
		}
	}
	for name, a := range sums {
		t := m.Tables[name]
		t.Rows, t.KeyChecksum, t.RowChecksum = a.all.Count(), a.all.String(), a.allRows.String()
		t.Ready.Rows, t.Ready.KeyChecksum, t.Ready.RowChecksum = a.ready.Count(), a.ready.String(), a.readyRows.String()
		for format, s := range byFormat[name] {
			c := t.ByFormat[format]
			c.Rows, c.KeyChecksum, c.RowChecksum = s[0].Count(), s[0].String(), s[1].String()
			t.ByFormat[format] = c
		}
	}
	slices.SortFunc(m.Files, func(a, b File) int {
		switch {
		case a.Path < b.Path:
			return -1
		case a.Path > b.Path:
			return 1
		}
		return 0
	})
}

func writeManifest(dir string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, ManifestFile), append(data, '\n'))
}

func writeFileAtomic(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return fmt.Errorf("creating directory for %s: %w", name, err)
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}
