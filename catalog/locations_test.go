package catalog

import (
	"testing"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// TestTableLocations checks that the locations follow commits: each commit writes a new
// metadata file, which is what the query engine's change detection relies on.
func TestTableLocations(t *testing.T) {
	ctx := t.Context()
	c, err := Open(ctx, Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := iceberg.NewSchema(0, iceberg.NestedField{ID: 1, Name: "id", Type: iceberg.PrimitiveTypes.Int64})
	tbl, err := c.Iceberg().CreateTable(ctx, c.TableIdent("a"), sc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Iceberg().CreateTable(ctx, c.TableIdent("b"), sc); err != nil {
		t.Fatal(err)
	}
	locs, err := c.TableLocations(ctx, c.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != 2 || locs["a"] != tbl.MetadataLocation() || locs["b"] == "" {
		t.Fatalf("locations = %v, want a at %s and b", locs, tbl.MetadataLocation())
	}
	txn := tbl.NewTransaction()
	if err := txn.SetProperties(iceberg.Properties{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	moved, err := txn.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := c.TableLocations(ctx, c.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	if after["a"] != moved.MetadataLocation() || after["a"] == locs["a"] || after["b"] != locs["b"] {
		t.Errorf("after a commit to a: %v, before %v", after, locs)
	}
	for _, ns := range []table.Identifier{{"a", "b"}, {"x.y"}, {}} {
		if _, err := c.TableLocations(ctx, ns); err == nil {
			t.Errorf("namespace %q accepted", ns)
		}
	}
}
