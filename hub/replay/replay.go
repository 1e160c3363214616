package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/agent"
	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// Snapshot summary properties of a replay commit.
const (
	PropReplayFeed = "medlake.replay.feed"    // feed name and version replayed: "labs/3"
	PropReplaySHAs = "medlake.replay.sources" // number of archives the snapshot replaced
)

// Config says what to replay.
type Config struct {
	// Feed is the feed to replay; its newest version in the catalog is used.
	Feed string
	// Since and Until bound when the archives were stored (Until zero: no end).
	Since, Until time.Time
	// SecretsDir holds the secrets the feed names (zip passwords, hash keys), as an
	// agent's secrets folder does.
	SecretsDir string
	// TempDir is where archives are fetched to; default os.TempDir.
	TempDir string
	// PerCommit is the most archives replaced by one commit (default 32).
	PerCommit int
	// DryRun reads and normalizes every archive but commits nothing.
	DryRun bool
	// Progress, when set, is called after each archive with bytes done and in all.
	Progress func(done, total int64)
}

// Skipped is an archive replay left as it was, and why.
type Skipped struct {
	SHA256 string
	File   string
	Reason string
}

// Result is what a replay did.
type Result struct {
	Feed         string
	FeedVersion  int
	Table        string
	Archives     int   // archives found in the range
	Replayed     int   // archives whose rows were replaced
	RowsWritten  int64 // rows the new definition made of them
	Commits      int
	Skipped      []Skipped // kept as they were: rows rejected, archive missing or unreadable
	AddedColumns []string  // columns the table gained
}

// isCommitConflict says whether a commit lost a race with another commit of the table.
func isCommitConflict(err error) bool {
	return err != nil && (errors.Is(err, table.ErrCommitFailed) || strings.Contains(err.Error(), "requirement failed: "))
}

const conflictRetries = 10

// Run re-reads every archive of cfg.Feed stored in [Since, Until) with the feed's
// newest definition and, per group of archives, replaces in one Iceberg commit the
// rows that came from those archives through that feed (_feed = feed and
// _source_sha256 in the group) by the rows the definition makes of them now. The
// delete and the insert are one snapshot, so a reader sees the old rows or the new
// ones, never both or neither, and running the same replay again replaces the rows by
// the same rows: the table gains nothing.
//
// An archive whose new parse rejects any row is skipped (its rows stay as they were)
// and reported, as is one missing from the warehouse or failing its hash: replaying
// must not turn rows into nothing. Columns the definition has and the table lacks are
// added first, as optional columns.
func Run(ctx context.Context, cat *catalog.Catalog, cfg Config, log *slog.Logger) (Result, error) {
	if cfg.PerCommit <= 0 {
		cfg.PerCommit = 32
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	fv, ok, err := cat.Feed(ctx, cfg.Feed, 0)
	if err != nil {
		return Result{}, err
	}
	if !ok {
		return Result{}, fmt.Errorf("replay: feed %q is not in the catalog", cfg.Feed)
	}
	def, err := feed.Parse([]byte(fv.Definition))
	if err != nil {
		return Result{}, fmt.Errorf("replay: feed %s version %d: %w", fv.Name, fv.Version, err)
	}
	res := Result{Feed: def.Name, FeedVersion: def.Version, Table: def.Table}
	entries, err := cat.ArchivesOf(ctx, cfg.Feed, cfg.Since, cfg.Until)
	if err != nil {
		return res, err
	}
	res.Archives = len(entries)
	if len(entries) == 0 {
		return res, nil
	}
	store, err := cat.Archives(ctx)
	if err != nil {
		return res, err
	}
	defer store.Close()
	tmp, err := os.MkdirTemp(cfg.TempDir, "medlake-replay-*")
	if err != nil {
		return res, fmt.Errorf("replay: creating temporary folder: %w", err)
	}
	defer os.RemoveAll(tmp)

	r := &replayer{cat: cat, cfg: cfg, def: def, store: store, tmp: tmp, log: log, mem: memory.DefaultAllocator, res: &res}
	tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(def.Table))
	if err != nil {
		return res, fmt.Errorf("replay: loading table %s: %w", def.Table, err)
	}
	if !cfg.DryRun {
		if tbl, err = r.evolve(ctx, tbl); err != nil {
			return res, err
		}
	}
	var total, done int64
	for _, e := range entries {
		total += e.Size
	}
	for start := 0; start < len(entries); start += cfg.PerCommit {
		group := entries[start:min(start+cfg.PerCommit, len(entries))]
		if err := r.replayGroup(ctx, group); err != nil {
			return res, err
		}
		for _, e := range group {
			done += e.Size
		}
		if cfg.Progress != nil {
			cfg.Progress(done, total)
		}
	}
	return res, nil
}

