package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/internal/testlake"
)

// eqKey is a delete key: _tenant, _facility, id (nil: NULL).
type eqKey struct {
	tenant, facility string
	id               *int64
}

func i64(v int64) *int64 { return &v }

// rowDelta commits rows and equality deletes on (_tenant, _facility, id) as one
// row delta, as the hub commits upserts.
func rowDelta(tb testing.TB, cat icecatalog.Catalog, name string, rows []testlake.TenantRow, nullIDs int, dels []eqKey) {
	tb.Helper()
	ctx := context.Background()
	tbl, err := cat.LoadTable(ctx, table.Identifier{testlake.Namespace, name})
	if err != nil {
		tb.Fatal(err)
	}
	txn := tbl.NewTransaction()
	rd := txn.NewRowDelta(nil)
	if len(rows)+nullIDs > 0 {
		sc, err := table.SchemaToArrowSchema(tbl.Schema(), nil, false, false)
		if err != nil {
			tb.Fatal(err)
		}
		b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
		for _, r := range rows {
			b.Field(0).(*array.Int64Builder).Append(r.ID)
			b.Field(1).(*array.StringBuilder).Append(r.Tenant)
			b.Field(2).(*array.StringBuilder).Append(r.Facility)
			b.Field(3).(*array.StringBuilder).Append(r.Patient)
			b.Field(4).(*array.Int64Builder).Append(r.Ref)
		}
		for range nullIDs { // rows with a NULL id in acme/a1
			b.Field(0).AppendNull()
			b.Field(1).(*array.StringBuilder).Append("acme")
			b.Field(2).(*array.StringBuilder).Append("a1")
			b.Field(3).(*array.StringBuilder).Append("pnull")
			b.Field(4).(*array.Int64Builder).Append(99)
		}
		rec := b.NewRecordBatch()
		b.Release()
		for df, err := range table.WriteRecords(ctx, tbl, sc, func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) }) {
			if err != nil {
				tb.Fatal(err)
			}
			rd.AddRows(df)
		}
	}
	if len(dels) > 0 {
		sel, err := tbl.Schema().Select(true, "_tenant", "_facility", "id")
		if err != nil {
			tb.Fatal(err)
		}
		dsc, err := table.SchemaToArrowSchema(sel, nil, true, false)
		if err != nil {
			tb.Fatal(err)
		}
		b := array.NewRecordBuilder(memory.DefaultAllocator, dsc)
		for _, d := range dels {
			for i, f := range dsc.Fields() {
				switch f.Name {
				case "_tenant":
					b.Field(i).(*array.StringBuilder).Append(d.tenant)
				case "_facility":
					b.Field(i).(*array.StringBuilder).Append(d.facility)
				case "id":
					if d.id == nil {
						b.Field(i).AppendNull()
					} else {
						b.Field(i).(*array.Int64Builder).Append(*d.id)
					}
				}
			}
		}
		rec := b.NewRecordBatch()
		b.Release()
		var ids []int
		for _, n := range []string{"_tenant", "_facility", "id"} {
			f, _ := tbl.Schema().FindFieldByName(n)
			ids = append(ids, f.ID)
		}
		dfs, err := txn.WriteEqualityDeletes(ctx, ids, func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) })
		if err != nil {
			tb.Fatal(err)
		}
		rd.AddDeletes(dfs...)
	}
	if err := rd.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	if _, err := txn.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
}

