package engine

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/internal/testlake"
)

// TestViewsFollowAddedColumns: a column added to a table (as the hub does for a feed's
// drift add) is queryable as soon as the schema has it, NULL in files written before,
// and holds its values once files carry it.
func TestViewsFollowAddedColumns(t *testing.T) {
	ctx := context.Background()
	cat := testlake.Catalog(t)
	testlake.CreateLabTable(t, cat, "lab_results")
	testlake.AppendLabRows(t, cat, "lab_results", 0, 100)
	e := openEngine(t, cat)

	tbl, err := cat.LoadTable(ctx, table.Identifier{testlake.Namespace, "lab_results"})
	if err != nil {
		t.Fatal(err)
	}
	txn := tbl.NewTransaction()
	if err := txn.UpdateSchema(true, false).AddColumn([]string{"ward"}, iceberg.PrimitiveTypes.String, "", false, nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if tbl, err = txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryInts(t, e, `SELECT count(*) - count(ward) FROM lab_results`); got[0] != 100 {
		t.Fatalf("ward before any file holds it: %d NULLs, want 100", got[0])
	}

	sc := arrow.NewSchema([]arrow.Field{
		{Name: "lab_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "ward", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i := range 10 {
		b.Field(0).(*array.Int64Builder).Append(int64(1000 + i))
		b.Field(1).(*array.StringBuilder).Append("north")
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer at.Release()
	if _, err := tbl.AppendTable(ctx, at, 10, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryInts(t, e, `SELECT count(ward) FROM lab_results WHERE ward = 'north'`); got[0] != 10 {
		t.Errorf("rows with ward = %d, want 10", got[0])
	}
	if got := queryInts(t, e, `SELECT count(*) FROM lab_results WHERE ward IS NULL`); got[0] != 100 {
		t.Errorf("rows of older files with NULL ward = %d, want 100", got[0])
	}
}
