package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
	"github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/query/cache"
)

// DefaultRefreshInterval is how often Run polls the catalog for new snapshots.
const DefaultRefreshInterval = 2 * time.Second

// PropSourceMtimeMin is the snapshot summary property in which the hub writes the
// oldest source file mtime among the snapshot's batches (Unix milliseconds).
const PropSourceMtimeMin = "medlake.source_mtime_min"

// Visible reports a snapshot that became visible to queries at a refresh.
type Visible struct {
	Table       string
	SnapshotID  int64
	CommittedAt time.Time // the snapshot's timestamp (committing hub's clock)
	// SourceMtimeMin is the oldest source file mtime of the snapshot's batches, zero
	// when the snapshot does not say (not written by a medlake hub, or a compaction).
	SourceMtimeMin time.Time
	VisibleAt      time.Time // when the view showing it was in place (this host's clock)
}

// Option adjusts an Engine at construction.
type Option func(*Engine)

// WithVisibilityObserver has fn called, from the refreshing goroutine, for every
// snapshot a refresh makes visible, including the intermediate snapshots a refresh
// skips over; not for the snapshots the first refresh (in New) finds.
func WithVisibilityObserver(fn func(Visible)) Option {
	return func(e *Engine) { e.onVisible = fn }
}

// WithTableLocator has refreshes find changed tables with one catalog read of every
// table's metadata location (TableLocator) and load only those, from their location,
// instead of loading every table from the catalog at every refresh.
func WithTableLocator(l TableLocator) Option {
	return func(e *Engine) { e.locator = l }
}

// WithRefreshObserver has fn called, from the refreshing goroutine, after every
// refresh with what it did.
func WithRefreshObserver(fn func(RefreshStats)) Option {
	return func(e *Engine) { e.onRefresh = fn }
}

// TableLocator lists a namespace's tables with the locations of their current metadata
// files in one catalog read, and gives the properties (warehouse, s3.*) their files are
// read with. catalog.Catalog implements it. Implementations are safe for concurrent use.
type TableLocator interface {
	TableLocations(ctx context.Context, namespace table.Identifier) (map[string]string, error)
	Properties() iceberg.Properties
}

// maxVisibleWalk bounds how many snapshots one refresh reports as visible.
const maxVisibleWalk = 1000

// fetchParallel bounds the files one table's refresh downloads into the cache at once.
const fetchParallel = 4

// Config configures an Engine.
type Config struct {
	// CacheDir holds the local Parquet cache; DuckDB may read nothing else.
	CacheDir string `yaml:"cache_dir"`
	// CacheMaxBytes bounds the cache (default cache.DefaultMaxBytes).
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
	// RefreshInterval is the snapshot poll period of Run (default 2s). Run also
	// refreshes at once when Notify says a table changed.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// RefreshParallel bounds the tables a refresh loads and plans at once (default 4).
	RefreshParallel int `yaml:"refresh_parallel"`
	// ManifestCacheBytes bounds the manifest files kept in memory between refreshes
	// (default DefaultManifestCacheBytes).
	ManifestCacheBytes int64 `yaml:"manifest_cache_bytes"`
	// Threads and MemoryLimit tune DuckDB; zero/empty keep its defaults.
	// MemoryLimit bounds all queries together (DuckDB has no per-query
	// bound); a query that needs more than is left fails with SQLSTATE
	// 53200 and the others go on.
	Threads     int    `yaml:"threads"`
	MemoryLimit string `yaml:"memory_limit"`
	// StatementTimeout cancels a statement running longer (SQLSTATE 57014).
	// Zero: no limit.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// MaxConcurrent bounds the statements running at once; others wait for
	// a slot (their own deadline still applies). Zero: no bound.
	MaxConcurrent int `yaml:"max_concurrent"`
	// Setup are statements run once when the database is opened, after the
	// lockdown and before the first views: schemas, macros and views that
	// the protocols add (pgwire's PostgreSQL catalog emulation). They are
	// code, never user input.
	Setup []string `yaml:"-"`
	// MetadataSchemas name schemas of Setup whose views and macros describe
	// table and column names only (pgwire's PostgreSQL catalog), so tenant
	// users may read and call them as they may information_schema.
	MetadataSchemas []string `yaml:"-"`
}

