package query

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/query/audit"
	"github.com/medlake/medlake/query/cache"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/flightsql"
	"github.com/medlake/medlake/query/httpapi"
	"github.com/medlake/medlake/query/pgwire"
	"github.com/medlake/medlake/query/reports"
)

// Defaults for Config.
const (
	DefaultListen           = pgwire.DefaultListen
	DefaultCacheMaxBytes    = cache.DefaultMaxBytes
	DefaultRefreshInterval  = engine.DefaultRefreshInterval
	DefaultStatementTimeout = 15 * time.Minute
	DefaultMaxConcurrent    = 8
)

// Config is the query role's configuration.
type Config struct {
	// Listen is the pgwire address. Default 127.0.0.1:5433.
	Listen string `yaml:"listen"`
	// CacheDir holds the local Parquet cache. Required.
	CacheDir string `yaml:"cache_dir"`
	// CacheMaxBytes bounds the cache. Default 10 GiB.
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
	// RefreshInterval is how often table snapshots are polled (the fallback when
	// the hubs' commit notices do not arrive). Default 2s.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// RefreshParallel bounds the changed tables one refresh loads and plans at
	// once. Default 4.
	RefreshParallel int `yaml:"refresh_parallel"`
	// ManifestCacheBytes bounds the Iceberg manifest files kept in memory between
	// refreshes, so a commit's refresh reads only its new manifest. Default 64 MiB.
	ManifestCacheBytes int64 `yaml:"manifest_cache_bytes"`
	// Users are the pgwire logins (SCRAM-SHA-256; only the verifier of the
	// password is kept in memory). With none, any user is trusted on
	// loopback connections only.
	Users []pgwire.User `yaml:"users"`
	// TLSCertFile and TLSKeyFile (PEM) enable TLS on pgwire.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// RequireTLS refuses pgwire clients on other hosts that do not use TLS.
	RequireTLS bool `yaml:"require_tls"`
	// FlightListen is the Arrow Flight SQL address (TLS with the same
	// certificate as pgwire), e.g. 127.0.0.1:5434. Empty: Flight SQL is off.
	FlightListen string `yaml:"flight_listen"`
	// StatementTimeout cancels any statement running longer (SQLSTATE
	// 57014), whichever protocol sent it. Default 15m; 0 turns it off.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// MaxConcurrent bounds the statements running at once on this node;
	// others wait for a slot. Default 8.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxOpenCursors bounds the cursors and suspended portals one pgwire
	// connection keeps open; each holds a DuckDB connection and its query's
	// working memory. Default 8; negative: no bound.
	MaxOpenCursors int `yaml:"max_open_cursors"`
	// CursorIdleTimeout closes a pgwire cursor or suspended portal left
	// unread that long. Default 5m; negative: never.
	CursorIdleTimeout time.Duration `yaml:"cursor_idle_timeout"`
	// MemoryLimit bounds the memory of all running statements together
	// (DuckDB's memory_limit, e.g. "8GB"); a statement that needs more
	// fails with SQLSTATE 53200 and the others go on. Default: DuckDB's,
	// 80% of the machine's memory.
	MemoryLimit string `yaml:"memory_limit"`
	// TrustLoopback admits, on every protocol, a user name that neither
	// users nor the catalog knows, from a loopback address and with no
	// password, as an admin. Default: true when no users are configured
	// (single-machine setups and the demo); set false in production.
	TrustLoopback *bool `yaml:"trust_loopback"`
}

// trustLoopback resolves TrustLoopback's default.
func (c Config) trustLoopback() bool {
	if c.TrustLoopback != nil {
		return *c.TrustLoopback
	}
	return len(c.Users) == 0
}

// pgwire is the wire server's configuration. Configured users reach it
// through the Service's login store, with the catalog's.
func (c Config) pgwire() pgwire.Config {
	return pgwire.Config{
		Listen:      c.Listen,
		TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile, RequireTLS: c.RequireTLS,
		TrustLoopback: c.trustLoopback(),
		MaxCursors:    c.MaxOpenCursors, CursorIdleTimeout: c.CursorIdleTimeout,
	}
}

