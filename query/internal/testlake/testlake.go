package testlake

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	"github.com/apache/iceberg-go/table"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/medlake/medlake/query/auth"
)

// Namespace is the namespace the helpers create tables in.
const Namespace = "medlake"

// Catalog opens a SQLite-backed Iceberg SQL catalog with a local warehouse
// under a temp dir and creates Namespace.
func Catalog(tb testing.TB) icecatalog.Catalog {
	tb.Helper()
	dir := tb.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "catalog.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		tb.Fatalf("opening sqlite: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	cat, err := sqlcat.NewCatalog("medlake", db, sqlcat.SQLite, iceberg.Properties{
		"warehouse": "file://" + filepath.Join(dir, "warehouse"),
	})
	if err != nil {
		tb.Fatalf("creating sql catalog: %v", err)
	}
	if err := cat.CreateNamespace(context.Background(), table.Identifier{Namespace}, nil); err != nil {
		tb.Fatalf("creating namespace: %v", err)
	}
	return cat
}

// LabSchema is the Iceberg schema of the lab_results test table.
var LabSchema = iceberg.NewSchema(0,
	iceberg.NestedField{ID: 1, Name: "lab_id", Type: iceberg.PrimitiveTypes.Int64, Required: false},
	iceberg.NestedField{ID: 2, Name: "facility", Type: iceberg.PrimitiveTypes.String},
	iceberg.NestedField{ID: 3, Name: "patient_id", Type: iceberg.PrimitiveTypes.String},
	iceberg.NestedField{ID: 4, Name: "result_value", Type: iceberg.PrimitiveTypes.Float64},
	iceberg.NestedField{ID: 5, Name: "abnormal", Type: iceberg.PrimitiveTypes.Bool},
	iceberg.NestedField{ID: 6, Name: "collected_at", Type: iceberg.PrimitiveTypes.TimestampTz},
)

// CreateLabTable creates an empty lab_results-shaped table named name.
func CreateLabTable(tb testing.TB, cat icecatalog.Catalog, name string) *table.Table {
	tb.Helper()
	tbl, err := cat.CreateTable(context.Background(), table.Identifier{Namespace, name}, LabSchema)
	if err != nil {
		tb.Fatalf("creating table %s: %v", name, err)
	}
	return tbl
}

// Facilities are the facility values rows cycle through.
var Facilities = []string{"fac0001", "fac0002", "fac0003"}

// LabRow returns the deterministic values of row i (0-based): lab_id i+1,
// facility Facilities[i%3], patient_id "p<i%100>", result_value i*0.5,
// abnormal i%7==0, collected_at 2026-01-01T00:00:00Z + i minutes. Every
// 50th row has a NULL result_value.
func LabRow(i int) (labID int64, facility, patient string, value float64, valueNull bool, abnormal bool, at time.Time) {
	return int64(i + 1), Facilities[i%len(Facilities)], fmt.Sprintf("p%d", i%100), float64(i) * 0.5, i%50 == 0,
		i%7 == 0, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
}

// AppendLabRows appends rows [from, to) (see LabRow) as one commit and
// returns the updated table.
func AppendLabRows(tb testing.TB, cat icecatalog.Catalog, name string, from, to int) *table.Table {
	tb.Helper()
	return AppendLabRowsProps(tb, cat, name, from, to, nil)
}