// ErrNotReadOnly is returned for any statement that is not a single SELECT:
// the engine's DuckDB database is shared by all sessions, so writes, DDL,
// COPY and settings are refused before DuckDB sees them.
var ErrNotReadOnly = errors.New("only single read-only SELECT statements are allowed")

// ErrResultChanged is returned when a prepared statement's result columns changed since
// it was prepared because a table's schema evolved; the client must prepare it again.
var ErrResultChanged = errors.New("cached plan must not change result type")

// Engine serves SQL over the current snapshots of every table in one Iceberg
// namespace through an in-memory DuckDB database.
//
// Freshness: views are rebuilt by Refresh, which New calls once and Run calls
// every RefreshInterval and whenever Notify reports a commit; a query never
// triggers catalog I/O, so its latency does not depend on the catalog or the
// object store. Queries see a table's snapshot as of the last refresh (with
// commit notices, the refresh's own time behind the commit; without, at most
// RefreshInterval more).
//
// Concurrency: all methods are safe for concurrent use. refreshMu serializes
// refreshes; mu guards views and closed. Lock order: refreshMu, then mu.
type Engine struct {
	cfg       Config
	cat       icecatalog.Catalog
	namespace table.Identifier
	logger    *slog.Logger
	cache     *cache.Cache
	connector *duckdb.Connector
	db        *sql.DB
	admin     *sql.Conn // DDL for views; owned by refresh (refreshMu)
	// metaSchemas are cfg.MetadataSchemas, lower-cased; read-only after New.
	metaSchemas map[string]bool
	// slots holds a token per running statement when cfg.MaxConcurrent > 0.
	slots chan struct{}

	refreshMu sync.Mutex
	onVisible func(Visible)      // nil: none; fixed after New
	onRefresh func(RefreshStats) // nil: none; fixed after New
	locator   TableLocator       // nil: list and load every table from cat; fixed after New
	files     *tableIO           // the file IO tables are read through; fixed after New
	// values is New's context without its cancellation: what it carries (the object
	// store's shared connections) serves statements' own table loads too.
	values context.Context
	// wake holds a pending Notify for Run (capacity 1).
	wake chan struct{}
	// started is set once New's first refresh is done: tables that appear after it are
	// reported as visible from their first snapshot. Guarded by refreshMu.
	started bool

	// history are the snapshot and table_changes views admins' queries built
	// (history.go), oldest first. Guarded by refreshMu.
	history []historyView

	mu     sync.Mutex
	views  map[string]*view // table name -> current view
	closed bool

	// generation counts view replacements. DuckDB inlines a view into a prepared
	// statement's plan and does not rebind it when the view is replaced, so a statement
	// prepared before a refresh would keep reading the old snapshot; statements compare
	// this counter and prepare again when it moved.
	generation atomic.Int64

	meta tableMeta // the snapshots and files behind the views, for rollups.go and prune.go
}

// view is a table's DuckDB view and the cache objects it reads. prev holds
// the objects of the view it replaced: they stay pinned until the next
// refresh so queries bound to the old view can still open its files.
type view struct {
	metaLoc    string // the metadata file the view was built from
	snapshotID int64  // -1: no snapshot (empty table)
	schemaID   int
	scope      tableScope
	// have are the columns the view's data files hold together; nil: not known (a
	// view applying deletes, or an empty table).
	have    map[string]bool
	objects []cache.Object
	prev    []cache.Object
}

