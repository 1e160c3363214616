package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/internal/testlake"
)

// partitionedLabs creates "labs" with three commits of random rows, partitioned as
// the hub partitions append tables: by day(collected_at) alone, each commit's rows
// sorted by _facility and split into three commits, so that a file holds a range of
// facilities (the layout of hub.SortForAppend); or, with byFacility, by
// identity(_facility) and day(collected_at), the layout of tables created before.
func partitionedLabs(t *testing.T, byFacility bool) (*Engine, icecatalog.Catalog) {
	t.Helper()
	ctx := context.Background()
	cat := testlake.Catalog(t)
	isc, err := table.ArrowSchemaToIcebergWithFreshIDs(rollupLabSchema, false)
	if err != nil {
		t.Fatal(err)
	}
	fields := []iceberg.PartitionOption{iceberg.AddPartitionFieldByName("collected_at", "collected_at_day", iceberg.DayTransform{}, isc, nil)}
	if byFacility {
		fields = append([]iceberg.PartitionOption{iceberg.AddPartitionFieldByName("_facility", "_facility", iceberg.IdentityTransform{}, isc, nil)}, fields...)
	}
	spec, err := iceberg.NewPartitionSpecOpts(fields...)
	if err != nil {
		t.Fatal(err)
	}
	ident := table.Identifier{testlake.Namespace, "labs"}
	tbl, err := cat.CreateTable(ctx, ident, isc, icecatalog.WithPartitionSpec(&spec),
		icecatalog.WithProperties(iceberg.Properties{"format-version": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	commit := func(at arrow.Table) {
		txn := tbl.NewTransaction()
		if err := txn.AppendTable(ctx, at, 1<<20, nil); err != nil {
			t.Fatal(err)
		}
		if tbl, err = txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(5, 5))
	seq := 0
	for range 3 {
		rec := labBatch(r, 2000, &seq)
		at := array.NewTableFromRecords(rec.Schema(), []arrow.RecordBatch{rec})
		if byFacility {
			commit(at)
		} else {
			keys := []compute.SortKey{{ColumnIndex: 6}, {ColumnIndex: 4}} // _facility, collected_at
			idx, err := compute.SortIndicesTable(ctx, at, keys)
			if err != nil {
				t.Fatal(err)
			}
			out, err := compute.Take(ctx, *compute.DefaultTakeOptions(), compute.NewDatum(at), compute.NewDatum(idx))
			if err != nil {
				t.Fatal(err)
			}
			sorted := out.(*compute.TableDatum).Value
			n := sorted.NumRows()
			for i := range int64(3) {
				lo, hi := i*n/3, (i+1)*n/3
				cols := make([]arrow.Column, sorted.NumCols())
				for c := range cols {
					cols[c] = *array.NewColumnSlice(sorted.Column(c), lo, hi)
				}
				part := array.NewTable(sorted.Schema(), cols, hi-lo)
				commit(part)
				part.Release()
			}
			out.Release()
			idx.Release()
		}
		at.Release()
		rec.Release()
	}
	return openEngine(t, cat), cat
}

// TestPruneMatchesAllFiles: queries restricting facility, tenant and time read fewer
// files and give what reading every file gives, for admins and tenant users.
func TestPruneMatchesAllFiles(t *testing.T) {
	t.Run("day", func(t *testing.T) { testPruneMatchesAllFiles(t, false) })
	t.Run("facility and day", func(t *testing.T) { testPruneMatchesAllFiles(t, true) })
}

func testPruneMatchesAllFiles(t *testing.T, byFacility bool) {
	e, _ := partitionedLabs(t, byFacility)
	all := len(e.meta.pruneIndex("labs").files)
	if all < 100 {
		t.Fatalf("labs has %d files; want one per facility (or commit) and day", all)
	}
	if !byFacility {
		ranges := 0
		for _, f := range e.meta.pruneIndex("labs").files {
			if f.facilityHigh != "" {
				ranges++
			}
		}
		if ranges == 0 {
			t.Fatalf("no file of %d has a range of _facility bounds", all)
		}
	}
	admin := auth.Principal{User: "admin", Admin: true}
	tenant := auth.Principal{User: "u1", Tenant: "t1"}
	granted := auth.Principal{User: "u3", Tenant: "t3", Facilities: []string{"f5"}}
	for _, tc := range []struct {
		q      string
		p      auth.Principal
		pruned bool
	}{
		{`SELECT count(*), sum(value) FROM labs WHERE _facility = 'f2'`, admin, true},
		{`SELECT lab_id FROM labs WHERE _facility IN ('f1', 'f4') AND collected_at >= '2025-03-20' ORDER BY lab_id`, admin, true},
		{`SELECT lab_id FROM labs WHERE collected_at > '2025-03-20 13:00:00' AND collected_at <= '2025-03-22 00:00:00+00' ORDER BY lab_id`, admin, true},
		{`SELECT lab_id FROM labs WHERE collected_at BETWEEN '2025-03-02' AND '2025-03-03' ORDER BY lab_id`, admin, true},
		{`SELECT lab_id FROM labs WHERE '2025-04-01' < collected_at ORDER BY lab_id`, admin, true},
		{`SELECT lab_id FROM labs WHERE collected_at = '2025-03-05 00:00:00' ORDER BY lab_id`, admin, true},
		{`SELECT count(*) FROM labs WHERE _tenant = 't2'`, admin, true},
		{`SELECT count(*) FROM labs WHERE _facility = 'f1' AND _facility = 'f2'`, admin, true},
		{`SELECT l.lab_id FROM labs l WHERE l._facility = 'f3' AND l.collected_at < DATE '2025-03-10' ORDER BY 1`, admin, true},
		{`SELECT count(*) FROM labs WHERE _facility = 'f1' OR collected_at < '2025-03-03'`, admin, false},
		{`SELECT count(*) FROM labs WHERE value > 3`, admin, false},
		{`SELECT count(*), min(collected_at) FROM labs`, tenant, true},
		{`SELECT test_code, count(*) FROM labs WHERE collected_at >= '2025-03-30' GROUP BY 1 ORDER BY 1`, tenant, true},
		{`SELECT count(*) FROM labs WHERE _facility = 'f4'`, tenant, true}, // another tenant's: no file at all
		{`SELECT count(*) FROM labs`, granted, true},
		{`SELECT count(*) FROM labs a JOIN labs b ON a.lab_id = b.lab_id WHERE a._facility = 'f1'`, tenant, true},
	} {
		raw := tc.q
		if !tc.p.Admin {
			scope := "_tenant = '" + tc.p.Tenant + "'"
			if len(tc.p.Facilities) > 0 {
				scope += " AND _facility IN ('" + strings.Join(tc.p.Facilities, "', '") + "')"
			}
			raw = strings.ReplaceAll(tc.q, "FROM labs", "FROM (SELECT * FROM labs WHERE "+scope+") labs")
			raw = strings.ReplaceAll(raw, ") labs a", ") a")
			raw = strings.ReplaceAll(raw, "JOIN labs b", "JOIN (SELECT * FROM labs WHERE "+scope+") b")
		}
		_, got, _ := runSession(t, e, tc.p, tc.q)
		_, want := runRaw(t, e, raw)
		if !slices.Equal(got, want) {
			t.Errorf("%s as %s: got %d rows %.200q, want %d rows %.200q", tc.q, tc.p.User, len(got), got, len(want), want)
		}
		if pruned := prunes(t, e, tc.p, tc.q); pruned != tc.pruned {
			t.Errorf("%s as %s: pruned = %v, want %v", tc.q, tc.p.User, pruned, tc.pruned)
		}
	}
}

// prunes reports whether q, scoped for p, is changed by pruning.
func prunes(t *testing.T, e *Engine, p auth.Principal, q string) bool {
	t.Helper()
	ctx := context.Background()
	s, err := e.Session(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tree, err := parse(ctx, s.conn, q)
	if err != nil {
		t.Fatal(err)
	}
	sc := &scoper{principal: p, tables: e.scopeTables(), filter: s.filter, metaSchemas: e.metaSchemas}
	if _, err := sc.scope(tree); err != nil {
		t.Fatal(err)
	}
	changed, err := e.pruneFiles(ctx, s.conn, tree)
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

// TestPruneRestriction checks which files a restriction keeps at the day edges.
func TestPruneRestriction(t *testing.T) {
	const day = 86400 * 1_000_000
	f := fileMeta{day: 10, hasDay: true} // rows in [10 days, 11 days)
	for _, tc := range []struct {
		r    restriction
		keep bool
	}{
		{restriction{low: 11 * day, lowSet: true, lowIncl: true}, false},
		{restriction{low: 11*day - 1, lowSet: true, lowIncl: true}, true},
		{restriction{high: 10 * day, highSet: true}, false},
		{restriction{high: 10 * day, highSet: true, highIncl: true}, true},
		{restriction{high: 9 * day, highSet: true, highIncl: true}, false},
		{restriction{low: 10 * day, lowSet: true}, true},
	} {
		if got := tc.r.keeps(f); got != tc.keep {
			t.Errorf("%+v keeps %v, want %v", tc.r, got, tc.keep)
		}
	}
}

// TestPruneFacilityBounds checks files known by _facility bounds rather than by
// partition value.
func TestPruneFacilityBounds(t *testing.T) {
	var f fileMeta
	f.facilityBounds([]byte("f2"), []byte("f4"))
	if f.hasFacility || f.facilityLow != "f2" || f.facilityHigh != "f4" {
		t.Fatalf("bounds f2..f4 noted as %+v", f)
	}
	for _, tc := range []struct {
		facilities []string
		keep       bool
	}{
		{[]string{"f1"}, false},
		{[]string{"f2"}, true},
		{[]string{"f3"}, true},
		{[]string{"f4"}, true},
		{[]string{"f5", "f1"}, false},
		{[]string{"f5", "f3"}, true},
		{nil, true},
	} {
		var r restriction
		if tc.facilities != nil {
			r.allowCol(facilityColumn, tc.facilities)
		}
		if got := r.keeps(f); got != tc.keep {
			t.Errorf("facilities %v: keeps %v, want %v", tc.facilities, got, tc.keep)
		}
	}
	var one fileMeta
	one.facilityBounds([]byte("f3"), []byte("f3"))
	if !one.hasFacility || one.facility != "f3" {
		t.Errorf("equal bounds f3 noted as %+v", one)
	}
	var long fileMeta // an upper bound of 16 bytes may be truncated: not used
	long.facilityBounds([]byte("f1"), []byte("facility-0000001"))
	if long.facilityHigh != "" || long.hasFacility {
		t.Errorf("truncatable upper bound noted as %+v", long)
	}
}