// icebergRows is iceberg-go's own scan of the table (deletes applied) as sorted
// "id|tenant|facility|ref" strings.
func icebergRows(tb testing.TB, cat icecatalog.Catalog, name string) []string {
	tb.Helper()
	ctx := context.Background()
	tbl, err := cat.LoadTable(ctx, table.Identifier{testlake.Namespace, name})
	if err != nil {
		tb.Fatal(err)
	}
	at, err := tbl.Scan(table.WithSelectedFields("id", "_tenant", "_facility", "ref")).ToArrowTable(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer at.Release()
	rd := array.NewTableReader(at, -1)
	defer rd.Release()
	var out []string
	for rd.Next() {
		r := rd.RecordBatch()
		for i := range int(r.NumRows()) {
			id := "<nil>"
			if !r.Column(0).IsNull(i) {
				id = r.Column(0).ValueStr(i)
			}
			out = append(out, fmt.Sprintf("%s|%s|%s|%s", id, r.Column(1).ValueStr(i), r.Column(2).ValueStr(i), r.Column(3).ValueStr(i)))
		}
	}
	slices.Sort(out)
	return out
}

// TestEqualityDeletes: the view of a table with equality deletes shows what
// iceberg-go's own scan shows, commit after commit: a delete removes older rows of its
// key in its partition only, never the rows of its own commit or later ones; NULL keys
// match NULL; tenant scope still applies.
func TestEqualityDeletes(t *testing.T) {
	ctx := context.Background()
	cat := testlake.Catalog(t)
	spec := iceberg.NewPartitionSpec(iceberg.PartitionField{SourceIDs: []int{3}, FieldID: 1000, Name: "_facility", Transform: iceberg.IdentityTransform{}})
	if _, err := cat.CreateTable(ctx, table.Identifier{testlake.Namespace, "patients"}, testlake.TenantSchema,
		icecatalog.WithPartitionSpec(&spec), icecatalog.WithProperties(iceberg.Properties{"format-version": "2"})); err != nil {
		t.Fatal(err)
	}
	e := openEngine(t, cat)
	steps := []struct {
		name    string
		rows    []testlake.TenantRow
		nullIDs int
		dels    []eqKey
		want    []string // rows acme sees
	}{
		{"inserts", []testlake.TenantRow{
			{ID: 1, Tenant: "acme", Facility: "a1", Patient: "p1", Ref: 1},
			{ID: 2, Tenant: "acme", Facility: "a1", Patient: "p2", Ref: 1},
			{ID: 2, Tenant: "acme", Facility: "a2", Patient: "p2", Ref: 1},
			{ID: 1, Tenant: "globex", Facility: "g1", Patient: "q1", Ref: 1},
		}, 1, nil, []string{"1|a1|1", "2|a1|1", "2|a2|1", "<nil>|a1|99"}},
		{"update and delete", []testlake.TenantRow{
			{ID: 1, Tenant: "acme", Facility: "a1", Patient: "p1", Ref: 2},
		}, 0, []eqKey{{"acme", "a1", i64(1)}, {"acme", "a2", i64(2)}}, []string{"1|a1|2", "2|a1|1", "<nil>|a1|99"}},
		{"a key of another partition deletes nothing", nil, 0, []eqKey{{"acme", "a2", i64(1)}, {"globex", "a1", i64(2)}},
			[]string{"1|a1|2", "2|a1|1", "<nil>|a1|99"}},
		{"NULL key and re-insert", []testlake.TenantRow{
			{ID: 2, Tenant: "acme", Facility: "a2", Patient: "p2", Ref: 3},
		}, 0, []eqKey{{"acme", "a1", nil}}, []string{"1|a1|2", "2|a1|1", "2|a2|3"}},
		{"delete everything of acme a1", nil, 0, []eqKey{{"acme", "a1", i64(1)}, {"acme", "a1", i64(2)}}, []string{"2|a2|3"}},
	}
	for _, st := range steps {
		rowDelta(t, cat, "patients", st.rows, st.nullIDs, st.dels)
		if err := e.Refresh(ctx); err != nil {
			t.Fatalf("%s: refresh: %v", st.name, err)
		}
		got, _, err := runAs(t, e, admin, `SELECT coalesce(CAST(id AS VARCHAR), '<nil>') || '|' || _tenant || '|' || _facility || '|' || ref FROM patients ORDER BY 1`)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if want := icebergRows(t, cat, "patients"); !slices.Equal(got, want) {
			t.Errorf("%s: engine shows\n%v\niceberg-go scan shows\n%v", st.name, got, want)
		}
		got, _, err = runAs(t, e, acme, `SELECT coalesce(CAST(id AS VARCHAR), '<nil>') || '|' || _facility || '|' || ref FROM patients ORDER BY 1`)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: acme sees %v, want %v", st.name, got, st.want)
		}
	}
}