// New opens DuckDB locked down to the cache directory and builds a view for
// every table in namespace.
func New(ctx context.Context, cfg Config, cat icecatalog.Catalog, namespace string, logger *slog.Logger, opts ...Option) (*Engine, error) {
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.RefreshParallel <= 0 {
		cfg.RefreshParallel = defaultRefreshParallel
	}
	if namespace == "" {
		return nil, errors.New("engine: namespace is empty")
	}
	c, err := cache.New(cache.Config{Dir: cfg.CacheDir, MaxBytes: cfg.CacheMaxBytes}, logger)
	logger = logger.With("component", "query/engine")
	if err != nil {
		return nil, fmt.Errorf("opening query cache: %w", err)
	}
	connector, err := duckdb.NewConnector("", nil)
	if err != nil {
		return nil, fmt.Errorf("opening duckdb: %w", err)
	}
	db := sql.OpenDB(connector)
	e := &Engine{
		cfg: cfg, cat: cat, namespace: table.Identifier{namespace}, logger: logger,
		cache: c, connector: connector, db: db, views: map[string]*view{},
		metaSchemas: map[string]bool{}, wake: make(chan struct{}, 1), values: context.WithoutCancel(ctx),
	}
	for _, m := range cfg.MetadataSchemas {
		e.metaSchemas[strings.ToLower(m)] = true
	}
	if cfg.MaxConcurrent > 0 {
		e.slots = make(chan struct{}, cfg.MaxConcurrent)
	}
	for _, o := range opts {
		o(e)
	}
	var props iceberg.Properties
	if e.locator != nil {
		props = e.locator.Properties()
	}
	e.files = newTableIO(props, cfg.ManifestCacheBytes)
	e.meta.plan = func(ctx context.Context, tbl *table.Table) ([]table.FileScanTask, error) {
		return e.planSnapshot(ctx, tbl, tbl.CurrentSnapshot())
	}
	if err := e.lockDown(ctx); err != nil {
		db.Close()
		return nil, err
	}
	admin, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening duckdb admin connection: %w", err)
	}
	e.admin = admin
	for _, q := range cfg.Setup {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			e.Close()
			return nil, fmt.Errorf("engine setup statement %.60q: %w", q, err)
		}
	}
	if err := e.Refresh(ctx); err != nil {
		e.Close()
		return nil, err
	}
	e.refreshMu.Lock()
	e.started = true
	e.refreshMu.Unlock()
	return e, nil
}

// lockDown applies the global settings. Order matters in DuckDB 1.5:
// allowed_directories must be set before enable_external_access=false (after
// it, file settings can no longer change), and lock_configuration comes last
// since it freezes everything, including itself.
func (e *Engine) lockDown(ctx context.Context) error {
	dir := e.cache.ObjectsDir() + "/"
	stmts := []string{
		"SET GLOBAL autoinstall_known_extensions = false",
		"SET GLOBAL autoload_known_extensions = false",
		"SET GLOBAL allow_community_extensions = false",
		"SET GLOBAL TimeZone = 'UTC'",
		// Data files are immutable: their footers can stay parsed between queries.
		"SET GLOBAL parquet_metadata_cache = true",
		"SET GLOBAL allowed_directories = [" + quoteString(dir) + "]",
	}
	if e.cfg.Threads > 0 {
		stmts = append(stmts, fmt.Sprintf("SET GLOBAL threads = %d", e.cfg.Threads))
	}
	if e.cfg.MemoryLimit != "" {
		stmts = append(stmts, "SET GLOBAL memory_limit = "+quoteString(e.cfg.MemoryLimit))
	}
	stmts = append(stmts,
		"SET GLOBAL enable_external_access = false",
		"SET GLOBAL lock_configuration = true",
	)
	for _, s := range stmts {
		if _, err := e.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("configuring duckdb (%s): %w", s, err)
		}
	}
	return nil
}