// AppendLabRowsProps is AppendLabRows writing props into the snapshot summary, as the
// hub writes its batch ids and source mtimes.
func AppendLabRowsProps(tb testing.TB, cat icecatalog.Catalog, name string, from, to int, props iceberg.Properties) *table.Table {
	tb.Helper()
	ctx := context.Background()
	tbl, err := cat.LoadTable(ctx, table.Identifier{Namespace, name})
	if err != nil {
		tb.Fatalf("loading table %s: %v", name, err)
	}
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "lab_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "facility", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "patient_id", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "result_value", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "abnormal", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "collected_at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i := from; i < to; i++ {
		id, fac, pat, val, valNull, abn, at := LabRow(i)
		b.Field(0).(*array.Int64Builder).Append(id)
		b.Field(1).(*array.StringBuilder).Append(fac)
		b.Field(2).(*array.StringBuilder).Append(pat)
		if valNull {
			b.Field(3).AppendNull()
		} else {
			b.Field(3).(*array.Float64Builder).Append(val)
		}
		b.Field(4).(*array.BooleanBuilder).Append(abn)
		b.Field(5).(*array.TimestampBuilder).Append(arrow.Timestamp(at.UnixMicro()))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer at.Release()
	tbl, err = tbl.AppendTable(ctx, at, int64(to-from), props)
	if err != nil {
		tb.Fatalf("appending rows %d..%d to %s: %v", from, to, name, err)
	}
	return tbl
}

// TenantSchema is the Iceberg schema of the tenant-shaped test tables: the lineage
// columns the hub writes (_tenant, _facility) and a few values.
var TenantSchema = iceberg.NewSchema(0,
	iceberg.NestedField{ID: 1, Name: "id", Type: iceberg.PrimitiveTypes.Int64},
	iceberg.NestedField{ID: 2, Name: "_tenant", Type: iceberg.PrimitiveTypes.String},
	iceberg.NestedField{ID: 3, Name: "_facility", Type: iceberg.PrimitiveTypes.String},
	iceberg.NestedField{ID: 4, Name: "patient_id", Type: iceberg.PrimitiveTypes.String},
	iceberg.NestedField{ID: 5, Name: "ref", Type: iceberg.PrimitiveTypes.Int64},
)

// TenantRow is one row of a TenantSchema table.
type TenantRow struct {
	ID       int64
	Tenant   string
	Facility string
	Patient  string
	Ref      int64
}

// CreateTenantTable creates a TenantSchema table and appends rows as one commit.
func CreateTenantTable(tb testing.TB, cat icecatalog.Catalog, name string, rows []TenantRow) *table.Table {
	tb.Helper()
	if _, err := cat.CreateTable(context.Background(), table.Identifier{Namespace, name}, TenantSchema); err != nil {
		tb.Fatalf("creating table %s: %v", name, err)
	}
	return AppendTenantRows(tb, cat, name, rows)
}

// AppendTenantRows appends rows to a TenantSchema table as one commit.
func AppendTenantRows(tb testing.TB, cat icecatalog.Catalog, name string, rows []TenantRow) *table.Table {
	tb.Helper()
	ctx := context.Background()
	tbl, err := cat.LoadTable(ctx, table.Identifier{Namespace, name})
	if err != nil {
		tb.Fatalf("loading table %s: %v", name, err)
	}
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "_tenant", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "_facility", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "patient_id", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "ref", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.Int64Builder).Append(r.ID)
		b.Field(1).(*array.StringBuilder).Append(r.Tenant)
		b.Field(2).(*array.StringBuilder).Append(r.Facility)
		b.Field(3).(*array.StringBuilder).Append(r.Patient)
		b.Field(4).(*array.Int64Builder).Append(r.Ref)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	at := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer at.Release()
	tbl, err = tbl.AppendTable(ctx, at, int64(len(rows)), nil)
	if err != nil {
		tb.Fatalf("appending %d rows to %s: %v", len(rows), name, err)
	}
	return tbl
}

// QueryLake returns a catalog holding lab_results (labRows rows, see LabRow)
// and visits (see CreateVisits): what the protocol tests query.
func QueryLake(tb testing.TB, labRows int) icecatalog.Catalog {
	tb.Helper()
	cat := Catalog(tb)
	CreateLabTable(tb, cat, "lab_results")
	AppendLabRows(tb, cat, "lab_results", 0, labRows)
	CreateVisits(tb, cat)
	return cat
}

// CreateVisits creates the tenant table "visits": ids 1 and 3 of tenant t1
// (facilities f1, f3), id 2 of tenant t2.
func CreateVisits(tb testing.TB, cat icecatalog.Catalog) *table.Table {
	tb.Helper()
	return CreateTenantTable(tb, cat, "visits", []TenantRow{
		{ID: 1, Tenant: "t1", Facility: "f1", Patient: "p1"},
		{ID: 2, Tenant: "t2", Facility: "f2", Patient: "p2"},
		{ID: 3, Tenant: "t1", Facility: "f3", Patient: "p3"},
	})
}

// Password is the password of every login in Logins.
const Password = "right"

// Logins returns the test logins, all with Password: ana (admin), off (a
// disabled admin) and tina (a user of tenant t1).
func Logins(tb testing.TB) *auth.StaticStore {
	tb.Helper()
	logins := map[string]auth.Login{}
	for _, p := range []auth.Principal{{User: "ana", Admin: true}, {User: "off", Admin: true}, {User: "tina", Tenant: "t1"}} {
		l, err := auth.PasswordLogin(p, Password)
		if err != nil {
			tb.Fatal(err)
		}
		l.Disabled = p.User == "off"
		logins[p.User] = l
	}
	return auth.NewStaticStore(logins)
}