// TestHistory: an admin reads every snapshot of a table with equality deletes as it
// was (AT VERSION and AT TIMESTAMP), equal to iceberg-go's scan of that snapshot, and
// table_changes between two snapshots returns op, key and row images; tenant users
// are refused both.
func TestHistory(t *testing.T) {
	ctx := context.Background()
	cat := testlake.Catalog(t)
	spec := iceberg.NewPartitionSpec(iceberg.PartitionField{SourceIDs: []int{3}, FieldID: 1000, Name: "_facility", Transform: iceberg.IdentityTransform{}})
	if _, err := cat.CreateTable(ctx, table.Identifier{testlake.Namespace, "patients"}, testlake.TenantSchema,
		icecatalog.WithPartitionSpec(&spec), icecatalog.WithProperties(iceberg.Properties{"format-version": "2", PropKeys: "_tenant,_facility,id"})); err != nil {
		t.Fatal(err)
	}
	e := openEngine(t, cat)
	var snaps []int64
	var states [][]string
	var times []time.Time
	for _, st := range []struct {
		rows []testlake.TenantRow
		dels []eqKey
	}{
		{[]testlake.TenantRow{{ID: 1, Tenant: "acme", Facility: "a1", Ref: 1}, {ID: 2, Tenant: "acme", Facility: "a1", Ref: 1}}, nil},
		{[]testlake.TenantRow{{ID: 1, Tenant: "acme", Facility: "a1", Ref: 2}, {ID: 3, Tenant: "acme", Facility: "a1", Ref: 1}},
			[]eqKey{{"acme", "a1", i64(1)}, {"acme", "a1", i64(2)}}},
		{[]testlake.TenantRow{{ID: 1, Tenant: "acme", Facility: "a1", Ref: 3}}, []eqKey{{"acme", "a1", i64(1)}}},
	} {
		time.Sleep(20 * time.Millisecond) // distinct snapshot timestamps
		rowDelta(t, cat, "patients", st.rows, 0, st.dels)
		tbl, err := cat.LoadTable(ctx, table.Identifier{testlake.Namespace, "patients"})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, tbl.CurrentSnapshot().SnapshotID)
		times = append(times, time.UnixMilli(tbl.CurrentSnapshot().TimestampMs))
		states = append(states, icebergRows(t, cat, "patients"))
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	const row = `SELECT coalesce(CAST(id AS VARCHAR), '<nil>') || '|' || _tenant || '|' || _facility || '|' || ref FROM patients `
	for i, snap := range snaps {
		got, _, err := runAs(t, e, admin, row+fmt.Sprintf("AT (VERSION => %d) ORDER BY 1", snap))
		if err != nil || !slices.Equal(got, states[i]) {
			t.Errorf("AT VERSION %d: %v, %v; want %v", snap, got, err, states[i])
		}
		at := times[i].UTC().Format("2006-01-02 15:04:05.000")
		got, _, err = runAs(t, e, admin, row+"AT (TIMESTAMP => '"+at+"') ORDER BY 1")
		if err != nil || !slices.Equal(got, states[i]) {
			t.Errorf("AT TIMESTAMP %s: %v, %v; want %v", at, got, err, states[i])
		}
	}
	got, _, err := runAs(t, e, admin, fmt.Sprintf(`SELECT op, id, before.ref, after.ref FROM table_changes('patients', %d, %d) ORDER BY id`, snaps[0], snaps[2]))
	if want := []string{"update|1|1|3", "delete|2|1|<nil>", "insert|3|<nil>|1"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("table_changes: %v, %v; want %v", got, err, want)
	}
	got, _, err = runAs(t, e, admin, fmt.Sprintf(`SELECT count(*) FROM table_changes('patients', 0, '%s')`, times[0].UTC().Format("2006-01-02 15:04:05.000")))
	if err != nil || !slices.Equal(got, []string{"2"}) {
		t.Errorf("table_changes from the empty table: %v, %v; want 2 inserts", got, err)
	}
	for _, q := range []string{row + fmt.Sprintf("AT (VERSION => %d)", snaps[0]), fmt.Sprintf(`SELECT * FROM table_changes('patients', %d, %d)`, snaps[0], snaps[1])} {
		if _, code, err := runAs(t, e, acme, q); code != CodeInsufficientPrivilege {
			t.Errorf("tenant user ran %q: %s %v, want refused", q, code, err)
		}
	}
	// History views stay out of main, which pgwire's catalog lists as the lake's tables.
	got, _, err = runAs(t, e, admin, `SELECT count(*) FILTER (WHERE schema_name = 'main'), count(*) FROM duckdb_views() WHERE view_name LIKE 'patients@%'`)
	if err != nil || len(got) != 1 || !strings.HasPrefix(got[0], "0|") || got[0] == "0|0" {
		t.Errorf("history views in main|all: %v, %v; want none in main", got, err)
	}
	if _, code, _ := runAs(t, e, acme, `SELECT * FROM medlake_history."patients@`+fmt.Sprint(snaps[0])+`"`); code != CodeInsufficientPrivilege {
		t.Errorf("tenant user read a history view directly: code %q", code)
	}
	if _, code, _ := runAs(t, e, admin, row+"AT (VERSION => 42)"); code != CodeUndefinedTable {
		t.Errorf("unknown snapshot: code %s, want %s", code, CodeUndefinedTable)
	}
}