// reportVisible reports the snapshots from tbl's current one back to (not including)
// the one the previous view showed.
func (e *Engine) reportVisible(name string, tbl *table.Table, prevID int64, at time.Time) {
	s := tbl.CurrentSnapshot()
	for n := 0; s != nil && s.SnapshotID != prevID && n < maxVisibleWalk; n++ {
		v := Visible{Table: name, SnapshotID: s.SnapshotID, CommittedAt: time.UnixMilli(s.TimestampMs), VisibleAt: at}
		if s.Summary != nil {
			if ms, err := strconv.ParseInt(s.Summary.Properties[PropSourceMtimeMin], 10, 64); err == nil {
				v.SourceMtimeMin = time.UnixMilli(ms)
			}
		}
		e.onVisible(v)
		if s.ParentSnapshotID == nil {
			return
		}
		s = tbl.SnapshotByID(*s.ParentSnapshotID)
	}
}

// snapshotBody is the SELECT of a view over a snapshot's files (fetchSnapshotAt).
func (e *Engine) snapshotBody(ctx context.Context, s *iceberg.Schema, objs []cache.Object, mor *mergeOnRead) (string, error) {
	if len(objs) == 0 {
		return emptySelect(s)
	}
	body := parquetSelect(objs)
	if mor.active() {
		var err error
		if body, err = mor.body(s); err != nil {
			return "", err
		}
	}
	return e.withMissingColumns(ctx, body, s)
}

// fetchSnapshotAt plans the data files of snapshot snap (nil: the current one) and
// brings each into the cache once (a file split into several scan tasks is fetched
// once), then the equality-delete files that apply to them (deletes.go), whose objects
// follow the data files' in the result.
func (e *Engine) fetchSnapshotAt(ctx context.Context, tbl *table.Table, snap *table.Snapshot) ([]cache.Object, *mergeOnRead, error) {
	if snap == nil {
		snap = tbl.CurrentSnapshot()
	}
	tasks, err := e.planSnapshot(ctx, tbl, snap)
	if err != nil {
		return nil, nil, fmt.Errorf("planning scan: %w", err)
	}
	var files []cache.File
	seen := map[string]bool{}
	mor := newMergeOnRead(tbl.Metadata(), snap)
	for _, t := range tasks {
		if err := mor.addTask(t); err != nil {
			return nil, nil, err
		}
		if seen[t.File.FilePath()] {
			continue
		}
		seen[t.File.FilePath()] = true
		files = append(files, cache.File{Location: t.File.FilePath(), Size: t.File.FileSizeBytes()})
	}
	fsys, err := tbl.FS(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("opening table file IO: %w", err)
	}
	objs, err := e.cache.FetchAll(ctx, fsys, files, fetchParallel)
	if err != nil {
		return nil, nil, err
	}
	if err := mor.fetch(ctx, e.cache, fsys); err != nil {
		e.release(objs)
		return nil, nil, err
	}
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.Location
	}
	mor.setData(paths, objs)
	return append(objs, mor.delObjs...), mor, nil
}

func (e *Engine) release(objs []cache.Object) {
	for _, o := range objs {
		e.cache.Release(o)
	}
}

// emptySelect is a row-less SELECT with the table's columns and types.
// withMissingColumns adds to a view body over Parquet files the schema's columns that
// no file holds yet, as NULL: a column added to the table (a feed's drift add) is
// queryable from the schema change on, not only once data holding it is written. Files
// written before the change read NULL there through union_by_name.
func (e *Engine) withMissingColumns(ctx context.Context, body string, s *iceberg.Schema) (string, error) {
	have, err := e.describeColumns(ctx, body)
	if err != nil {
		return "", err
	}
	return addMissingColumns(body, s, have), nil
}

