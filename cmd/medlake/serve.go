package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/hub"
	"github.com/medlake/medlake/hub/broker"
	"github.com/medlake/medlake/hub/maintain"
	"github.com/medlake/medlake/query"
	"github.com/medlake/medlake/query/httpapi"
	"github.com/medlake/medlake/query/reports"
)

const serveUsage = `Usage: medlake serve [flags]

Runs the central side. --roles picks what this process does, so one binary runs as a
single-node monolith (the default, all roles) or as separately scaled services:

  ingest  receive agents' batches over MQTT, commit them to Iceberg tables, acknowledge
          (runs the embedded MQTT broker when --broker-url is empty)
  query   serve SQL over the lake on the PostgreSQL wire protocol
  maintain
          keep tables healthy while ingest commits: every maintenance.interval (10m)
          compact small files per partition (folding row-level deletes, rows sorted
          by facility and time), expire snapshots past the retention (newest
          maintenance.retain_last, 100, or younger than maintenance.max_snapshot_age,
          1h) and remove files nothing references older than
          maintenance.orphan_min_age (24h). Every maintain process may run; a lease in
          the catalog makes one do the work at a time. maintenance.enabled=false
          turns the schedule off (medlake tables compact|expire|clean still work).
  all     all three

Feed definitions come from the catalog (medlake feeds apply). An ingest process checks
the catalog every few seconds (ingest.feeds_poll_interval), accepts batches of every
version of every feed, and pushes the newest version of each feed to every agent on its
config topic; agents switch to a new version for their next file. --feeds names an
optional directory of definitions applied to the catalog at start (seed input, as
medlake feeds apply -f DIR would); the catalog's newer versions win over its files.

Every process serves /healthz, /readyz, /metrics and the status API /api/v1/status
(what medlake status prints) on --http-listen.
`

func runServe(ctx context.Context, args []string) error {
	var rolesFlag string
	cfg, _, err := loadConfig("serve", serveUsage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&rolesFlag, "roles", RoleAll, "comma-separated roles: ingest, query, maintain, all")
		bindServeFlags(fs, cfg)
	})
	if err != nil {
		return err
	}
	roles, err := parseRoles(rolesFlag)
	if err != nil {
		return err
	}
	logger := newLogger(cfg)
	n, err := startNode(ctx, cfg, roles, logger)
	if err != nil {
		return err
	}
	defer n.stop()
	return n.wait(ctx)
}

// bindServeFlags registers the flags serve and demo share.
func bindServeFlags(fs *flag.FlagSet, cfg *Config) {
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "address for /healthz, /readyz and /metrics")
	fs.StringVar(&cfg.Catalog.URI, "catalog", cfg.Catalog.URI, `metadata database: "" (SQLite under data-dir), sqlite:///path.db or postgres://...`)
	fs.StringVar(&cfg.Catalog.Warehouse, "warehouse", cfg.Catalog.Warehouse, "table storage: a directory (default data-dir/warehouse) or s3://bucket/prefix")
	fs.StringVar(&cfg.Catalog.S3Endpoint, "s3-endpoint", cfg.Catalog.S3Endpoint, "S3/MinIO endpoint URL for an s3:// warehouse")
	fs.StringVar(&cfg.Ingest.Broker, "broker-url", cfg.Ingest.Broker, "external MQTT broker (tcp://host:port); empty runs the embedded broker")
	fs.StringVar(&cfg.Broker.Listen, "broker-listen", cfg.Broker.Listen, "embedded broker address")
	fs.StringVar(&cfg.Ingest.FeedsDir, "feeds", cfg.Ingest.FeedsDir, "optional directory of feed definitions (*.yaml) applied to the catalog at start")
	fs.StringVar(&cfg.Query.Listen, "pg-listen", cfg.Query.Listen, "PostgreSQL wire protocol address")
	fs.StringVar(&cfg.Query.FlightListen, "flight-listen", cfg.Query.FlightListen, "Arrow Flight SQL address (empty: off)")
	fs.BoolVar(&cfg.Maintenance.Enabled, "maintenance", cfg.Maintenance.Enabled, "run scheduled table maintenance (maintain role)")
	fs.DurationVar(&cfg.Maintenance.Interval, "maintenance-interval", cfg.Maintenance.Interval, "time between table maintenance passes")
}

// node is one running medlake process: its modules and its HTTP endpoints.
type node struct {
	logger   *slog.Logger
	registry *prometheus.Registry
	group    *group
	http     *http.Server
	httpLn   net.Listener
	httpEnd  chan struct{}
	cat      *catalog.Catalog
	started  atomic.Bool                  // every module has been started
	queryAPI atomic.Pointer[http.Handler] // the query role's HTTP API, once it runs

	ingest      atomic.Pointer[hub.Ingester] // set once the ingest module starts; read by the status API
	windows     *statusWindows
	windowsStop context.CancelFunc
	windowsDone chan struct{}
}