type replayer struct {
	cat   *catalog.Catalog
	cfg   Config
	def   *feed.Definition
	store *catalog.ArchiveStore
	tmp   string
	log   *slog.Logger
	mem   memory.Allocator
	res   *Result
}

// evolve adds to the table, as optional columns, the definition's columns it lacks, and
// refuses a definition that changes a column's type.
func (r *replayer) evolve(ctx context.Context, tbl *table.Table) (*table.Table, error) {
	want := r.def.TableSchema()
	have, err := table.SchemaToArrowSchema(tbl.Schema(), nil, false, false)
	if err != nil {
		return nil, fmt.Errorf("replay: schema of table %s: %w", r.def.Table, err)
	}
	var missing []arrow.Field
	for _, f := range want.Fields() {
		idx := have.FieldIndices(f.Name)
		if len(idx) == 0 {
			missing = append(missing, f)
			continue
		}
		if got := have.Field(idx[0]).Type; !arrow.TypeEqual(got, f.Type) {
			return nil, fmt.Errorf("replay: feed %s version %d gives column %s of table %s type %s, the table has %s; a replay can add columns, not change their types",
				r.def.Name, r.def.Version, f.Name, r.def.Table, f.Type, got)
		}
	}
	if len(missing) == 0 {
		return tbl, nil
	}
	for attempt := 0; ; attempt++ {
		txn := tbl.NewTransaction()
		us := txn.UpdateSchema(true, false)
		names := make([]string, len(missing))
		for i, f := range missing {
			one, err := table.ArrowSchemaToIcebergWithFreshIDs(arrow.NewSchema([]arrow.Field{f}, nil), false)
			if err != nil {
				return nil, fmt.Errorf("replay: converting column %s of table %s: %w", f.Name, r.def.Table, err)
			}
			us = us.AddColumn([]string{f.Name}, one.Field(0).Type, "", false, nil)
			names[i] = f.Name
		}
		if err := us.Commit(); err != nil {
			return nil, fmt.Errorf("replay: adding columns %v to table %s: %w", names, r.def.Table, err)
		}
		evolved, err := txn.Commit(ctx)
		if isCommitConflict(err) && attempt < conflictRetries {
			if tbl, err = r.cat.Iceberg().LoadTable(ctx, r.cat.TableIdent(r.def.Table)); err != nil {
				return nil, fmt.Errorf("replay: reloading table %s: %w", r.def.Table, err)
			}
			if _, ok := tbl.Schema().FindFieldByName(missing[0].Name); ok {
				return r.evolve(ctx, tbl) // another replay added them
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("replay: committing columns %v to table %s: %w", names, r.def.Table, err)
		}
		r.res.AddedColumns = append(r.res.AddedColumns, names...)
		r.log.Info("added columns to table", "table", r.def.Table, "columns", names)
		return evolved, nil
	}
}

// replayGroup re-reads the group's archives and replaces their rows in one commit.
func (r *replayer) replayGroup(ctx context.Context, group []catalog.ArchiveEntry) error {
	var recs []arrow.RecordBatch
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	var shas []string
	var rows int64
	ingestedAt := time.Now().UTC()
	for _, e := range group {
		got, err := r.parse(ctx, e, ingestedAt)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.res.Skipped = append(r.res.Skipped, Skipped{SHA256: e.SHA256, File: e.SourceFile, Reason: err.Error()})
			r.log.Warn("archive skipped; its rows are kept as they were", "sha256", e.SHA256, "file", e.SourceFile, "err", err)
			continue
		}
		shas = append(shas, e.SHA256)
		for _, rec := range got {
			rows += rec.NumRows()
		}
		recs = append(recs, got...)
	}
	if len(shas) == 0 || r.cfg.DryRun {
		r.res.Replayed += len(shas)
		r.res.RowsWritten += rows
		return nil
	}
	filter := iceberg.NewAnd(iceberg.EqualTo(iceberg.Reference(feed.ColFeed), r.def.Name),
		iceberg.IsIn(iceberg.Reference(feed.ColSourceSHA256), shas...))
	props := iceberg.Properties{
		PropReplayFeed: r.def.Name + "/" + strconv.Itoa(r.def.Version),
		PropReplaySHAs: strconv.Itoa(len(shas)),
	}
	for attempt := 0; ; attempt++ {
		tbl, err := r.cat.Iceberg().LoadTable(ctx, r.cat.TableIdent(r.def.Table))
		if err != nil {
			return fmt.Errorf("replay: loading table %s: %w", r.def.Table, err)
		}
		sc, err := table.SchemaToArrowSchema(tbl.Schema(), nil, false, false)
		if err != nil {
			return fmt.Errorf("replay: schema of table %s: %w", r.def.Table, err)
		}
		shaped, err := r.shape(sc, recs)
		if err != nil {
			return err
		}
		rdr, err := array.NewRecordReader(sc, shaped)
		if err != nil {
			release(shaped)
			return fmt.Errorf("replay: rows for table %s: %w", r.def.Table, err)
		}
		txn := tbl.NewTransaction()
		err = txn.Overwrite(ctx, rdr, props, table.WithOverwriteFilter(filter))
		rdr.Release()
		release(shaped)
		if err == nil {
			_, err = txn.Commit(ctx)
		}
		if isCommitConflict(err) && attempt < conflictRetries {
			r.log.Info("table moved by another commit, replaying the group again", "table", r.def.Table, "attempt", attempt+1)
			continue
		}
		if err != nil {
			return fmt.Errorf("replay: replacing the rows of %d archives in table %s: %w", len(shas), r.def.Table, err)
		}
		break
	}
	r.res.Commits++
	r.res.Replayed += len(shas)
	r.res.RowsWritten += rows
	r.log.Info("replayed archives", "table", r.def.Table, "archives", len(shas), "rows", rows)
	return nil
}

