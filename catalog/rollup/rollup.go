package rollup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/protocol/feed"
)

// Def is one rollup: a lake table's rows grouped by tenant, facility, day of Time and
// Dims, with for every group the row count and, per measure, the count of non-null
// values, their sum, min and max. These combine: the rollup of a union of row sets is
// the re-aggregation (sum of counts and sums, min of mins, max of maxes) of their
// rollups, so every commit appends the rollup of its own rows only.
type Def struct {
	Table    string   // the base lake table
	Time     string   // its timestamp or date column, rolled up to days (midnight UTC)
	Dims     []string // string or integer columns kept as they are
	Measures []string // integer or float columns
}

// Suffix names a rollup table after its base table: lab_results__daily.
const Suffix = "__daily"

// Name is the rollup table's name.
func (d Def) Name() string { return d.Table + Suffix }

// Columns of every rollup table besides the base table's _tenant, _facility, Time and
// Dims (which keep their names; Time holds the day, midnight UTC).
const (
	ColCount = "_count" // rows in the group
	// PropCovers is the snapshot summary property of a rollup append: the base table
	// snapshot whose rows it rolls up.
	PropCovers = "medlake.rollup.covers"
	// PropCheckpoint is the snapshot summary property of a rollup append after which
	// the rollup table holds exactly the appends of its base table's history up to and
	// including the base snapshot it names. Consistency is then checked from the
	// newest checkpoint on, so snapshot expiry, which drops the older history of both
	// tables, does not make a rollup unusable.
	PropCheckpoint = "medlake.rollup.checkpoint"
)

// Aggregates of a measure, in column order: m__count, m__sum, m__min, m__max.
var Aggregates = []string{"count", "sum", "min", "max"}

// MeasureColumn names the rollup column holding agg ("count", "sum", "min", "max") of m.
func MeasureColumn(m, agg string) string { return m + "__" + agg }

// Standard are the rollups of the standard report grains: census by facility, day and
// unit; admissions and diagnoses by facility, day and event type; lab volumes, abnormal
// results and values by facility, day and test; vital signs by facility and day.
func Standard() []Def {
	return []Def{
		{Table: "adt_events", Time: "event_time", Dims: []string{"event_type", "diagnosis_code"}},
		{Table: "bed_census", Time: "census_date", Dims: []string{"unit"},
			Measures: []string{"beds_total", "beds_occupied", "beds_blocked", "occupancy_pct"}},
		{Table: "lab_results", Time: "collected_at", Dims: []string{"test_code", "abnormal_flag"}, Measures: []string{"value"}},
		{Table: "vitals", Time: "taken_at",
			Measures: []string{"heart_rate", "systolic", "diastolic", "temp_c", "spo2", "resp_rate", "pain_score", "weight_kg"}},
	}
}

// Lookup returns the standard rollup of table.
func Lookup(table string) (Def, bool) {
	for _, d := range Standard() {
		if d.Table == table {
			return d, true
		}
	}
	return Def{}, false
}

// IsRollup reports whether name is a rollup table's name.
func IsRollup(name string) bool { return strings.HasSuffix(name, Suffix) }

// Schema returns the rollup table's schema for a base table of schema base.
func (d Def) Schema(base *arrow.Schema) (*arrow.Schema, error) {
	field := func(name string) (arrow.Field, error) {
		idx := base.FieldIndices(name)
		if len(idx) != 1 {
			return arrow.Field{}, fmt.Errorf("rollup %s: table %s has no column %s", d.Name(), d.Table, name)
		}
		f := base.Field(idx[0])
		f.Nullable = true
		return f, nil
	}
	var fields []arrow.Field
	for _, n := range append([]string{feed.ColTenant, feed.ColFacility, d.Time}, d.Dims...) {
		f, err := field(n)
		if err != nil {
			return nil, err
		}
		switch {
		case n == d.Time && f.Type.ID() != arrow.TIMESTAMP && f.Type.ID() != arrow.DATE32:
			return nil, fmt.Errorf("rollup %s: time column %s is %s, not a timestamp or date", d.Name(), n, f.Type)
		case n != d.Time && f.Type.ID() != arrow.STRING && f.Type.ID() != arrow.LARGE_STRING && f.Type.ID() != arrow.INT64:
			return nil, fmt.Errorf("rollup %s: dimension %s is %s, not a string or integer", d.Name(), n, f.Type)
		}
		if f.Type.ID() == arrow.LARGE_STRING {
			f.Type = arrow.BinaryTypes.String
		}
		fields = append(fields, f)
	}
	fields = append(fields, arrow.Field{Name: ColCount, Type: arrow.PrimitiveTypes.Int64, Nullable: true})
	for _, m := range d.Measures {
		f, err := field(m)
		if err != nil {
			return nil, err
		}
		if f.Type.ID() != arrow.INT64 && f.Type.ID() != arrow.FLOAT64 {
			return nil, fmt.Errorf("rollup %s: measure %s is %s, not an integer or float", d.Name(), m, f.Type)
		}
		fields = append(fields,
			arrow.Field{Name: MeasureColumn(m, "count"), Type: arrow.PrimitiveTypes.Int64, Nullable: true},
			arrow.Field{Name: MeasureColumn(m, "sum"), Type: f.Type, Nullable: true},
			arrow.Field{Name: MeasureColumn(m, "min"), Type: f.Type, Nullable: true},
			arrow.Field{Name: MeasureColumn(m, "max"), Type: f.Type, Nullable: true})
	}
	return arrow.NewSchema(fields, nil), nil
}

