package main

import (
	"bytes"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
)

// TestTablesCommand walks `medlake tables` over a table of small files with an
// equality delete: list and show report it unhealthy, compact folds it into one file
// per partition, expire and clean follow the configured retention.
func TestTablesCommand(t *testing.T) {
	dir := t.TempDir()
	lakeFixture(t, dir, "labs", 6)
	t.Setenv("MEDLAKE_MAINTENANCE_RETAIN_LAST", "1")
	t.Setenv("MEDLAKE_MAINTENANCE_MAX_SNAPSHOT_AGE", "0s")
	steps := []struct {
		args []string
		want []string // regexps stdout must match
		err  string
	}{
		{[]string{"--data-dir", dir}, []string{
			`TABLE +FILES +SIZE +DELETE FILES +SMALL +SNAPSHOTS +LAST COMMIT +LAST COMPACTION +HEALTH`,
			`labs +24 +\d+\.\d KiB +4 +24 +7 +20\d\d-\S+ +- +4 partitions to compact; 4 delete files to fold`}, ""},
		{[]string{"show", "--data-dir", dir, "labs"}, []string{`small files: +24`, `partitions: +4 \(4 to compact\)`,
			`data files: +24 \(.*, 120 records before deletes\)`, `last compaction: +-`}, ""},
		{[]string{"compact", "--data-dir", dir, "--quiet", "labs"}, []string{
			`table labs: 4 groups, 24 data files \(.*\) -> 4 \(.*\), 4 delete files folded, 114 rows, snapshot \d+`}, ""},
		{[]string{"show", "--data-dir", dir, "labs"}, []string{`data files: +4 `, `delete files: +0 `,
			`health: +snapshots past retention$`, `last compaction: +20\d\d-`}, ""},
		{[]string{"compact", "--data-dir", dir, "labs"}, []string{`table labs: nothing to compact`}, ""},
		{[]string{"expire", "--data-dir", dir, "labs"}, []string{`table labs: 7 of 8 snapshots expired \(retain last 1, max age 0s\)`}, ""},
		{[]string{"show", "--data-dir", dir, "labs"}, []string{`snapshots: +1$`, `health: +ok$`}, ""},
		{[]string{"clean", "--data-dir", dir, "--dry-run", "labs"}, []string{`table labs: would remove 0 orphan files \(0 B\) older than 24h0m0s`}, ""},
		{[]string{"show", "--data-dir", dir, "nosuch"}, nil, "nosuch"},
		{[]string{"compact", "--data-dir", dir}, nil, "need one table name"},
		{[]string{"frobnicate"}, nil, `unknown command "frobnicate"`},
	}
	for _, s := range steps {
		var out bytes.Buffer
		err := run(t.Context(), append([]string{"tables"}, s.args...), &out)
		if s.err != "" {
			if err == nil || !regexp.MustCompile(s.err).MatchString(err.Error()) {
				t.Errorf("tables %v: error %v, want %q", s.args, err, s.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("tables %v: %v\n%s", s.args, err, out.String())
		}
		for _, w := range s.want {
			if !regexp.MustCompile(`(?m)` + w).MatchString(out.String()) {
				t.Errorf("tables %v: output lacks %q:\n%s", s.args, w, out.String())
			}
		}
	}
}

// lakeFixture creates, in the SQLite catalog under dir, a table partitioned like the
// hub's with appends small files each holding 20 rows over 2 facilities and 2 days,
// and one equality delete of 6 rows.
func lakeFixture(t *testing.T, dir, name string, appends int) {
	t.Helper()
	ctx := t.Context()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "_facility", Type: arrow.BinaryTypes.String},
		{Name: "observed_at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	}, nil)
	sc, err := table.ArrowSchemaToIcebergWithFreshIDs(sch, false)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := iceberg.NewPartitionSpecOpts(
		iceberg.AddPartitionFieldByName("_facility", "_facility", iceberg.IdentityTransform{}, sc, nil),
		iceberg.AddPartitionFieldByName("observed_at", "observed_at_day", iceberg.DayTransform{}, sc, nil))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := cat.Iceberg().CreateTable(ctx, cat.TableIdent(name), sc, icecatalog.WithPartitionSpec(&spec),
		icecatalog.WithProperties(iceberg.Properties{"format-version": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	rows := func(first, n int) arrow.RecordBatch {
		b := array.NewRecordBuilder(memory.DefaultAllocator, sch)
		defer b.Release()
		for i := first; i < first+n; i++ {
			b.Field(0).(*array.Int64Builder).Append(int64(i))
			b.Field(1).(*array.StringBuilder).Append(fmt.Sprintf("F%03d", i%2))
			b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(base.Add(time.Duration(i%4/2*24)*time.Hour + time.Duration(i)*time.Minute).UnixMicro()))
		}
		return b.NewRecordBatch()
	}
	for i := range appends {
		rec := rows(i*20, 20)
		at := array.NewTableFromRecords(sch, []arrow.RecordBatch{rec})
		txn := tbl.NewTransaction()
		if err := txn.AppendTable(ctx, at, 1<<20, nil); err != nil {
			t.Fatal(err)
		}
		if tbl, err = txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		at.Release()
		rec.Release()
	}
	del := rows(0, 6)
	defer del.Release()
	txn := tbl.NewTransaction()
	files, err := txn.WriteEqualityDeletes(ctx, []int{1, 2, 3}, func(yield func(arrow.RecordBatch, error) bool) {
		del.Retain()
		yield(del, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	rd := txn.NewRowDelta(nil)
	rd.AddDeletes(files...)
	if err := rd.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
