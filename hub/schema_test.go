package hub

import (
	"testing"

	"github.com/apache/iceberg-go"

	"github.com/medlake/medlake/protocol/feed"
)

// TestIcebergSchemaDecimal checks that a decimal column becomes an Iceberg decimal of
// the same precision and scale, and a zoned timestamp stays a UTC timestamptz.
func TestIcebergSchemaDecimal(t *testing.T) {
	def, err := feed.Parse([]byte(`
name: bills_csv
version: 1
table: bills
match: {glob: "*.csv"}
format: {type: csv}
partition_time: billed_at
columns:
  - {name: amount, type: decimal, precision: 12, scale: 2}
  - {name: big, type: decimal, precision: 38, scale: 0}
  - {name: billed_at, type: timestamp, timezone: America/Chicago}
`))
	if err != nil {
		t.Fatal(err)
	}
	sc, _, _, err := icebergSchema(def)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]iceberg.Type{
		"amount":    iceberg.DecimalTypeOf(12, 2),
		"big":       iceberg.DecimalTypeOf(38, 0),
		"billed_at": iceberg.PrimitiveTypes.TimestampTz,
	} {
		f, ok := sc.FindFieldByName(name)
		if !ok || !f.Type.Equals(want) {
			t.Errorf("column %s: iceberg type %v, want %v", name, f.Type, want)
		}
	}
}
