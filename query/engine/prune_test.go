package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/internal/testlake"
)

// partitionedLabs creates "labs" partitioned as the hub partitions tables, by
// identity(_facility) and day(collected_at), with three commits of random rows.
func partitionedLabs(t *testing.T) (*Engine, icecatalog.Catalog) {
	t.Helper()
	ctx := context.Background()
	cat := testlake.Catalog(t)
	isc, err := table.ArrowSchemaToIcebergWithFreshIDs(rollupLabSchema, false)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := iceberg.NewPartitionSpecOpts(
		iceberg.AddPartitionFieldByName("_facility", "_facility", iceberg.IdentityTransform{}, isc, nil),
		iceberg.AddPartitionFieldByName("collected_at", "collected_at_day", iceberg.DayTransform{}, isc, nil))
	if err != nil {
		t.Fatal(err)
	}
	ident := table.Identifier{testlake.Namespace, "labs"}
	tbl, err := cat.CreateTable(ctx, ident, isc, icecatalog.WithPartitionSpec(&spec),
		icecatalog.WithProperties(iceberg.Properties{"format-version": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	seq := 0
	for range 3 {
		rec := labBatch(r, 2000, &seq)
		at := array.NewTableFromRecords(rec.Schema(), []arrow.RecordBatch{rec})
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
	return openEngine(t, cat), cat
}

// TestPruneMatchesAllFiles: queries restricting facility, tenant and time read fewer
// files and give what reading every file gives, for admins and tenant users.
func TestPruneMatchesAllFiles(t *testing.T) {
	e, _ := partitionedLabs(t)
	all := len(e.meta.pruneIndex("labs").files)
	if all < 100 {
		t.Fatalf("labs has %d files; want one per facility and day", all)
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
