package maintain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/table/compaction"
)

// Snapshot summary properties maintenance writes, so `medlake tables` can tell its
// snapshots from the hub's.
const (
	PropMaintenance = "medlake.maintenance" // "compact" on a compaction's rewrite snapshot
	opCompact       = "compact"
)

// CompactOptions tune one compaction.
type CompactOptions struct {
	// TargetFileSize is the size output files aim at, and files below 75% of it are
	// candidates. Each group of inputs is sorted in memory, so memory use is a few
	// times this.
	TargetFileSize int64
	// MinInputFiles is the fewest small files in a partition worth a rewrite.
	MinInputFiles int
	// DeleteFileThreshold forces a file with this many delete files into a rewrite
	// whatever its size.
	DeleteFileThreshold int
	// CommitRetries bounds re-applying the rewrite after other commits moved the
	// table; past it the rewrite is abandoned.
	CommitRetries int
	// Progress, when set, is called after each group is written.
	Progress func(done, total int)
}

// CompactResult says what one compaction did.
type CompactResult struct {
	Table              string
	Groups             int // partitions' groups rewritten
	FilesRemoved       int // small data files replaced
	FilesAdded         int
	DeleteFilesRemoved int // delete files folded into the rewrite
	BytesBefore        int64
	BytesAfter         int64
	RowsWritten        int64
	Attempts           int   // commit attempts, 1 without conflicts
	SnapshotID         int64 // the rewrite snapshot, 0 when nothing was committed
	// Abandoned says why a planned rewrite was not committed (a concurrent change it
	// cannot be re-applied over); empty when it was, or when there was nothing to do.
	Abandoned string
}

// facilityColumn is the hub's facility lineage column (feed.ColFacility).
const facilityColumn = "_facility"

// ErrAbandoned wraps the reason a compaction gave up on a planned rewrite.
var ErrAbandoned = errors.New("compaction abandoned")