// Default returns a Config with every default filled in.
func Default() Config {
	return Config{Listen: DefaultListen, StatementTimeout: DefaultStatementTimeout, MaxConcurrent: DefaultMaxConcurrent, CacheMaxBytes: DefaultCacheMaxBytes, RefreshInterval: DefaultRefreshInterval}
}

// Validate reports configuration errors before anything starts.
func (c Config) Validate() error {
	var errs []error
	if c.CacheDir == "" {
		errs = append(errs, errors.New("query: cache_dir is required"))
	}
	if c.CacheMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("query: cache_max_bytes %d is negative", c.CacheMaxBytes))
	}
	if c.StatementTimeout < 0 {
		errs = append(errs, fmt.Errorf("query: statement_timeout %s is negative", c.StatementTimeout))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("query: max_concurrent %d is negative", c.MaxConcurrent))
	}
	if c.RefreshInterval < 0 {
		errs = append(errs, fmt.Errorf("query: refresh_interval %s is negative", c.RefreshInterval))
	}
	if c.RefreshParallel < 0 {
		errs = append(errs, fmt.Errorf("query: refresh_parallel %d is negative", c.RefreshParallel))
	}
	if c.ManifestCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("query: manifest_cache_bytes %d is negative", c.ManifestCacheBytes))
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("query: listen %q: %w", c.Listen, err))
		}
	}
	pg := c.pgwire()
	pg.Users = c.Users
	if err := pg.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("query: %w", err))
	}
	if c.FlightListen != "" {
		if _, _, err := net.SplitHostPort(c.FlightListen); err != nil {
			errs = append(errs, fmt.Errorf("query: flight_listen %q: %w", c.FlightListen, err))
		}
	}
	return errors.Join(errs...)
}

// Service is the query role: the engine refreshing table views, and in
// front of it the pgwire server, the Flight SQL server, the HTTP query API
// and the report scheduler.
type Service struct {
	cfg     Config
	logger  *slog.Logger
	eng     *engine.Engine
	srv     *pgwire.Server
	flight  *flightsql.Server  // nil when turned off
	api     *httpapi.Handler   // mounted by the caller's HTTP server
	reports *reports.Scheduler // nil without WithReports
	notices *noticeListener    // nil without WithCommitNotices

	queries  *prometheus.CounterVec
	duration prometheus.Histogram
	// visibleLag and freshness are observed per snapshot a refresh makes visible.
	visibleLag *prometheus.HistogramVec // by table
	freshness  *prometheus.HistogramVec // by table
	// refreshes times view refreshes, by trigger (start, poll, notice, call).
	refreshes *prometheus.HistogramVec
	// refreshTables counts the tables refreshes loaded and rebuilt, by what (loaded,
	// replaced, failed).
	refreshTables *prometheus.CounterVec
	noticesIn     *prometheus.CounterVec // commit notices received, by outcome
}

// Option configures optional Service behaviour.
type Option func(*options)

type options struct {
	auditor audit.Log
	users   UserDirectory
	reports reports.Store
	objects reports.Objects
	notices *NoticeConfig
	locator engine.TableLocator
}

// WithTableLocator has the engine find changed tables with one catalog read per
// refresh (the catalog's TableLocations) and load only those.
func WithTableLocator(l engine.TableLocator) Option { return func(o *options) { o.locator = l } }

// WithLogins adds the catalog's users to the configured ones, on every
// protocol.
func WithLogins(users UserDirectory) Option { return func(o *options) { o.users = users } }

// WithReports runs scheduled reports from store, writing results to objects.
func WithReports(store reports.Store, objects reports.Objects) Option {
	return func(o *options) { o.reports, o.objects = store, objects }
}

