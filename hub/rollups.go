package hub

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/catalog/rollup"
)

// UpdateRollups appends to base's rollup (when its table has one) the partial
// aggregates of at, the rows base's current snapshot committed, then rolls up appends
// the rollup does not cover yet (a rollup append that failed after its data commit,
// history from before the rollup), a few per call. The data commit is durable whatever
// happens here: while a rollup misses an append, the query engine does not use it.
func UpdateRollups(ctx context.Context, cat *catalog.Catalog, base *table.Table, at arrow.Table) error {
	name := base.Identifier()[len(base.Identifier())-1]
	def, ok := rollup.Lookup(name)
	if !ok || base.CurrentSnapshot() == nil {
		return nil
	}
	if _, err := def.Schema(at.Schema()); err != nil {
		return nil // a table of that name without the standard columns has no rollup
	}
	snapID := base.CurrentSnapshot().SnapshotID
	rec, err := def.Aggregate(at, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("rolling up snapshot %d of %s: %w", snapID, name, err)
	}
	defer rec.Release()
	ident := cat.TableIdent(def.Name())
	if err := rollup.Append(ctx, cat.Iceberg(), ident, base, snapID, rec); err != nil {
		return err
	}
	_, err = rollup.Repair(ctx, cat.Iceberg(), ident, def, base, memory.DefaultAllocator)
	if errors.Is(err, rollup.ErrNotRollable) {
		// An overwrite (a replay) or history expired before any checkpoint: the rollup
		// no longer describes the table and queries read the table itself; saying so on
		// every commit would only repeat it.
		return nil
	}
	if err != nil {
		return fmt.Errorf("repairing rollup %s: %w", def.Name(), err)
	}
	return nil
}
