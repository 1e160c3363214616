package hub

import (
	"context"
	"log/slog"

	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol/feed"
)

// CreateTable loads def's lake table, creating it as a committer does when it is absent:
// the feed's table schema, partitioned by identity(_facility) and day(partition time),
// zstd Parquet. Bulk loaders (benchmarks) use it to write tables the hub would write.
func CreateTable(ctx context.Context, cat *catalog.Catalog, def *feed.Definition, log *slog.Logger) (*table.Table, error) {
	return loadOrCreateTable(ctx, cat, def, log)
}