// describeColumns returns the names of the columns body's SELECT yields.
func (e *Engine) describeColumns(ctx context.Context, body string) (map[string]bool, error) {
	rows, err := e.admin.QueryContext(ctx, "SELECT column_name FROM (DESCRIBE "+body+")")
	if err != nil {
		return nil, fmt.Errorf("describing data files: %w", err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("describing data files: %w", err)
		}
		have[name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("describing data files: %w", err)
	}
	return have, nil
}

// addMissingColumns adds to body the schema's columns not in have, as NULL.
func addMissingColumns(body string, s *iceberg.Schema, have map[string]bool) string {
	var extra []string
	for _, f := range s.Fields() {
		if !have[f.Name] {
			extra = append(extra, "CAST(NULL AS "+duckType(f.Type)+") AS "+quoteIdent(f.Name))
		}
	}
	if len(extra) == 0 {
		return body
	}
	return "SELECT *, " + strings.Join(extra, ", ") + " FROM (" + body + ")"
}

// parquetSelect is the SELECT over data files of a view without deletes.
func parquetSelect(objs []cache.Object) string {
	paths := make([]string, len(objs))
	for i, o := range objs {
		paths[i] = quoteString(o.Path)
	}
	return "SELECT * FROM read_parquet([" + strings.Join(paths, ", ") +
		"], union_by_name = true, hive_partitioning = false)"
}

func emptySelect(s *iceberg.Schema) (string, error) {
	fields := s.Fields()
	if len(fields) == 0 {
		return "", errors.New("table schema has no columns")
	}
	cols := make([]string, len(fields))
	for i, f := range fields {
		cols[i] = "CAST(NULL AS " + duckType(f.Type) + ") AS " + quoteIdent(f.Name)
	}
	return "SELECT " + strings.Join(cols, ", ") + " WHERE false", nil
}

// duckType maps an Iceberg type to the DuckDB type its Parquet reads as.
func duckType(t iceberg.Type) string {
	switch t := t.(type) {
	case iceberg.BooleanType:
		return "BOOLEAN"
	case iceberg.Int32Type:
		return "INTEGER"
	case iceberg.Int64Type:
		return "BIGINT"
	case iceberg.Float32Type:
		return "FLOAT"
	case iceberg.Float64Type:
		return "DOUBLE"
	case iceberg.DecimalType:
		return fmt.Sprintf("DECIMAL(%d,%d)", t.Precision(), t.Scale())
	case iceberg.DateType:
		return "DATE"
	case iceberg.TimeType:
		return "TIME"
	case iceberg.TimestampType:
		return "TIMESTAMP"
	case iceberg.TimestampTzType:
		return "TIMESTAMPTZ"
	case iceberg.TimestampNsType:
		return "TIMESTAMP_NS"
	case iceberg.StringType:
		return "VARCHAR"
	case iceberg.UUIDType:
		return "UUID"
	case iceberg.BinaryType, iceberg.FixedType:
		return "BLOB"
	default:
		return "VARCHAR"
	}
}

// Tables returns the names of the tables that currently have a view.
func (e *Engine) Tables() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.views))
	for n := range e.views {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// scopeTables returns the lake tables by lower-cased name, for the scope.
func (e *Engine) scopeTables() map[string]tableScope {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]tableScope, len(e.views))
	for name, v := range e.views {
		out[strings.ToLower(name)] = v.scope
	}
	return out
}

// SnapshotID returns the snapshot a table's view shows (-1: empty table).
func (e *Engine) SnapshotID(table string) (int64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.views[table]
	if !ok {
		return 0, false
	}
	return v.snapshotID, true
}

// Query runs one read-only SELECT on a pooled connection, unscoped: it is for
// in-process callers acting as an admin (tests, tools), never for a client's SQL, which
// goes through a Session of the client's principal.
func (e *Engine) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if _, err := parse(ctx, e.db, query); err != nil {
		return nil, err
	}
	return e.db.QueryContext(ctx, query, args...)
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Close closes DuckDB. Open sessions fail afterwards. Safe to call twice.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	var errs []error
	if e.admin != nil {
		errs = append(errs, e.admin.Close())
	}
	errs = append(errs, e.db.Close())
	e.mu.Lock()
	views := e.views
	e.views = map[string]*view{}
	e.mu.Unlock()
	for _, v := range views {
		e.release(v.objects)
		e.release(v.prev)
	}
	e.closeHistory()
	return errors.Join(errs...)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
