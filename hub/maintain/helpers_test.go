package maintain

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
)

// A test table shaped like the hub's: partitioned by identity(_facility) and
// day(observed_at), written with iceberg-go's own append as the hub does.
var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "_facility", Type: arrow.BinaryTypes.String},
	{Name: "observed_at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	{Name: "value", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

type testRow struct {
	ID       int64
	Facility string
	At       time.Time
	Value    string
}

var testBase = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// rowsFor makes n rows with ids from first, spread over two facilities and two days in
// a scrambled time order.
func rowsFor(first int64, n int) []testRow {
	out := make([]testRow, n)
	for i := range n {
		id := first + int64(i)
		out[i] = testRow{ID: id, Facility: []string{"F001", "F002"}[id%2],
			At:    testBase.Add(time.Duration((id*7919)%(2*24*3600)) * time.Second),
			Value: fmt.Sprintf("v%d", id)}
	}
	return out
}

func openTestCatalog(tb testing.TB, cfg catalog.Config) *catalog.Catalog {
	tb.Helper()
	cat, err := catalog.Open(tb.Context(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cat.Close() })
	return cat
}

func createTestTable(tb testing.TB, cat *catalog.Catalog, name string) *table.Table {
	tb.Helper()
	sc, err := table.ArrowSchemaToIcebergWithFreshIDs(testSchema, false)
	if err != nil {
		tb.Fatal(err)
	}
	spec, err := iceberg.NewPartitionSpecOpts(
		iceberg.AddPartitionFieldByName("_facility", "_facility", iceberg.IdentityTransform{}, sc, nil),
		iceberg.AddPartitionFieldByName("observed_at", "observed_at_day", iceberg.DayTransform{}, sc, nil),
	)
	if err != nil {
		tb.Fatal(err)
	}
	tbl, err := cat.Iceberg().CreateTable(tb.Context(), cat.TableIdent(name), sc,
		icecatalog.WithPartitionSpec(&spec),
		icecatalog.WithProperties(iceberg.Properties{
			table.CommitNumRetriesKey: "0", "format-version": "2", "write.parquet.compression-codec": "zstd",
		}))
	if err != nil {
		tb.Fatal(err)
	}
	return tbl
}

func record(rows []testRow) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, testSchema)
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.Int64Builder).Append(r.ID)
		b.Field(1).(*array.StringBuilder).Append(r.Facility)
		b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(r.At.UnixMicro()))
		b.Field(3).(*array.StringBuilder).Append(r.Value)
	}
	return b.NewRecordBatch()
}

// appendRows commits rows as one snapshot, re-planning on conflicts as the hub's
// committer does.
func appendRows(ctx context.Context, cat *catalog.Catalog, name string, rows []testRow) error {
	rec := record(rows)
	defer rec.Release()
	at := array.NewTableFromRecords(testSchema, []arrow.RecordBatch{rec})
	defer at.Release()
	for attempt := 0; ; attempt++ {
		tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(name))
		if err != nil {
			return err
		}
		txn := tbl.NewTransaction()
		if err := txn.AppendTable(ctx, at, 1<<20, iceberg.Properties{"medlake.batch_ids": fmt.Sprintf("b%d", rows[0].ID)}); err != nil {
			return err
		}
		_, err = txn.Commit(ctx)
		if IsCommitConflict(err) && attempt < 50 {
			continue
		}
		return err
	}
}

// deleteByEquality commits equality deletes for rows (keyed by all their partition
// and id columns) in a row delta.
func deleteByEquality(ctx context.Context, cat *catalog.Catalog, name string, rows []testRow) error {
	keySchema := arrow.NewSchema(testSchema.Fields()[:3], nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, keySchema)
	for _, r := range rows {
		b.Field(0).(*array.Int64Builder).Append(r.ID)
		b.Field(1).(*array.StringBuilder).Append(r.Facility)
		b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(r.At.UnixMicro()))
	}
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	tbl, err := cat.Iceberg().LoadTable(ctx, cat.TableIdent(name))
	if err != nil {
		return err
	}
	var ids []int
	for _, n := range []string{"id", "_facility", "observed_at"} {
		f, _ := tbl.Schema().FindFieldByName(n)
		ids = append(ids, f.ID)
	}
	txn := tbl.NewTransaction()
	files, err := txn.WriteEqualityDeletes(ctx, ids, func(yield func(arrow.RecordBatch, error) bool) {
		rec.Retain()
		yield(rec, nil)
	})
	if err != nil {
		return fmt.Errorf("writing equality deletes: %w", err)
	}
	rd := txn.NewRowDelta(nil)
	rd.AddDeletes(files...)
	if err := rd.Commit(ctx); err != nil {
		return err
	}
	_, err = txn.Commit(ctx)
	return err
}

// scanRows reads the table's current state, ordered by id.
func scanRows(tb testing.TB, cat *catalog.Catalog, name string) []testRow {
	tb.Helper()
	tbl, err := cat.Iceberg().LoadTable(tb.Context(), cat.TableIdent(name))
	if err != nil {
		tb.Fatal(err)
	}
	at, err := tbl.Scan().ToArrowTable(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	defer at.Release()
	var out []testRow
	rdr := array.NewTableReader(at, 0)
	defer rdr.Release()
	for rdr.Next() {
		r := rdr.RecordBatch()
		id := r.Column(r.Schema().FieldIndices("id")[0]).(*array.Int64)
		fac := r.Column(r.Schema().FieldIndices("_facility")[0]).(*array.String)
		ts := r.Column(r.Schema().FieldIndices("observed_at")[0]).(*array.Timestamp)
		val := r.Column(r.Schema().FieldIndices("value")[0]).(*array.String)
		for i := range int(r.NumRows()) {
			out = append(out, testRow{ID: id.Value(i), Facility: fac.Value(i), At: ts.Value(i).ToTime(arrow.Microsecond).UTC(), Value: val.Value(i)})
		}
	}
	slices.SortFunc(out, func(a, b testRow) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// tableFiles lists the current snapshot's data and delete files.
func tableFiles(tb testing.TB, cat *catalog.Catalog, name string) (data, deletes []iceberg.DataFile) {
	tb.Helper()
	tbl, err := cat.Iceberg().LoadTable(tb.Context(), cat.TableIdent(name))
	if err != nil {
		tb.Fatal(err)
	}
	tasks, err := tbl.Scan().PlanFiles(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	seen := map[string]bool{}
	for _, t := range tasks {
		data = append(data, t.File)
		for _, d := range slices.Concat(t.DeleteFiles, t.EqualityDeleteFiles, t.DeletionVectorFiles) {
			if !seen[d.FilePath()] {
				seen[d.FilePath()] = true
				deletes = append(deletes, d)
			}
		}
	}
	return data, deletes
}

// fileTimes reads the observed_at column of a local Parquet data file, in file order.
func fileTimes(tb testing.TB, path string) []int64 {
	tb.Helper()
	f, err := os.Open(strings.TrimPrefix(path, "file://"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	pf, err := file.NewParquetReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	defer pf.Close()
	rdr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		tb.Fatal(err)
	}
	at, err := rdr.ReadTable(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	defer at.Release()
	col := at.Column(at.Schema().FieldIndices("observed_at")[0]).Data()
	var out []int64
	for _, c := range col.Chunks() {
		for _, v := range c.(*array.Timestamp).Values() {
			out = append(out, int64(v))
		}
	}
	return out
}