// startNode opens and starts every module the roles need, in dependency order.
func startNode(ctx context.Context, cfg *Config, roles []string, logger *slog.Logger) (n *node, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n = &node{logger: logger, registry: reg, group: newGroup(logger)}
	defer func() {
		if err != nil {
			n.stop()
		}
	}()
	// HTTP first, so /healthz answers and /readyz says "starting" while modules start.
	if err := n.serveHTTP(cfg.HTTPListen, reg); err != nil {
		return n, err
	}
	// Modules run under values: once the catalog is open, it carries the object
	// store's client, so that every module's table IO shares one pool of connections.
	values := context.Background()
	for _, m := range startOrder(roles) {
		logger.Info("module starting", "module", m)
		switch m {
		case modCatalog:
			if n.cat, err = catalog.Open(ctx, cfg.Catalog); err != nil {
				return n, fmt.Errorf("opening catalog: %w", err)
			}
			values = n.cat.WithObjectStore(values)
		case modBroker:
			if cfg.Ingest.Broker != "" {
				continue
			}
			b, err := broker.New(cfg.Broker, logger)
			if err != nil {
				return n, fmt.Errorf("embedded broker: %w", err)
			}
			n.group.start(values, m, b)
			select {
			case <-b.Ready():
			case <-ctx.Done():
				return n, ctx.Err()
			}
			cfg.Ingest.Broker = b.URL()
		case modIngest:
			in, err := hub.New(cfg.Ingest, n.cat, logger, reg)
			if err != nil {
				return n, fmt.Errorf("ingest: %w", err)
			}
			n.ingest.Store(in)
			n.group.start(values, m, in)
		case modQuery:
			opts := []query.Option{query.WithAuditor(n.cat), query.WithLogins(n.cat), query.WithTableLocator(n.cat),
				query.WithReports(n.cat, reports.Warehouse{Root: n.cat.Warehouse(), Props: n.cat.Properties()})}
			if cfg.Ingest.Broker != "" {
				// The hubs' broker: they publish a notice per commit, which the
				// query role refreshes on at once instead of at its next poll.
				opts = append(opts, query.WithCommitNotices(query.NoticeConfig{
					Broker: cfg.Ingest.Broker, Username: cfg.Ingest.Username, Password: cfg.Ingest.Password}))
			}
			q, err := query.New(n.cat.WithObjectStore(ctx), cfg.Query, n.cat.Iceberg(), strings.Join(n.cat.Namespace(), "."), logger, reg, opts...)
			if err != nil {
				return n, fmt.Errorf("query: %w", err)
			}
			api := q.HTTPHandler()
			n.queryAPI.Store(&api)
			n.group.start(values, m, q)
		case modMaintain:
			r, err := maintain.New(cfg.Maintenance, n.cat, maintenanceNode(), logger, reg)
			if err != nil {
				return n, fmt.Errorf("maintain: %w", err)
			}
			n.group.start(values, m, r)
		}
	}
	n.started.Store(true)
	return n, nil
}

func (n *node) serveHTTP(addr string, reg *prometheus.Registry) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc(httpapi.Path, func(w http.ResponseWriter, r *http.Request) {
		h := n.queryAPI.Load()
		if h == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "this node does not run the query role"})
			return
		}
		(*h).ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	})
	n.windows = newStatusWindows(reg)
	wctx, wcancel := context.WithCancel(context.Background())
	n.windowsStop, n.windowsDone = wcancel, make(chan struct{})
	go func() {
		defer close(n.windowsDone)
		n.windows.run(wctx)
	}()
	mux.HandleFunc("GET "+statusPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.windows.report(time.Now(), n.ingest.Load()))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !n.started.Load() || !n.group.ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.httpLn = ln
	n.httpEnd = make(chan struct{})
	go func() {
		defer close(n.httpEnd)
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("http server failed", "err", err)
		}
	}()
	n.logger.Info("http listening", "addr", ln.Addr().String())
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// wait blocks until ctx ends or a module fails.
func (n *node) wait(ctx context.Context) error {
	err := n.group.wait(ctx)
	if err == nil {
		n.logger.Info("shutting down")
	}
	return err
}

// stop stops HTTP first (so /readyz stops answering), then modules in reverse order,
// then closes the catalog they shared. Safe to call twice.
func (n *node) stop() {
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.http.Shutdown(ctx)
		cancel()
		<-n.httpEnd
		n.http = nil
		n.windowsStop()
		<-n.windowsDone
	}
	n.group.stop()
	if n.cat != nil {
		if err := n.cat.Close(); err != nil {
			n.logger.Warn("closing catalog", "err", err)
		}
		n.cat = nil
	}
}

// maintenanceNode names this process in the maintenance lease: host and process id,
// so two processes on one host are two holders.
func maintenanceNode() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "local"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
