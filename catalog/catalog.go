package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	iceio "github.com/apache/iceberg-go/io"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // registers the s3:// warehouse scheme
	"github.com/apache/iceberg-go/table"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver
)

// Defaults for Config.
const (
	DefaultNamespace = "medlake"
	// catalogName is the catalog_name key of every row the Iceberg SQL catalog writes;
	// changing it hides existing tables, so it is fixed.
	catalogName = "medlake"
	// sqliteBusyTimeoutMS bounds how long a SQLite writer waits for the lock held by
	// another connection before failing with SQLITE_BUSY.
	sqliteBusyTimeoutMS = 10000
)

// Config says where the metadata database and the warehouse live.
type Config struct {
	// URI of the metadata database: "" or "sqlite://" (file <DataDir>/catalog.db),
	// "sqlite:///abs/path.db", or "postgres://..." / "postgresql://..." (pgx).
	URI string `yaml:"uri"`
	// Warehouse is where table data and metadata files go: "/abs/dir", "file:///dir",
	// or "s3://bucket/prefix". Default <DataDir>/warehouse.
	Warehouse   string `yaml:"warehouse"`
	S3Endpoint  string `yaml:"s3_endpoint"`
	S3Region    string `yaml:"s3_region"`
	S3AccessKey string `yaml:"s3_access_key"`
	S3SecretKey string `yaml:"s3_secret_key"`
	// Namespace holding medlake's tables. Default "medlake".
	Namespace string `yaml:"namespace"`
	// DataDir holds the default SQLite file and local warehouse when URI/Warehouse
	// are empty. Required only then.
	DataDir string `yaml:"data_dir"`
}

// Dialect is the SQL flavour of the metadata database.
type Dialect int

const (
	SQLite Dialect = iota + 1
	Postgres
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return fmt.Sprintf("dialect(%d)", int(d))
}

// Catalog is safe for concurrent use.
type Catalog struct {
	db        *sql.DB
	dialect   Dialect
	ice       *sqlcat.Catalog
	namespace table.Identifier
	warehouse string
	props     iceberg.Properties
	store     *objectStore // nil for a local warehouse
}

