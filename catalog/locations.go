package catalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/iceberg-go/table"
)

// TableLocations returns every table of namespace with the location of its current
// metadata file, read in one query of the Iceberg SQL catalog's iceberg_tables rows.
// A table's location changes with every commit to it (each commit writes a new
// metadata file), so comparing locations tells which tables changed without loading
// any. namespace must be one level without dots, as medlake's is; others are refused
// (the SQL catalog stores those under an encoded key).
func (c *Catalog) TableLocations(ctx context.Context, namespace table.Identifier) (map[string]string, error) {
	if len(namespace) != 1 || strings.ContainsAny(namespace[0], ".[]\"") {
		return nil, fmt.Errorf("listing table locations: namespace %q is not one plain level", strings.Join(namespace, "."))
	}
	q := `SELECT table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ` + c.placeholder(1) +
		` AND table_namespace = ` + c.placeholder(2) + ` AND (iceberg_type IS NULL OR iceberg_type = ` + c.placeholder(3) + `)`
	rows, err := c.db.QueryContext(ctx, q, catalogName, namespace[0], "TABLE")
	if err != nil {
		return nil, fmt.Errorf("listing table locations of namespace %s: %w", namespace[0], err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name string
		var loc *string
		if err := rows.Scan(&name, &loc); err != nil {
			return nil, fmt.Errorf("listing table locations of namespace %s: %w", namespace[0], err)
		}
		if loc != nil {
			out[name] = *loc
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing table locations of namespace %s: %w", namespace[0], err)
	}
	return out, nil
}