// WithAuditor records every statement clients send in a's audit log (the catalog's),
// before it runs; a statement the log cannot record is not run.
func WithAuditor(a audit.Log) Option { return func(o *options) { o.auditor = a } }

// latencyBuckets are the delivery latency buckets (seconds), as the hub's.
var latencyBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600}

// New opens the engine (building views for every table in namespace) and
// the pgwire server, and registers the metrics with reg (nil: not
// registered).
func New(ctx context.Context, cfg Config, cat icecatalog.Catalog, namespace string, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	base := logger // the parts name themselves
	logger = logger.With("component", "query")
	s := &Service{
		cfg:    cfg,
		logger: logger,
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "medlake", Subsystem: "query", Name: "queries_total",
			Help: "Statements run by SQL clients, by outcome (ok, error, refused).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "medlake", Subsystem: "query", Name: "query_duration_seconds",
			Help:    "Execution time of statements run by SQL clients, including sending rows.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		visibleLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "medlake", Subsystem: "query", Name: "snapshot_visible_lag_seconds",
			Help:    "Per snapshot made visible by a view refresh: from its commit (hub clock) to the refreshed view (this host's clock).",
			Buckets: latencyBuckets,
		}, []string{"table"}),
		freshness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "medlake", Subsystem: "query", Name: "freshness_queryable_seconds",
			Help:    "Per snapshot made visible by a view refresh: from the oldest source file mtime among its batches (facility clock) to the refreshed view: the snapshot's stalest row.",
			Buckets: latencyBuckets,
		}, []string{"table"}),
	}
	s.refreshes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "medlake", Subsystem: "query", Name: "refresh_duration_seconds",
		Help:    "Time of a view refresh (finding changed tables, loading and planning them, fetching new data files, replacing views), by trigger: start, poll, notice (a hub's commit notice) or call.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60},
	}, []string{"trigger"})
	s.refreshTables = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medlake", Subsystem: "query", Name: "refresh_tables_total",
		Help: "Tables view refreshes handled: loaded (metadata read because it changed), replaced (view rebuilt on a new snapshot or schema), failed.",
	}, []string{"what"})
	s.noticesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medlake", Subsystem: "query", Name: "commit_notices_total",
		Help: "Commit notices received from hubs, by outcome (ok, malformed).",
	}, []string{"outcome"})
	for _, o := range []string{"ok", "error", "refused"} {
		s.queries.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.queries, s.duration, s.visibleLag, s.freshness, s.refreshes, s.refreshTables, s.noticesIn} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering query metrics: %w", err)
			}
		}
	}
	eng, err := engine.New(ctx, engine.Config{
		CacheDir: cfg.CacheDir, CacheMaxBytes: cfg.CacheMaxBytes, RefreshInterval: cfg.RefreshInterval,
		RefreshParallel: cfg.RefreshParallel, ManifestCacheBytes: cfg.ManifestCacheBytes,
		StatementTimeout: cfg.StatementTimeout, MaxConcurrent: cfg.MaxConcurrent, MemoryLimit: cfg.MemoryLimit,
		Setup: pgwire.CatalogSetup(), MetadataSchemas: []string{pgwire.CatalogSchema},
	}, cat, namespace, base, s.engineOptions(o)...)
	if err != nil {
		return nil, err
	}
	if o.notices != nil {
		if s.notices, err = newNoticeListener(*o.notices, eng, logger, s.noticesIn); err != nil {
			eng.Close()
			return nil, err
		}
	}
	logins, err := serviceLogins(cfg.Users, o.users)
	if err != nil {
		eng.Close()
		return nil, err
	}
	trust := cfg.trustLoopback()
	if logins == nil && !trust {
		eng.Close()
		return nil, errors.New("query: no users are configured, no catalog logins are given and loopback is not trusted: nobody could log in")
	}
	pgOpts := []pgwire.Option{pgwire.WithQueryObserver(s.observe)}
	if o.auditor != nil {
		pgOpts = append(pgOpts, pgwire.WithAuditor(o.auditor))
	}
	if logins != nil {
		pgOpts = append(pgOpts, pgwire.WithAuthStore(logins))
	}
	srv, err := pgwire.New(cfg.pgwire(), eng, base, pgOpts...)
	if err != nil {
		eng.Close()
		return nil, err
	}
	s.eng, s.srv = eng, srv
	if s.api, err = httpapi.New(httpapi.Config{TrustLoopback: trust}, logins, eng, o.auditor, base, s.observe); err != nil {
		eng.Close()
		return nil, err
	}
	if cfg.FlightListen != "" {
		fcfg := flightsql.Config{Listen: cfg.FlightListen, TrustLoopback: trust}
		if cfg.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
			if err != nil {
				eng.Close()
				return nil, fmt.Errorf("query: loading TLS certificate %s: %w", cfg.TLSCertFile, err)
			}
			fcfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		if s.flight, err = flightsql.New(fcfg, logins, eng, o.auditor, base, s.observe); err != nil {
			eng.Close()
			return nil, err
		}
	}
	if o.reports != nil {
		if logins == nil {
			eng.Close()
			return nil, errors.New("query: reports need logins: a report runs as its owner")
		}
		if s.reports, err = reports.New(reports.Config{}, o.reports, logins, eng, o.objects, base, reg); err != nil {
			eng.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *Service) engineOptions(o options) []engine.Option {
	opts := []engine.Option{engine.WithVisibilityObserver(s.observeVisible), engine.WithRefreshObserver(s.observeRefresh)}
	if o.locator != nil {
		opts = append(opts, engine.WithTableLocator(o.locator))
	}
	return opts
}

func (s *Service) observeRefresh(st engine.RefreshStats) {
	s.refreshes.WithLabelValues(st.Trigger).Observe(st.Duration.Seconds())
	s.refreshTables.WithLabelValues("loaded").Add(float64(st.Loaded))
	s.refreshTables.WithLabelValues("replaced").Add(float64(st.Replaced))
	s.refreshTables.WithLabelValues("failed").Add(float64(st.Failed))
}

func (s *Service) observe(outcome string, elapsed time.Duration) {
	s.queries.WithLabelValues(outcome).Inc()
	if outcome == "ok" {
		s.duration.Observe(elapsed.Seconds())
	}
}

func (s *Service) observeVisible(v engine.Visible) {
	s.visibleLag.WithLabelValues(v.Table).Observe(max(v.VisibleAt.Sub(v.CommittedAt), 0).Seconds())
	if !v.SourceMtimeMin.IsZero() {
		s.freshness.WithLabelValues(v.Table).Observe(max(v.VisibleAt.Sub(v.SourceMtimeMin), 0).Seconds())
	}
}

// Engine returns the engine (for in-process SQL such as `medlake sql`).
func (s *Service) Engine() *engine.Engine { return s.eng }

// Addr returns the pgwire listen address once Run listens.
func (s *Service) Addr(ctx context.Context) (net.Addr, error) { return s.srv.Addr(ctx) }

// HTTPHandler serves the HTTP query API (httpapi.Path) on the caller's
// HTTP server.
func (s *Service) HTTPHandler() http.Handler { return s.api }

// Run serves until ctx is done or a part fails, then stops every part,
// waits for them and closes the engine.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	parts := []func(context.Context) error{s.eng.Run, s.srv.Run}
	if s.flight != nil {
		parts = append(parts, s.flight.Run)
	}
	if s.reports != nil {
		parts = append(parts, s.reports.Run)
	}
	if s.notices != nil {
		parts = append(parts, s.notices.Run)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(parts))
	for i, run := range parts {
		wg.Go(func() {
			errs[i] = run(ctx)
			cancel()
		})
	}
	wg.Wait()
	return errors.Join(errors.Join(errs...), s.eng.Close())
}

// Close releases the engine when Run was never called. Safe to call twice
// and after Run.
func (s *Service) Close() error { return s.eng.Close() }
