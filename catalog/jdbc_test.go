package catalog

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/iceberg-go"

	"github.com/medlake/medlake/deploy/local/stack"
)

// TestJDBCCatalogSchema checks that the table pointers medlake writes are
// where Iceberg's Java JDBC catalog (Trino, Spark) looks for them: its V1
// schema, medlake's catalog name, a TABLE row with a metadata location. The
// configurations in deploy/ rely on it.
func TestJDBCCatalogSchema(t *testing.T) {
	ctx := t.Context()
	c, err := Open(ctx, Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := iceberg.NewSchema(0, iceberg.NestedField{ID: 1, Name: "id", Type: iceberg.PrimitiveTypes.Int64, Required: true})
	if _, err := c.Iceberg().CreateTable(ctx, c.TableIdent("jdbc_probe"), sc); err != nil {
		t.Fatal(err)
	}

	// The columns JdbcCatalog's V1 schema reads and writes.
	for table, want := range map[string][]string{
		"iceberg_tables":               {"catalog_name", "table_namespace", "table_name", "metadata_location", "previous_metadata_location", "iceberg_type"},
		"iceberg_namespace_properties": {"catalog_name", "namespace", "property_key", "property_value"},
	} {
		rows, err := c.DB().QueryContext(ctx, `SELECT column_name FROM information_schema.columns WHERE table_name = $1`, table)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				t.Fatal(err)
			}
			got = append(got, name)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		for _, col := range want {
			if !slices.Contains(got, col) {
				t.Errorf("%s lacks column %s (has %v)", table, col, got)
			}
		}
	}

	var gotCatalog, namespace, kind, location string
	err = c.DB().QueryRowContext(ctx, `SELECT catalog_name, table_namespace, iceberg_type, metadata_location
		FROM iceberg_tables WHERE table_name = 'jdbc_probe'`).Scan(&gotCatalog, &namespace, &kind, &location)
	if err != nil {
		t.Fatal(err)
	}
	if gotCatalog != catalogName || namespace != DefaultNamespace || kind != "TABLE" || !strings.HasSuffix(location, ".metadata.json") {
		t.Errorf("iceberg_tables row = (%q, %q, %q, %q), want (%q, %q, TABLE, …metadata.json)",
			gotCatalog, namespace, kind, location, catalogName, DefaultNamespace)
	}

	// The shipped engine configurations name the catalog medlake writes.
	for file, key := range map[string]string{
		"../deploy/trino/catalog/medlake.properties": "iceberg.jdbc-catalog.catalog-name",
		"../deploy/spark/spark-defaults.conf":        "spark.sql.catalog." + catalogName,
	} {
		props := readProperties(t, file)
		switch v, ok := props[key]; {
		case !ok:
			t.Errorf("%s does not set %s", file, key)
		case strings.HasPrefix(key, "spark."):
			if v != "org.apache.iceberg.spark.SparkCatalog" || props[key+".type"] != "jdbc" {
				t.Errorf("%s: %s = %q, type %q; want a JDBC SparkCatalog", file, key, v, props[key+".type"])
			}
		case v != catalogName:
			t.Errorf("%s: %s = %q, want %q", file, key, v, catalogName)
		}
	}
}

// readProperties reads "key=value" (Trino) or "key value" (Spark) lines.
func readProperties(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	props := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			k, v, _ = strings.Cut(line, " ")
		}
		props[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return props
}
