package hub

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/catalog"
)

// UpdateRollups is a placeholder.
func UpdateRollups(ctx context.Context, cat *catalog.Catalog, table string, snapshotID int64, at arrow.Table) error {
	return nil
}