// Compact rewrites the small files of each partition of tbl into files near the
// target size, applying and dropping the deletes they carry, with rows sorted by the
// table's sort order (set to the partition columns if the table has none).
//
// It is safe while other writers commit. The rewrite is planned and written against
// one snapshot S and committed with S's data sequence number, so equality deletes
// committed after S still apply to the new files. When the table moved, the rewrite
// is re-applied to the new version if every change since S is an append or adds only
// equality deletes; any other change (files removed, position deletes added) abandons
// it: the written files are removed and ErrAbandoned returned. Rows are never lost or
// resurrected either way.
func Compact(ctx context.Context, tables Tables, name string, opts CompactOptions) (CompactResult, error) {
	res := CompactResult{Table: name}
	tbl, err := tables.Load(ctx, name)
	if err != nil {
		return res, err
	}
	if tbl, err = ensureSortOrder(ctx, tables, name, tbl, opts.CommitRetries); err != nil {
		return res, err
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return res, nil
	}
	tasks, err := tbl.Scan(table.WithSnapshotID(snap.SnapshotID)).PlanFiles(ctx)
	if err != nil {
		return res, fmt.Errorf("planning files of table %s: %w", name, err)
	}
	ccfg := compaction.DefaultConfig()
	if opts.TargetFileSize > 0 {
		ccfg.TargetFileSizeBytes = opts.TargetFileSize
		ccfg.MinFileSizeBytes = opts.TargetFileSize * 3 / 4
		ccfg.MaxFileSizeBytes = opts.TargetFileSize * 9 / 5
	}
	if opts.MinInputFiles > 0 {
		ccfg.MinInputFiles = uint(opts.MinInputFiles)
	}
	if opts.DeleteFileThreshold > 0 {
		ccfg.DeleteFileThreshold = opts.DeleteFileThreshold
	}
	plan, err := ccfg.PlanCompaction(tasks)
	if err != nil {
		return res, fmt.Errorf("planning compaction of table %s: %w", name, err)
	}
	if len(plan.Groups) == 0 {
		return res, nil
	}

	fs, err := tbl.FS(ctx)
	if err != nil {
		return res, fmt.Errorf("opening files of table %s: %w", name, err)
	}
	var (
		results   []table.CompactionGroupResult
		committed bool
	)
	defer func() {
		if !committed {
			removeWritten(fs, results)
		}
	}()
	rewritten := map[string]struct{}{}
	for i, g := range plan.Groups {
		gr, rows, err := rewriteGroup(ctx, tbl, g, ccfg.TargetFileSizeBytes)
		// A group whose rows were all deleted writes nothing but still replaces its
		// files: leaving them would let the deletes found dead below resurrect rows.
		if len(gr.NewDataFiles) > 0 || len(gr.OldDataFiles) > 0 {
			results = append(results, gr)
		}
		if err != nil {
			return res, fmt.Errorf("compacting table %s partition %s: %w", name, g.PartitionKey, err)
		}
		for _, df := range gr.OldDataFiles {
			rewritten[df.FilePath()] = struct{}{}
		}
		res.Groups++
		res.FilesRemoved += len(gr.OldDataFiles)
		res.FilesAdded += len(gr.NewDataFiles)
		res.BytesBefore += gr.BytesBefore
		res.BytesAfter += gr.BytesAfter
		res.RowsWritten += rows
		if opts.Progress != nil {
			opts.Progress(i+1, len(plan.Groups))
		}
	}

	// Deletes that apply to nothing once the rewritten files are gone, checked over
	// the whole rewrite (a position delete may name files of several groups).
	deadEq, err := compaction.CollectDeadEqualityDeletesWithSpecs(ctx, fs, tbl.Metadata(), snap, rewritten)
	if err != nil {
		return res, fmt.Errorf("finding equality deletes folded into table %s's rewrite: %w", name, err)
	}
	deadPos, err := compaction.CollectDeadPositionDeletes(ctx, fs, snap, rewritten)
	if err != nil {
		return res, fmt.Errorf("finding position deletes folded into table %s's rewrite: %w", name, err)
	}
	dead := append(deadEq, deadPos...)
	res.DeleteFilesRemoved = len(dead)

	cur := tbl
	retries := max(opts.CommitRetries, 0)
	for attempt := 0; ; attempt++ {
		res.Attempts = attempt + 1
		if attempt > 0 {
			if cur, err = tables.Load(ctx, name); err != nil {
				return res, err
			}
			if why := replayable(cur, snap.SnapshotID, rewritten); why != "" {
				res.Abandoned = why
				return res, fmt.Errorf("%w: table %s: %s", ErrAbandoned, name, why)
			}
		}
		txn := cur.NewTransaction()
		rw := txn.NewRewrite(iceberg.Properties{PropMaintenance: opCompact})
		for _, gr := range results {
			// Position deletes go through dead, which was checked over every group.
			gr.SafePosDeletes = nil
			rw.ApplyResult(gr)
		}
		seen := map[string]bool{}
		for _, gr := range results {
			for _, dv := range gr.SafeDeletionVectors {
				seen[dv.FilePath()] = true
			}
		}
		for _, df := range dead {
			if !seen[df.FilePath()] {
				seen[df.FilePath()] = true
				rw.DeleteFile(df)
			}
		}
		rw.DataSequenceNumber(snap.SequenceNumber)
		if err := rw.Commit(ctx); err != nil {
			return res, fmt.Errorf("staging rewrite of table %s: %w", name, err)
		}
		done, err := txn.Commit(ctx)
		if IsCommitConflict(err) {
			if attempt < retries {
				continue
			}
			res.Abandoned = fmt.Sprintf("table moved on each of %d attempts", attempt+1)
			return res, fmt.Errorf("%w: table %s: %s", ErrAbandoned, name, res.Abandoned)
		}
		if err != nil {
			// The outcome is unknown: the catalog may have taken the commit, so the
			// written files stay (orphan cleanup removes them if it did not).
			committed = true
			return res, fmt.Errorf("committing rewrite of table %s: %w", name, err)
		}
		committed = true
		if s := done.CurrentSnapshot(); s != nil {
			res.SnapshotID = s.SnapshotID
		}
		return res, nil
	}
}