// group is one rollup row being accumulated.
type group struct {
	keys  []any // tenant, facility, day, dims: string, int64 or nil
	count int64
	m     []measureAcc
}

type measureAcc struct {
	n                  int64
	isum, imin, imax   int64
	fsum, fmin, fmax   float64
	isFloat, hasValues bool
}

const dayMicros = 86400 * 1_000_000

// Aggregate computes d's partial aggregates of the rows of at, whose schema must have
// d's columns. Groups come out sorted by their key.
func (d Def) Aggregate(at arrow.Table, mem memory.Allocator) (arrow.RecordBatch, error) {
	sc, err := d.Schema(at.Schema())
	if err != nil {
		return nil, err
	}
	keyCols := append([]string{feed.ColTenant, feed.ColFacility, d.Time}, d.Dims...)
	groups := map[string]*group{}
	var order []string
	tr := array.NewTableReader(at, 1<<16)
	defer tr.Release()
	var key []byte
	for tr.Next() {
		rec := tr.RecordBatch()
		keys := make([]arrow.Array, len(keyCols))
		for i, n := range keyCols {
			keys[i] = rec.Column(rec.Schema().FieldIndices(n)[0])
		}
		ms := make([]arrow.Array, len(d.Measures))
		for i, n := range d.Measures {
			ms[i] = rec.Column(rec.Schema().FieldIndices(n)[0])
		}
		for r := range int(rec.NumRows()) {
			key = key[:0]
			vals := make([]any, len(keys))
			for i, a := range keys {
				v := keyValue(a, r, i == 2)
				vals[i] = v
				key = appendKey(key, v)
			}
			g := groups[string(key)]
			if g == nil {
				g = &group{keys: vals, m: make([]measureAcc, len(ms))}
				groups[string(key)] = g
				order = append(order, string(key))
			}
			g.count++
			for i, a := range ms {
				if a.IsNull(r) {
					continue
				}
				acc := &g.m[i]
				switch a := a.(type) {
				case *array.Int64:
					v := a.Value(r)
					if !acc.hasValues {
						acc.imin, acc.imax = v, v
					}
					acc.isum += v
					acc.imin, acc.imax = min(acc.imin, v), max(acc.imax, v)
				case *array.Float64:
					v := a.Value(r)
					acc.isFloat = true
					if !acc.hasValues {
						acc.fmin, acc.fmax = v, v
					}
					acc.fsum += v
					acc.fmin, acc.fmax = math.Min(acc.fmin, v), math.Max(acc.fmax, v)
				}
				acc.n++
				acc.hasValues = true
			}
		}
	}
	if err := tr.Err(); err != nil {
		return nil, fmt.Errorf("reading rows for rollup %s: %w", d.Name(), err)
	}
	slices.Sort(order)
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	for _, k := range order {
		g := groups[k]
		for i, v := range g.keys {
			appendValue(b.Field(i), v)
		}
		nk := len(g.keys)
		b.Field(nk).(*array.Int64Builder).Append(g.count)
		for i, acc := range g.m {
			base := nk + 1 + 4*i
			b.Field(base).(*array.Int64Builder).Append(acc.n)
			if !acc.hasValues {
				for j := 1; j < 4; j++ {
					b.Field(base + j).AppendNull()
				}
				continue
			}
			if fb, ok := b.Field(base + 1).(*array.Float64Builder); ok {
				fb.Append(acc.fsum)
				b.Field(base + 2).(*array.Float64Builder).Append(acc.fmin)
				b.Field(base + 3).(*array.Float64Builder).Append(acc.fmax)
				continue
			}
			b.Field(base + 1).(*array.Int64Builder).Append(acc.isum)
			b.Field(base + 2).(*array.Int64Builder).Append(acc.imin)
			b.Field(base + 3).(*array.Int64Builder).Append(acc.imax)
		}
	}
	return b.NewRecordBatch(), nil
}

