package hub

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/catalog/rollup"
)

// UpdateRollups appends to table's rollup (when it has one) the partial aggregates of
// at, the rows committed as snapshot snapID. The data commit is durable whatever
// happens here: a rollup that misses a snapshot no longer matches its table, and the
// query engine stops using it (queries read the table itself) until it is rebuilt.
func UpdateRollups(ctx context.Context, cat *catalog.Catalog, table string, snapID int64, at arrow.Table) error {
	def, ok := rollup.Lookup(table)
	if !ok {
		return nil
	}
	rec, err := def.Aggregate(at, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("rolling up snapshot %d of %s: %w", snapID, table, err)
	}
	defer rec.Release()
	return rollup.Append(ctx, cat.Iceberg(), cat.TableIdent(def.Name()), snapID, rec)
}
