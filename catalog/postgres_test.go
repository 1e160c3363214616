package catalog

import (
	"testing"

	"github.com/medlake/medlake/deploy/local/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// TestPostgres runs the catalog on PostgreSQL 15, the stand-in for CockroachDB.
func TestPostgres(t *testing.T) {
	dsn := stack.Postgres(t)
	cfg := Config{URI: dsn, DataDir: t.TempDir()}
	testCatalog(t, cfg)
	testReopen(t, cfg)
}

// TestPostgresMinIO puts the warehouse on MinIO through iceberg-go's S3 IO.
func TestPostgresMinIO(t *testing.T) {
	dsn := stack.Postgres(t)
	s3 := stack.MinIO(t)
	cfg := Config{URI: dsn, Warehouse: "s3://" + s3.Bucket + "/lake", S3Endpoint: s3.Endpoint,
		S3Region: s3.Region, S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey}
	testCatalog(t, cfg)
	testReopen(t, cfg)
}

// TestFeedsPostgres stores feed versions in PostgreSQL.
func TestFeedsPostgres(t *testing.T) {
	c, err := Open(t.Context(), Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testFeeds(t, c)
}

// TestUsersPostgres stores tenants, users and grants in PostgreSQL.
func TestUsersPostgres(t *testing.T) {
	c, err := Open(t.Context(), Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testUsers(t, c)
}

// TestAuditPostgres keeps the audit log in PostgreSQL.
func TestAuditPostgres(t *testing.T) {
	c, err := Open(t.Context(), Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testAudit(t, c)
}
