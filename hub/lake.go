package hub

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/compute"

	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol/feed"
)

// CreateTable loads def's lake table, creating it as a committer does when it is absent:
// the feed's table schema, with the hub's partitioning and sort order (icebergSchema),
// zstd Parquet. Bulk loaders (benchmarks) use it to write tables the hub would write.
func CreateTable(ctx context.Context, cat *catalog.Catalog, def *feed.Definition, log *slog.Logger) (*table.Table, error) {
	return loadOrCreateTable(ctx, cat, def, log)
}

// sortColumns are the columns an append table's files are sorted by, in order; the
// table's Iceberg sort order (icebergSchema) declares the same.
func sortColumns(def *feed.Definition) []string {
	return []string{feed.ColFacility, def.PartitionColumn()}
}

// SortForAppend returns at's rows in the order the hub writes them into an append
// table's files: by _facility, then the partition time (nulls first), so that a
// file's _facility bounds and its row groups' statistics narrow to few facilities
// and time ranges (see icebergSchema). The caller releases the result.
func SortForAppend(ctx context.Context, def *feed.Definition, at arrow.Table) (arrow.Table, error) {
	var keys []compute.SortKey
	for _, n := range sortColumns(def) {
		idx := at.Schema().FieldIndices(n)
		if len(idx) != 1 {
			return nil, fmt.Errorf("sorting rows of table %s: no column %s", def.Table, n)
		}
		keys = append(keys, compute.SortKey{ColumnIndex: idx[0], Order: compute.SortOrderAscending, NullPlacement: compute.SortNullsAtStart})
	}
	indices, err := compute.SortIndicesTable(ctx, at, keys)
	if err != nil {
		return nil, fmt.Errorf("sorting %d rows of table %s: %w", at.NumRows(), def.Table, err)
	}
	defer indices.Release()
	out, err := compute.Take(ctx, *compute.DefaultTakeOptions(), compute.NewDatum(at), compute.NewDatum(indices))
	if err != nil {
		return nil, fmt.Errorf("ordering %d rows of table %s: %w", at.NumRows(), def.Table, err)
	}
	defer out.Release()
	sorted := out.(*compute.TableDatum).Value
	sorted.Retain()
	return sorted, nil
}