func release(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}

// parse fetches one archive, checks its hash and normalizes it, returning its rows in
// the definition's TableSchema with lineage filled in.
func (r *replayer) parse(ctx context.Context, e catalog.ArchiveEntry, ingestedAt time.Time) (out []arrow.RecordBatch, err error) {
	// Under its own name: unpacking and the definition's glob go by it, and the rows'
	// _source_file names it as the first ingest did.
	dir := filepath.Join(r.tmp, e.SHA256)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer os.RemoveAll(dir)
	name := filepath.Base(filepath.Clean("/" + e.SourceFile))
	if name == "/" || name == "." {
		name = e.SHA256
	}
	path := filepath.Join(dir, name)
	if err := r.fetch(ctx, e.SHA256, path); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			release(out)
			out = nil
		}
	}()
	var rejected []string
	part := 0
	ts := arrow.Timestamp(ingestedAt.UnixMicro())
	st, perr := agent.Reparse(ctx, path, agent.ReparseConfig{Def: r.def, Dir: e.SourceDir, SecretsDir: r.cfg.SecretsDir, TempDir: r.tmp},
		func(rec arrow.RecordBatch) error {
			part++
			id := protocol.BatchID(e.SHA256, r.def.Name+"/replay", r.def.Version, part)
			out = append(out, r.lineage(rec, e, id, ts))
			return nil
		},
		func(rj normalize.Reject) error {
			if len(rejected) < 3 {
				rejected = append(rejected, fmt.Sprintf("%s row %d: %s", rj.Source, rj.Row, rj.Reason))
			} else {
				rejected = append(rejected[:3], "...")
			}
			return nil
		})
	if perr != nil {
		return out, fmt.Errorf("reading archive %s (%s): %w", e.SHA256, e.SourceFile, perr)
	}
	if st.Entries == 0 {
		return out, fmt.Errorf("no entry of %s matches feed %s version %d", e.SourceFile, r.def.Name, r.def.Version)
	}
	if len(rejected) > 0 {
		return out, fmt.Errorf("feed %s version %d rejects rows of %s: %s", r.def.Name, r.def.Version, e.SourceFile, strings.Join(rejected, "; "))
	}
	return out, nil
}

