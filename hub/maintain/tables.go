package maintain

import (
	"context"
	"fmt"

	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
)

// CatalogTables loads tables of medlake's namespace from cat.
func CatalogTables(cat *catalog.Catalog) Tables { return catalogTables{cat} }

type catalogTables struct{ cat *catalog.Catalog }

func (c catalogTables) Load(ctx context.Context, name string) (*table.Table, error) {
	tbl, err := c.cat.Iceberg().LoadTable(ctx, c.cat.TableIdent(name))
	if err != nil {
		return nil, fmt.Errorf("loading table %s: %w", name, err)
	}
	return tbl, nil
}
