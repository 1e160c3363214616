package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/query/cache"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/pgwire"
)

// Defaults for Config.
const (
	DefaultListen          = pgwire.DefaultListen
	DefaultCacheMaxBytes   = cache.DefaultMaxBytes
	DefaultRefreshInterval = engine.DefaultRefreshInterval
)

// Config is the query role's configuration.
type Config struct {
	// Listen is the pgwire address. Default 127.0.0.1:5433.
	Listen string `yaml:"listen"`
	// CacheDir holds the local Parquet cache. Required.
	CacheDir string `yaml:"cache_dir"`
	// CacheMaxBytes bounds the cache. Default 10 GiB.
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
	// RefreshInterval is how often table snapshots are polled. Default 2s.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// Users are the pgwire logins (cleartext password). With none, any user
	// is trusted on loopback connections only.
	Users []pgwire.User `yaml:"users"`
}

// Default returns a Config with every default filled in.
func Default() Config {
	return Config{Listen: DefaultListen, CacheMaxBytes: DefaultCacheMaxBytes, RefreshInterval: DefaultRefreshInterval}
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
	if c.RefreshInterval < 0 {
		errs = append(errs, fmt.Errorf("query: refresh_interval %s is negative", c.RefreshInterval))
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("query: listen %q: %w", c.Listen, err))
		}
	}
	for i, u := range c.Users {
		if u.Name == "" || u.Password == "" {
			errs = append(errs, fmt.Errorf("query: users[%d] needs a name and a password", i))
		}
	}
	return errors.Join(errs...)
}

// Service is the query role: the engine refreshing table views and the
// pgwire server in front of it.
type Service struct {
	cfg    Config
	logger *slog.Logger
	eng    *engine.Engine
	srv    *pgwire.Server

	queries  *prometheus.CounterVec
	duration prometheus.Histogram
	// visibleLag and freshness are observed per snapshot a refresh makes visible.
	visibleLag *prometheus.HistogramVec // by table
	freshness  *prometheus.HistogramVec // by table
}

// latencyBuckets are the delivery latency buckets (seconds), as the hub's.
var latencyBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600}

// New opens the engine (building views for every table in namespace) and
// the pgwire server, and registers the metrics with reg (nil: not
// registered).
func New(ctx context.Context, cfg Config, cat icecatalog.Catalog, namespace string, logger *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
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
	for _, o := range []string{"ok", "error", "refused"} {
		s.queries.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.queries, s.duration, s.visibleLag, s.freshness} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering query metrics: %w", err)
			}
		}
	}
	eng, err := engine.New(ctx, engine.Config{
		CacheDir: cfg.CacheDir, CacheMaxBytes: cfg.CacheMaxBytes, RefreshInterval: cfg.RefreshInterval,
	}, cat, namespace, base, engine.WithVisibilityObserver(s.observeVisible))
	if err != nil {
		return nil, err
	}
	srv, err := pgwire.New(pgwire.Config{Listen: cfg.Listen, Users: cfg.Users}, eng, base,
		pgwire.WithQueryObserver(s.observe))
	if err != nil {
		eng.Close()
		return nil, err
	}
	s.eng, s.srv = eng, srv
	return s, nil
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

// Run serves until ctx is done or a part fails, then stops both parts,
// waits for them and closes the engine.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() {
		errs[0] = s.eng.Run(ctx)
		cancel()
	})
	wg.Go(func() {
		errs[1] = s.srv.Run(ctx)
		cancel()
	})
	wg.Wait()
	return errors.Join(errors.Join(errs...), s.eng.Close())
}

// Close releases the engine when Run was never called. Safe to call twice
// and after Run.
func (s *Service) Close() error { return s.eng.Close() }