// fetch copies the archive to path, failing if it does not hash to sha.
func (r *replayer) fetch(ctx context.Context, sha, path string) error {
	rc, err := r.store.Open(ctx, sha)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("replay: creating %s: %w", path, err)
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetching archive %s: %w", sha, err)
	}
	return nil
}

// lineage turns a batch of the definition's BatchSchema into its TableSchema, with the
// lineage the hub adds: the archive's tenant, facility and agent, the feed and version
// replayed, the archive's hash, a replay batch id and the replay's time.
func (r *replayer) lineage(rec arrow.RecordBatch, e catalog.ArchiveEntry, batchID string, ts arrow.Timestamp) arrow.RecordBatch {
	n := int(rec.NumRows())
	npos := len(feed.PositionFields())
	nData := r.def.BatchSchema().NumFields() - npos
	cols := make([]arrow.Array, 0, r.def.TableSchema().NumFields())
	cols = append(cols, rec.Columns()[:nData]...)
	cols = append(cols, rec.Columns()[int(rec.NumCols())-npos:]...)
	lin := []arrow.Array{
		constString(r.mem, e.Tenant, n), constString(r.mem, e.Facility, n), constString(r.mem, e.Agent, n),
		constString(r.mem, r.def.Name, n), constInt64(r.mem, int64(r.def.Version), n),
		constString(r.mem, e.SHA256, n), constString(r.mem, batchID, n), constTimestamp(r.mem, ts, n),
	}
	cols = append(cols, lin...)
	sc := r.def.TableSchema()
	// Drift add: the extra columns a batch carries before the position fields.
	fields := sc.Fields()
	for i := nData; i < int(rec.NumCols())-npos; i++ {
		fields = append(fields, rec.Schema().Field(i))
		cols = append(cols, rec.Column(i))
	}
	md := sc.Metadata()
	out := array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, int64(n))
	for _, a := range lin {
		a.Release()
	}
	return out
}

// shape returns recs with the table's columns, by name and in its order: NULL where a
// batch lacks one. Drift-add columns the table lacks are dropped (the table gains them
// on the hub's next commit of such a batch).
func (r *replayer) shape(sc *arrow.Schema, recs []arrow.RecordBatch) ([]arrow.RecordBatch, error) {
	out := make([]arrow.RecordBatch, 0, len(recs))
	for _, rec := range recs {
		n := int(rec.NumRows())
		cols := make([]arrow.Array, sc.NumFields())
		var nulls []arrow.Array
		for i, f := range sc.Fields() {
			if idx := rec.Schema().FieldIndices(f.Name); len(idx) == 1 {
				c := rec.Column(idx[0])
				if !arrow.TypeEqual(c.DataType(), f.Type) {
					release(out)
					return nil, fmt.Errorf("replay: column %s of table %s is %s, the definition makes %s", f.Name, r.def.Table, f.Type, c.DataType())
				}
				cols[i] = c
				continue
			}
			a := array.MakeArrayOfNull(r.mem, f.Type, n)
			nulls = append(nulls, a)
			cols[i] = a
		}
		out = append(out, array.NewRecordBatch(sc, cols, int64(n)))
		for _, a := range nulls {
			a.Release()
		}
	}
	return out, nil
}

func constString(mem memory.Allocator, v string, n int) arrow.Array {
	b := array.NewStringBuilder(mem)
	defer b.Release()
	for range n {
		b.Append(v)
	}
	return b.NewArray()
}

func constInt64(mem memory.Allocator, v int64, n int) arrow.Array {
	b := array.NewInt64Builder(mem)
	defer b.Release()
	for range n {
		b.Append(v)
	}
	return b.NewArray()
}

func constTimestamp(mem memory.Allocator, v arrow.Timestamp, n int) arrow.Array {
	b := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"})
	defer b.Release()
	for range n {
		b.Append(v)
	}
	return b.NewArray()
}