// dayValue marks a truncated time key so it is appended back with its type.
type dayValue struct {
	v    int64
	date bool
}

func keyValue(a arrow.Array, r int, isTime bool) any {
	if a.IsNull(r) {
		return nil
	}
	switch a := a.(type) {
	case *array.String:
		return a.Value(r)
	case *array.LargeString:
		return a.Value(r)
	case *array.Int64:
		return a.Value(r)
	case *array.Timestamp:
		us := int64(a.Value(r))
		if isTime {
			us = floorDiv(us, dayMicros) * dayMicros
		}
		return dayValue{v: us}
	case *array.Date32:
		return dayValue{v: int64(a.Value(r)), date: true}
	}
	return nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func appendKey(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, 0)
	case string:
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...)
	case int64:
		b = append(b, 2)
		return binary.BigEndian.AppendUint64(b, uint64(v)^1<<63)
	case dayValue:
		b = append(b, 3)
		return binary.BigEndian.AppendUint64(b, uint64(v.v)^1<<63)
	}
	return b
}

func appendValue(b array.Builder, v any) {
	switch v := v.(type) {
	case nil:
		b.AppendNull()
	case string:
		b.(*array.StringBuilder).Append(v)
	case int64:
		b.(*array.Int64Builder).Append(v)
	case dayValue:
		if v.date {
			b.(*array.Date32Builder).Append(arrow.Date32(v.v))
		} else {
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(v.v))
		}
	}
}