// Open connects to the metadata database, creates the Iceberg catalog and ledger tables
// if missing, and ensures the namespace exists. Close releases it.
func Open(ctx context.Context, cfg Config) (*Catalog, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	driver, dsn, dialect, err := databaseSource(cfg)
	if err != nil {
		return nil, err
	}
	warehouse, err := warehouseLocation(cfg)
	if err != nil {
		return nil, err
	}

	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s metadata database: %w", dialect, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to %s metadata database %s: %w", dialect, redact(cfg.URI), err)
	}

	props := iceberg.Properties{"warehouse": warehouse}
	if strings.HasPrefix(warehouse, "s3://") || strings.HasPrefix(warehouse, "s3a://") {
		setIf(props, iceio.S3EndpointURL, cfg.S3Endpoint)
		setIf(props, iceio.S3Region, cfg.S3Region)
		setIf(props, iceio.S3AccessKeyID, cfg.S3AccessKey)
		setIf(props, iceio.S3SecretAccessKey, cfg.S3SecretKey)
	}

	var store *objectStore
	if strings.HasPrefix(warehouse, "s3://") || strings.HasPrefix(warehouse, "s3a://") {
		if store, err = newObjectStore(ctx, props); err != nil {
			db.Close()
			return nil, err
		}
	}

	sqlDialect := sqlcat.SQLite
	if dialect == Postgres {
		sqlDialect = sqlcat.Postgres
	}
	ice, err := sqlcat.NewCatalog(catalogName, db, sqlDialect, props)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("creating iceberg sql catalog on %s: %w", dialect, err)
	}

	c := &Catalog{
		db:        db,
		dialect:   dialect,
		ice:       ice,
		namespace: table.Identifier{cfg.Namespace},
		warehouse: warehouse,
		props:     props,
		store:     store,
	}
	if err := c.migrate(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.ensureNamespace(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Catalog) ensureNamespace(ctx context.Context) error {
	err := c.ice.CreateNamespace(ctx, c.namespace, nil)
	if err == nil || errors.Is(err, icecatalog.ErrNamespaceAlreadyExists) {
		return nil
	}
	// Another hub may have created it between our check and insert.
	if ok, cerr := c.ice.CheckNamespaceExists(ctx, c.namespace); cerr == nil && ok {
		return nil
	}
	return fmt.Errorf("creating namespace %s: %w", strings.Join(c.namespace, "."), err)
}

// Iceberg returns the Iceberg SQL catalog.
func (c *Catalog) Iceberg() icecatalog.Catalog { return c.ice }

// TableIdent returns the identifier of table in medlake's namespace.
func (c *Catalog) TableIdent(name string) table.Identifier {
	return append(table.Identifier{}, append(c.namespace, name)...)
}

// Namespace returns medlake's Iceberg namespace.
func (c *Catalog) Namespace() table.Identifier { return append(table.Identifier{}, c.namespace...) }

// Warehouse returns the warehouse location tables are created under.
func (c *Catalog) Warehouse() string { return c.warehouse }

// Properties returns a copy of the IO properties (warehouse, s3.*) readers of table
// files need.
func (c *Catalog) Properties() iceberg.Properties {
	p := make(iceberg.Properties, len(c.props))
	for k, v := range c.props {
		p[k] = v
	}
	return p
}

// DB returns the metadata database handle for the ledger and later metadata.
func (c *Catalog) DB() *sql.DB { return c.db }

// Dialect returns the SQL flavour of DB().
func (c *Catalog) Dialect() Dialect { return c.dialect }

// Close releases the database handle and the object store's idle connections. Safe to
// call twice.
func (c *Catalog) Close() error {
	if c.store != nil {
		c.store.client.CloseIdleConnections()
	}
	err := c.ice.Close()
	if cerr := c.db.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

func setIf(p iceberg.Properties, k, v string) {
	if v != "" {
		p[k] = v
	}
}

func databaseSource(cfg Config) (driver, dsn string, d Dialect, err error) {
	uri := cfg.URI
	switch {
	case uri == "" || uri == "sqlite://" || uri == "sqlite:":
		if cfg.DataDir == "" {
			return "", "", 0, errors.New("catalog uri is empty and no data_dir is set for the default sqlite file")
		}
		return sqliteSource(filepath.Join(cfg.DataDir, "catalog.db"))
	case strings.HasPrefix(uri, "sqlite://"):
		path := strings.TrimPrefix(uri, "sqlite://")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			return "", "", 0, fmt.Errorf("catalog uri %q: sqlite options are fixed by medlake, remove %q", uri, path[i:])
		}
		if path == "" || !filepath.IsAbs(path) {
			return "", "", 0, fmt.Errorf("catalog uri %q: want sqlite:///absolute/path.db", uri)
		}
		return sqliteSource(path)
	case strings.HasPrefix(uri, "postgres://"), strings.HasPrefix(uri, "postgresql://"):
		return "pgx", uri, Postgres, nil
	}
	return "", "", 0, fmt.Errorf("catalog uri %q: unsupported scheme (want sqlite:// or postgres://)", redact(uri))
}

func sqliteSource(path string) (string, string, Dialect, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", "", 0, fmt.Errorf("creating directory for sqlite catalog %s: %w", path, err)
	}
	// Pragmas in the DSN apply to every pooled connection. WAL lets readers proceed
	// during a commit; immediate transactions take the write lock up front so two
	// writers wait on busy_timeout instead of failing a lock upgrade.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeoutMS))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return "sqlite", "file:" + path + "?" + q.Encode(), SQLite, nil
}

func warehouseLocation(cfg Config) (string, error) {
	w := cfg.Warehouse
	switch {
	case w == "":
		if cfg.DataDir == "" {
			return "", errors.New("catalog warehouse is empty and no data_dir is set for the default local warehouse")
		}
		w = filepath.Join(cfg.DataDir, "warehouse")
	case strings.HasPrefix(w, "s3://"), strings.HasPrefix(w, "s3a://"):
		u, err := url.Parse(w)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("catalog warehouse %q: want s3://bucket/prefix", w)
		}
		return strings.TrimSuffix(w, "/"), nil
	case strings.HasPrefix(w, "file://"):
		w = strings.TrimPrefix(w, "file://")
	}
	if !filepath.IsAbs(w) {
		return "", fmt.Errorf("catalog warehouse %q: want an absolute directory, file:///dir or s3://bucket/prefix", cfg.Warehouse)
	}
	if err := os.MkdirAll(w, 0o700); err != nil {
		return "", fmt.Errorf("creating local warehouse %s: %w", w, err)
	}
	return filepath.Clean(w), nil
}

// redact hides a password in a database URI for error messages.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
