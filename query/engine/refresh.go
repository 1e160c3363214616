package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"golang.org/x/sync/errgroup"

	"github.com/medlake/medlake/query/cache"
)

// defaultRefreshParallel is Config.RefreshParallel's default.
const defaultRefreshParallel = 4

// Refresh triggers, as RefreshStats.Trigger reports them.
const (
	TriggerStart  = "start"  // New's first refresh
	TriggerPoll   = "poll"   // Run's RefreshInterval tick
	TriggerNotice = "notice" // a Notify
	TriggerCall   = "call"   // a caller's Refresh
)

// RefreshStats says what one refresh did.
type RefreshStats struct {
	Trigger  string
	Duration time.Duration
	Tables   int // tables in the namespace
	Loaded   int // tables whose metadata was read (changed, new, or all without a locator)
	Replaced int // views rebuilt on a new snapshot or schema
	Dropped  int // views of tables gone from the catalog
	Failed   int // tables whose refresh failed (their previous view stays)
}

// Run refreshes the views every RefreshInterval, and at once after a Notify, until ctx
// is done. A failed refresh is logged and retried; the previous views keep serving.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.RefreshInterval)
	defer t.Stop()
	for {
		trigger := TriggerPoll
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.wake:
			trigger = TriggerNotice
		}
		if err := e.refresh(ctx, trigger); err != nil && ctx.Err() == nil {
			e.logger.Warn("refreshing table views failed", "trigger", trigger, "err", err)
		}
	}
}