// IsCommitConflict says whether a commit failed because the table moved underneath
// it, so nothing was committed and re-planning against the new version will do. The
// SQL catalog's compare-and-swap reports table.ErrCommitFailed, but a move already
// visible when the catalog checks the transaction's requirements comes back as a bare
// "requirement failed: ..." error.
func IsCommitConflict(err error) bool {
	return err != nil && (errors.Is(err, table.ErrCommitFailed) || strings.Contains(err.Error(), "requirement failed: "))
}

// replayable says why a rewrite planned at snapshot base cannot be committed on cur,
// or "" when it can: every snapshot since base only appended data or added equality
// deletes (which apply to the rewrite's files through its data sequence number).
func replayable(cur *table.Table, base int64, rewritten map[string]struct{}) string {
	s := cur.CurrentSnapshot()
	for s != nil && s.SnapshotID != base {
		if s.Summary != nil {
			p := s.Summary.Properties
			num := func(k string) int { n, _ := strconv.Atoi(p[k]); return n }
			for _, k := range []string{"deleted-data-files", "removed-delete-files", "removed-position-delete-files",
				"removed-equality-delete-files", "added-position-delete-files"} {
				if n := num(k); n > 0 {
					return fmt.Sprintf("snapshot %d (%s) changed files the rewrite replaces (%s=%d)", s.SnapshotID, s.Summary.Operation, k, n)
				}
			}
			// Deletion vectors count among delete files but not equality delete files.
			if n := num("added-delete-files") - num("added-equality-delete-files"); n > 0 {
				return fmt.Sprintf("snapshot %d (%s) added %d position deletes or deletion vectors", s.SnapshotID, s.Summary.Operation, n)
			}
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = cur.SnapshotByID(*s.ParentSnapshotID)
	}
	if s == nil || s.SnapshotID != base {
		return fmt.Sprintf("snapshot %d the rewrite was planned on is no longer an ancestor of the current one", base)
	}
	return ""
}

// rewriteGroup reads one group's files with their deletes applied, sorts the rows by
// the table's sort order and writes them as new files. The result carries the files
// written even on error, so the caller can remove them.
func rewriteGroup(ctx context.Context, tbl *table.Table, g compaction.Group, target int64) (table.CompactionGroupResult, int64, error) {
	gr := table.CompactionGroupResult{PartitionKey: g.PartitionKey, BytesBefore: g.TotalSizeBytes}
	sc, records, err := tbl.Scan().ReadTasks(ctx, g.Tasks)
	if err != nil {
		return gr, 0, fmt.Errorf("reading %d files: %w", len(g.Tasks), err)
	}
	var recs []arrow.RecordBatch
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	for r, err := range records {
		if err != nil {
			return gr, 0, fmt.Errorf("reading %d files: %w", len(g.Tasks), err)
		}
		recs = append(recs, r)
	}
	sorted, err := sortRecords(ctx, sc, recs, sortColumns(tbl, sc))
	if err != nil {
		return gr, 0, err
	}
	defer sorted.Release()
	rows := sorted.NumRows()

	const batchRows = 64 << 10
	batches := func(yield func(arrow.RecordBatch, error) bool) {
		rdr := array.NewTableReader(sorted, batchRows)
		defer rdr.Release()
		for rdr.Next() {
			r := rdr.RecordBatch()
			r.Retain() // WriteRecords releases what it consumes
			if !yield(r, nil) {
				return
			}
		}
		if err := rdr.Err(); err != nil {
			yield(nil, err)
		}
	}
	for df, err := range table.WriteRecords(ctx, tbl, sc, batches, table.WithClusteredWrite(), table.WithTargetFileSize(target)) {
		if err != nil {
			return gr, 0, fmt.Errorf("writing compacted files: %w", err)
		}
		gr.NewDataFiles = append(gr.NewDataFiles, df)
		gr.BytesAfter += df.FileSizeBytes()
	}
	for _, t := range g.Tasks {
		gr.OldDataFiles = append(gr.OldDataFiles, t.File)
	}
	gr.SafeDeletionVectors = table.CollectSafeDeletionVectors(g.Tasks)
	return gr, rows, nil
}

// sortRecords concatenates recs and sorts them by the columns cols (indices into sc),
// ascending, nulls first.
func sortRecords(ctx context.Context, sc *arrow.Schema, recs []arrow.RecordBatch, cols []int) (arrow.Table, error) {
	tbl := array.NewTableFromRecords(sc, recs)
	if len(cols) == 0 || tbl.NumRows() == 0 {
		return tbl, nil
	}
	defer tbl.Release()
	keys := make([]compute.SortKey, len(cols))
	for i, c := range cols {
		keys[i] = compute.SortKey{ColumnIndex: c, Order: compute.SortOrderAscending, NullPlacement: compute.SortNullsAtStart}
	}
	idx, err := compute.SortIndicesTable(ctx, tbl, keys)
	if err != nil {
		return nil, fmt.Errorf("sorting %d rows: %w", tbl.NumRows(), err)
	}
	defer idx.Release()
	out, err := compute.Take(ctx, *compute.DefaultTakeOptions(), compute.NewDatum(tbl), compute.NewDatum(idx))
	if err != nil {
		return nil, fmt.Errorf("ordering %d rows: %w", tbl.NumRows(), err)
	}
	defer out.Release()
	t := out.(*compute.TableDatum).Value
	t.Retain()
	return t, nil
}

// sortColumns resolves the table's sort order against the scanned schema.
func sortColumns(tbl *table.Table, sc *arrow.Schema) []int {
	var cols []int
	for _, f := range tbl.SortOrder().Fields() {
		field, ok := tbl.Schema().FindFieldByID(f.SourceID())
		if !ok {
			continue
		}
		if idx := sc.FieldIndices(field.Name); len(idx) == 1 {
			cols = append(cols, idx[0])
		}
	}
	return cols
}

// ensureSortOrder sets the table's sort order to _facility, when the table has it,
// then its partition columns' sources in partition order (for medlake's tables
// _facility, then the partition time column, whichever of them it is partitioned by),
// so compaction output and the hub's appended files keep rows of like facility and
// time together and Parquet row-group statistics prune. A table that has a sort
// order keeps it.
func ensureSortOrder(ctx context.Context, tables Tables, name string, tbl *table.Table, retries int) (*table.Table, error) {
	for attempt := 0; ; attempt++ {
		if !tbl.SortOrder().IsUnsorted() {
			return tbl, nil
		}
		var fields []table.SortField
		var sources []int
		if f, ok := tbl.Schema().FindFieldByName(facilityColumn); ok {
			sources = append(sources, f.ID)
		}
		spec := tbl.Spec()
		for _, f := range spec.Fields() {
			if len(f.SourceIDs) == 1 && !slices.Contains(sources, f.SourceIDs[0]) {
				sources = append(sources, f.SourceIDs[0])
			}
		}
		for _, id := range sources {
			fields = append(fields, table.SortField{SourceIDs: []int{id}, Transform: iceberg.IdentityTransform{},
				Direction: table.SortASC, NullOrder: table.NullsFirst})
		}
		if len(fields) == 0 {
			return tbl, nil
		}
		order, err := table.NewSortOrder(1, fields)
		if err != nil {
			return nil, fmt.Errorf("sort order of table %s: %w", name, err)
		}
		txn := tbl.NewTransaction()
		if err := txn.ReplaceSortOrder(order); err != nil {
			return nil, fmt.Errorf("setting sort order of table %s: %w", name, err)
		}
		done, err := txn.Commit(ctx)
		if err == nil {
			return done, nil
		}
		if !IsCommitConflict(err) || attempt >= retries {
			return nil, fmt.Errorf("committing sort order of table %s: %w", name, err)
		}
		if tbl, err = tables.Load(ctx, name); err != nil {
			return nil, err
		}
	}
}

// removeWritten deletes files a rewrite wrote but did not commit. Failures leave them
// to orphan cleanup.
func removeWritten(fs iceio.IO, results []table.CompactionGroupResult) {
	for _, gr := range results {
		for _, df := range gr.NewDataFiles {
			_ = fs.Remove(df.FilePath())
		}
	}
}

// Tables loads lake tables by name. *catalog.Catalog satisfies it through
// CatalogTables. Implementations must be safe for concurrent use.
type Tables interface {
	Load(ctx context.Context, name string) (*table.Table, error)
}