// Covers returns the base table snapshots a rollup table's current snapshot covers,
// with how many appends cover each (more than one is a double count).
func Covers(rt *table.Table) map[int64]int {
	out := map[int64]int{}
	for s := rt.CurrentSnapshot(); s != nil; {
		if s.Summary != nil {
			if id, err := strconv.ParseInt(s.Summary.Properties[PropCovers], 10, 64); err == nil {
				out[id]++
			}
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = rt.SnapshotByID(*s.ParentSnapshotID)
	}
	return out
}

// ErrNotRollable is returned by Appends for a table whose history changed rows other
// than by appending them (overwrites, deletes) or is no longer complete (expired
// snapshots): a rollup of its appends would not describe its rows.
var ErrNotRollable = errors.New("table history is not append-only")

// Appends returns the snapshots of base's current history that added rows: those a
// rollup must cover, exactly once each, to describe the table. Replace snapshots
// (compaction) change no rows and need no cover.
func Appends(base *table.Table) (map[int64]bool, error) {
	return appendsSince(base, 0)
}

// appendsSince is Appends for the history after snapshot since (0: the whole history),
// which must be an ancestor of base's current snapshot that has not expired.
func appendsSince(base *table.Table, since int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	for s := base.CurrentSnapshot(); s != nil && s.SnapshotID != since; {
		op := table.OpAppend
		if s.Summary != nil {
			op = s.Summary.Operation
		}
		switch op {
		case table.OpAppend:
			out[s.SnapshotID] = true
		case table.OpReplace:
		default:
			return nil, fmt.Errorf("%w: snapshot %d is %s", ErrNotRollable, s.SnapshotID, op)
		}
		if s.ParentSnapshotID == nil {
			if since != 0 {
				return nil, fmt.Errorf("%w: checkpoint snapshot %d is not in the history", ErrNotRollable, since)
			}
			break
		}
		parent := base.SnapshotByID(*s.ParentSnapshotID)
		if parent == nil {
			return nil, fmt.Errorf("%w: snapshot %d's parent %d has expired", ErrNotRollable, s.SnapshotID, *s.ParentSnapshotID)
		}
		s = parent
	}
	return out, nil
}

// coversSince returns what a rollup table covers after its newest checkpoint, with
// how many appends cover each base snapshot, and the base snapshot the checkpoint
// names (0 when there is none: the covers are the whole history's).
func coversSince(rt *table.Table) (map[int64]int, int64, error) {
	out := map[int64]int{}
	for s := rt.CurrentSnapshot(); s != nil; {
		if s.Summary != nil {
			if ck, err := strconv.ParseInt(s.Summary.Properties[PropCheckpoint], 10, 64); err == nil {
				return out, ck, nil
			}
			if id, err := strconv.ParseInt(s.Summary.Properties[PropCovers], 10, 64); err == nil {
				out[id]++
			}
		}
		if s.ParentSnapshotID == nil {
			break
		}
		parent := rt.SnapshotByID(*s.ParentSnapshotID)
		if parent == nil {
			return nil, 0, fmt.Errorf("%w: rollup snapshot %d's parent %d has expired before any checkpoint", ErrNotRollable, s.SnapshotID, *s.ParentSnapshotID)
		}
		s = parent
	}
	return out, 0, nil
}

// Consistent reports whether a rollup table describes its base table exactly: after
// its newest checkpoint it covers every append of the base table's history since the
// checkpoint's base snapshot once, and nothing else.
func Consistent(base *table.Table, rt *table.Table) bool {
	covers, since, err := coversSince(rt)
	if err != nil {
		return false
	}
	return exactCover(base, since, covers)
}

// exactCover says whether covers holds each append of base's history after since
// exactly once, and nothing else.
func exactCover(base *table.Table, since int64, covers map[int64]int) bool {
	appends, err := appendsSince(base, since)
	if err != nil {
		return false
	}
	if len(covers) != len(appends) {
		return false
	}
	for id, n := range covers {
		if n != 1 || !appends[id] {
			return false
		}
	}
	return true
}

// conflictRetries bounds re-plans of a rollup append after another commit moved the
// rollup table.
const conflictRetries = 10

// Append appends rec, the rollup of base snapshot snapID's rows, to the rollup table
// ident, creating the table when it is absent. An append already covering snapID (a
// retry after an unknown outcome) makes it a no-op, so a snapshot is covered once.
// base is the base table as of snapID or later; when the append makes the rollup
// cover base's history exactly, it is marked a checkpoint (PropCheckpoint).
func Append(ctx context.Context, cat icecatalog.Catalog, ident table.Identifier, base *table.Table, snapID int64, rec arrow.RecordBatch) error {
	for attempt := 0; ; attempt++ {
		rt, err := loadOrCreate(ctx, cat, ident, rec.Schema())
		if err != nil {
			return err
		}
		if Covers(rt)[snapID] > 0 {
			return nil
		}
		props := iceberg.Properties{PropCovers: strconv.FormatInt(snapID, 10)}
		if covers, since, err := coversSince(rt); err == nil && base.CurrentSnapshot() != nil {
			covers[snapID]++
			if exactCover(base, since, covers) {
				props[PropCheckpoint] = strconv.FormatInt(base.CurrentSnapshot().SnapshotID, 10)
			}
		}
		at := array.NewTableFromRecords(rec.Schema(), []arrow.RecordBatch{rec})
		txn := rt.NewTransaction()
		err = txn.AppendTable(ctx, at, 1<<20, props)
		at.Release()
		if err != nil {
			return fmt.Errorf("writing rollup %s of snapshot %d: %w", ident, snapID, err)
		}
		_, err = txn.Commit(ctx)
		if err != nil && attempt < conflictRetries && (errors.Is(err, table.ErrCommitFailed) || strings.Contains(err.Error(), "requirement failed: ")) {
			continue
		}
		if err != nil {
			return fmt.Errorf("committing rollup %s of snapshot %d: %w", ident, snapID, err)
		}
		return nil
	}
}

func loadOrCreate(ctx context.Context, cat icecatalog.Catalog, ident table.Identifier, sc *arrow.Schema) (*table.Table, error) {
	rt, err := cat.LoadTable(ctx, ident)
	if err == nil {
		return rt, nil
	}
	if !errors.Is(err, icecatalog.ErrNoSuchTable) {
		return nil, fmt.Errorf("loading rollup table %s: %w", ident, err)
	}
	isc, err := table.ArrowSchemaToIcebergWithFreshIDs(sc, false)
	if err != nil {
		return nil, fmt.Errorf("converting rollup schema %s: %w", ident, err)
	}
	rt, err = cat.CreateTable(ctx, ident, isc, icecatalog.WithProperties(iceberg.Properties{
		table.CommitNumRetriesKey:         "0",
		"format-version":                  "2",
		"write.parquet.compression-codec": "zstd",
	}))
	if errors.Is(err, icecatalog.ErrTableAlreadyExists) {
		return cat.LoadTable(ctx, ident)
	}
	if err != nil {
		return nil, fmt.Errorf("creating rollup table %s: %w", ident, err)
	}
	return rt, nil
}

// MaxRepairs bounds how many uncovered appends one Repair rolls up, so a table with a
// long uncovered history (created before its rollup) catches up over several commits
// instead of holding one up.
const MaxRepairs = 8

// Repair appends the rollups of appends in base's current history that the rollup
// table ident does not cover (a rollup append that failed after its data commit, or
// history from before the rollup existed), at most MaxRepairs of them, reading their
// data files. It returns how many it appended. A history that is not append-only or has
// expired snapshots cannot be repaired and returns an error wrapping ErrNotRollable.
func Repair(ctx context.Context, cat icecatalog.Catalog, ident table.Identifier, d Def, base *table.Table, mem memory.Allocator) (int, error) {
	covers, since := map[int64]int{}, int64(0)
	if rt, err := cat.LoadTable(ctx, ident); err == nil {
		if covers, since, err = coversSince(rt); err != nil {
			return 0, err
		}
	} else if !errors.Is(err, icecatalog.ErrNoSuchTable) {
		return 0, fmt.Errorf("loading rollup table %s: %w", ident, err)
	}
	appends, err := appendsSince(base, since)
	if err != nil {
		return 0, err
	}
	var missing []int64
	for id := range appends {
		if covers[id] == 0 {
			missing = append(missing, id)
		}
	}
	slices.Sort(missing)
	if len(missing) > MaxRepairs {
		missing = missing[:MaxRepairs]
	}
	fsys, err := base.FS(ctx)
	if err != nil {
		return 0, fmt.Errorf("opening table file IO: %w", err)
	}
	n := 0
	for _, id := range missing {
		at, err := addedRows(ctx, fsys, base, id, mem)
		if err != nil {
			return n, err
		}
		rec, err := d.Aggregate(at, mem)
		at.Release()
		if err != nil {
			return n, err
		}
		err = Append(ctx, cat, ident, base, id, rec)
		rec.Release()
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// addedRows reads the rows of the data files snapshot id added.
func addedRows(ctx context.Context, fsys iceio.IO, base *table.Table, id int64, mem memory.Allocator) (arrow.Table, error) {
	snap := base.SnapshotByID(id)
	if snap == nil {
		return nil, fmt.Errorf("%w: snapshot %d has expired", ErrNotRollable, id)
	}
	manifests, err := snap.Manifests(fsys)
	if err != nil {
		return nil, fmt.Errorf("reading manifests of snapshot %d: %w", id, err)
	}
	var tables []arrow.Table
	defer func() {
		for _, t := range tables {
			t.Release()
		}
	}()
	for _, m := range manifests {
		if m.SnapshotID() != id || m.ManifestContent() != iceberg.ManifestContentData {
			continue
		}
		entries, err := m.FetchEntries(fsys, true)
		if err != nil {
			return nil, fmt.Errorf("reading manifest %s: %w", m.FilePath(), err)
		}
		for _, e := range entries {
			if e.Status() != iceberg.EntryStatusADDED || e.SnapshotID() != id {
				continue
			}
			t, err := readParquet(ctx, fsys, e.DataFile().FilePath(), mem)
			if err != nil {
				return nil, err
			}
			tables = append(tables, t)
		}
	}
	if len(tables) == 0 {
		return array.NewTableFromRecords(arrow.NewSchema(nil, nil), nil), nil
	}
	// Files written under different schemas are rolled up one by one and concatenated.
	var recs []arrow.RecordBatch
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	sc := tables[0].Schema()
	for _, t := range tables {
		if !t.Schema().Equal(sc) {
			return nil, fmt.Errorf("snapshot %d added files of different schemas; rebuild its rollup by hand", id)
		}
		tr := array.NewTableReader(t, 1<<16)
		for tr.Next() {
			r := tr.RecordBatch()
			r.Retain()
			recs = append(recs, r)
		}
		tr.Release()
	}
	return array.NewTableFromRecords(sc, recs), nil
}

func readParquet(ctx context.Context, fsys iceio.IO, path string, mem memory.Allocator) (arrow.Table, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening data file %s: %w", path, err)
	}
	defer f.Close()
	t, err := pqarrow.ReadTable(ctx, f, parquet.NewReaderProperties(mem), pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, mem)
	if err != nil {
		return nil, fmt.Errorf("reading data file %s: %w", path, err)
	}
	return t, nil
}