// Notify tells Run that table has a new commit, so that it refreshes now instead of at
// its next tick. It never blocks: notices that arrive while a refresh is pending are
// folded into it, and one that arrives during a refresh makes one more. The refresh it
// causes finds every changed table, not only this one.
func (e *Engine) Notify(table string) {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Refresh brings every table's view to its current snapshot and drops the views of
// tables gone from the catalog. Tables that fail keep their previous view; the errors
// are joined.
func (e *Engine) Refresh(ctx context.Context) error {
	trigger := TriggerCall
	e.refreshMu.Lock()
	if !e.started {
		trigger = TriggerStart
	}
	e.refreshMu.Unlock()
	return e.refresh(ctx, trigger)
}

// refreshTarget is a table a refresh looks at: by its catalog location when a locator
// found it, else by identifier only (loaded from the catalog).
type refreshTarget struct {
	name    string
	ident   table.Identifier
	metaLoc string // "" without a locator
}

// preparedView is a target after its I/O: the table loaded, its files planned and in
// the cache. install turns it into the view.
type preparedView struct {
	target refreshTarget
	tbl    *table.Table
	// same: the view already shows this snapshot and schema; only its location moves.
	same bool
	objs []cache.Object
	mor  *mergeOnRead
	err  error
	// Set by install when it replaced the view: the snapshot the view showed before
	// (-1: none) and whether the table had no view.
	replaced     bool
	prevSnapshot int64
	isNew        bool
}

// refresh is Refresh with the trigger reported to the observer. Under refreshMu it
// finds the tables that changed since the views were built, loads and plans them
// RefreshParallel at a time and fetches their new files (the slow part: object store
// reads), then replaces their views one after another on the admin connection, and
// last records the new tables' metadata, several at once (finish). Each view is
// replaced by one CREATE OR REPLACE VIEW, so a query sees a table's old snapshot or
// its new one, never a mix.
func (e *Engine) refresh(ctx context.Context, trigger string) error {
	start := time.Now()
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	if e.isClosed() {
		return errors.New("engine closed")
	}
	stats := RefreshStats{Trigger: trigger}
	defer func() {
		if e.onRefresh != nil {
			stats.Duration = time.Since(start)
			e.onRefresh(stats)
		}
	}()
	targets, gone, tables, err := e.changedTables(ctx)
	if err != nil {
		return err
	}
	stats.Tables = tables
	var errs []error
	prepared := e.prepareAll(ctx, targets)
	for _, p := range prepared {
		stats.Loaded++
		if p.err == nil {
			var replaced bool
			replaced, p.err = e.install(ctx, p)
			if replaced {
				stats.Replaced++
			}
		}
		if p.err != nil {
			stats.Failed++
			errs = append(errs, fmt.Errorf("table %s: %w", p.target.name, p.err))
		}
	}
	e.finish(ctx, prepared)
	for _, name := range gone {
		if _, err := e.admin.ExecContext(ctx, "DROP VIEW IF EXISTS "+quoteIdent(name)); err != nil {
			errs = append(errs, fmt.Errorf("dropping view of removed table %s: %w", name, err))
			continue
		}
		e.mu.Lock()
		v := e.views[name]
		delete(e.views, name)
		e.mu.Unlock()
		e.meta.note(ctx, name, nil, nil, e.logger)
		e.release(v.objects)
		e.release(v.prev)
		stats.Dropped++
		e.generation.Add(1)
		e.logger.Info("table view dropped", "table", name)
	}
	return errors.Join(errs...)
}

// changedTables returns the tables to load, the views whose tables are gone and how
// many tables the namespace has. With a
// locator it reads every table's metadata location in one catalog query and returns
// only the tables whose location differs from their view's (every commit writes a new
// metadata file). Without one it lists the namespace and returns every table.
func (e *Engine) changedTables(ctx context.Context) (targets []refreshTarget, gone []string, tables int, err error) {
	seen := map[string]bool{}
	if e.locator != nil {
		locs, err := e.locator.TableLocations(ctx, e.namespace)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("listing tables of namespace %s: %w", strings.Join(e.namespace, "."), err)
		}
		e.mu.Lock()
		for name, loc := range locs {
			seen[name] = true
			if v, ok := e.views[name]; ok && v.metaLoc == loc {
				continue
			}
			targets = append(targets, refreshTarget{name: name, ident: e.ident(name), metaLoc: loc})
		}
		e.mu.Unlock()
	} else {
		for ident, err := range e.cat.ListTables(ctx, e.namespace) {
			if err != nil {
				return nil, nil, 0, fmt.Errorf("listing tables of namespace %s: %w", strings.Join(e.namespace, "."), err)
			}
			name := ident[len(ident)-1]
			seen[name] = true
			targets = append(targets, refreshTarget{name: name, ident: ident})
		}
	}
	e.mu.Lock()
	for name := range e.views {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	e.mu.Unlock()
	slices.SortFunc(targets, func(a, b refreshTarget) int { return strings.Compare(a.name, b.name) })
	slices.Sort(gone)
	return targets, gone, len(seen), nil
}

func (e *Engine) ident(name string) table.Identifier {
	return append(append(table.Identifier{}, e.namespace...), name)
}

// prepareAll prepares targets, RefreshParallel at a time, and returns them in targets'
// order once every one is done.
func (e *Engine) prepareAll(ctx context.Context, targets []refreshTarget) []*preparedView {
	out := make([]*preparedView, len(targets))
	var g errgroup.Group
	g.SetLimit(e.cfg.RefreshParallel)
	for i, t := range targets {
		g.Go(func() error {
			out[i] = e.prepare(ctx, t)
			return nil
		})
	}
	_ = g.Wait() // each view's error is in its preparedView
	return out
}

// prepare loads a target's table and, when its snapshot or schema differs from its
// view's, plans its files and brings them into the cache. It touches no view and no
// DuckDB connection, so several run at once.
func (e *Engine) prepare(ctx context.Context, t refreshTarget) *preparedView {
	p := &preparedView{target: t}
	if p.tbl, p.err = e.loadTarget(ctx, t); p.err != nil {
		return p
	}
	p.target.metaLoc = p.tbl.MetadataLocation()
	snapID, schemaID := currentSnapshotID(p.tbl), p.tbl.Schema().ID
	e.mu.Lock()
	old := e.views[t.name]
	e.mu.Unlock()
	if old != nil && old.snapshotID == snapID && old.schemaID == schemaID {
		p.same = true
		return p
	}
	if snapID != -1 {
		p.objs, p.mor, p.err = e.fetchSnapshotAt(ctx, p.tbl, nil)
	}
	return p
}

// loadTarget loads a target's table reading its files through the engine's shared IO
// and manifest cache: from its metadata location when the locator gave it, else from
// the catalog.
func (e *Engine) loadTarget(ctx context.Context, t refreshTarget) (*table.Table, error) {
	if t.metaLoc != "" {
		tbl, err := table.NewFromLocation(ctx, t.ident, t.metaLoc, e.files.fsFor(t.metaLoc, nil), e.cat)
		if err != nil {
			return nil, fmt.Errorf("loading table metadata %s: %w", t.metaLoc, err)
		}
		return tbl, nil
	}
	tbl, err := e.cat.LoadTable(withValues(ctx, e.values), t.ident)
	if err != nil {
		return nil, fmt.Errorf("loading table: %w", err)
	}
	return table.New(t.ident, tbl.Metadata(), tbl.MetadataLocation(), e.files.fsFor(tbl.MetadataLocation(), tbl.FS), e.cat), nil
}

func currentSnapshotID(tbl *table.Table) int64 {
	if s := tbl.CurrentSnapshot(); s != nil {
		return s.SnapshotID
	}
	return -1
}

// install replaces a prepared table's view and reports whether it did (false: the
// snapshot and schema were the view's already). On error the previous view stays and
// the prepared objects are released.
func (e *Engine) install(ctx context.Context, p *preparedView) (bool, error) {
	name := p.target.name
	e.mu.Lock()
	old := e.views[name]
	if p.same && old != nil {
		old.metaLoc = p.target.metaLoc
		e.mu.Unlock()
		return false, nil
	}
	e.mu.Unlock()
	tbl, objs := p.tbl, p.objs
	snapID := currentSnapshotID(tbl)
	var body string
	var have map[string]bool
	var err error
	switch {
	case snapID == -1:
		body, err = emptySelect(tbl.Schema())
	case p.mor.active() || len(objs) == 0:
		body, err = e.snapshotBody(ctx, tbl.Schema(), objs, p.mor)
	default:
		body, have, err = e.appendBody(ctx, tbl.Schema(), objs, old)
	}
	if err != nil {
		e.release(objs)
		return false, err
	}
	ddl := "CREATE OR REPLACE VIEW " + quoteIdent(name) + " AS " + body
	if _, err := e.admin.ExecContext(ctx, ddl); err != nil {
		e.release(objs)
		return false, fmt.Errorf("creating view for snapshot %d: %w", snapID, err)
	}
	_, hasTenant := tbl.Schema().FindFieldByName(tenantColumn)
	_, hasFacility := tbl.Schema().FindFieldByName(facilityColumn)
	nv := &view{metaLoc: p.target.metaLoc, snapshotID: snapID, schemaID: tbl.Schema().ID, objects: objs, have: have,
		scope: tableScope{name: name, hasTenant: hasTenant, hasFacility: hasFacility}}
	if old != nil {
		e.release(old.prev)
		nv.prev = old.objects
	}
	e.mu.Lock()
	e.views[name] = nv
	e.mu.Unlock()
	p.replaced, p.prevSnapshot = true, -1
	if old != nil {
		p.prevSnapshot = old.snapshotID
	}
	p.isNew = old == nil
	e.logger.Info("table view refreshed", "table", name, "snapshot_id", snapID, "data_files", len(objs))
	return true, nil
}

// finish completes the views install replaced: it records their tables' metadata
// (pruning index and rollup pairs, which plan the tables' files again), several at
// once, then moves the generation so prepared statements rebind, and reports the
// snapshots made visible.
func (e *Engine) finish(ctx context.Context, prepared []*preparedView) {
	var done []*preparedView
	for _, p := range prepared {
		if p.err == nil && p.replaced {
			done = append(done, p)
		}
	}
	if len(done) == 0 {
		return
	}
	var g errgroup.Group
	g.SetLimit(e.cfg.RefreshParallel)
	for _, p := range done {
		g.Go(func() error {
			e.meta.note(ctx, p.target.name, p.tbl, p.objs, e.logger)
			return nil
		})
	}
	_ = g.Wait() // note logs its own failures
	e.generation.Add(1)
	if e.onVisible == nil {
		return
	}
	now := time.Now()
	for _, p := range done {
		switch snapID := currentSnapshotID(p.tbl); {
		case !p.isNew && p.prevSnapshot != snapID:
			e.reportVisible(p.target.name, p.tbl, p.prevSnapshot, now)
		case p.isNew && e.started:
			e.reportVisible(p.target.name, p.tbl, -1, now) // a table created since the engine started
		}
	}
}

// appendBody is snapshotBody for a view without deletes, which also returns the
// columns its files hold. It learns them with DESCRIBE, which reads every file's
// footer; when the files are the old view's and more (an append: the usual commit),
// it describes only the added files and adds their columns to the old view's, the
// union being the same.
func (e *Engine) appendBody(ctx context.Context, s *iceberg.Schema, objs []cache.Object, old *view) (string, map[string]bool, error) {
	body := parquetSelect(objs)
	var have map[string]bool
	if added, ok := addedObjects(old, objs); ok {
		have = maps.Clone(old.have)
		if len(added) > 0 {
			cols, err := e.describeColumns(ctx, parquetSelect(added))
			if err != nil {
				return "", nil, err
			}
			maps.Copy(have, cols)
		}
	} else {
		var err error
		if have, err = e.describeColumns(ctx, body); err != nil {
			return "", nil, err
		}
	}
	return addMissingColumns(body, s, have), have, nil
}

// addedObjects returns the objects of objs the old view did not read, when it read
// no file that objs lacks and knows its columns; ok false otherwise.
func addedObjects(old *view, objs []cache.Object) (added []cache.Object, ok bool) {
	if old == nil || old.have == nil {
		return nil, false
	}
	now := make(map[string]bool, len(objs))
	for _, o := range objs {
		now[o.Location] = true
	}
	before := make(map[string]bool, len(old.objects))
	for _, o := range old.objects {
		if !now[o.Location] {
			return nil, false
		}
		before[o.Location] = true
	}
	for _, o := range objs {
		if !before[o.Location] {
			added = append(added, o)
		}
	}
	return added, true
}
