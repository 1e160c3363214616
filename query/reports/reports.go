package reports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/results"
)

// Defaults for Config.
const (
	DefaultPollInterval = 15 * time.Second
	DefaultLease        = 15 * time.Minute
	DefaultMaxAttempts  = 3
	DefaultRetryBackoff = time.Minute
	DefaultCatchUp      = 24 * time.Hour
)

// Config tunes the scheduler.
type Config struct {
	// Node names this query node in run records. Default host name and pid.
	Node string
	// PollInterval is how often schedules are checked.
	PollInterval time.Duration
	// Lease is how long a run may take; a node that holds a run longer is
	// taken to be dead and another node runs the occurrence again.
	Lease time.Duration
	// MaxAttempts bounds the runs of one failing occurrence.
	MaxAttempts int
	// RetryBackoff is the wait before a failed occurrence is retried.
	RetryBackoff time.Duration
	// CatchUp is how far back a missed occurrence is still run (after all
	// query nodes were down). Only the latest missed occurrence runs.
	CatchUp time.Duration
	// Now is the clock; tests set it.
	Now func() time.Time
}

func (c *Config) fill() {
	if c.Node == "" {
		host, _ := os.Hostname()
		c.Node = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.CatchUp <= 0 {
		c.CatchUp = DefaultCatchUp
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Store keeps reports and run leases; *catalog.Catalog implements it. It
// must be safe for concurrent use.
type Store interface {
	Reports(ctx context.Context) ([]catalog.Report, error)
	ClaimRun(ctx context.Context, report string, scheduledFor time.Time, node string, now, leaseUntil, retryBefore time.Time, maxAttempts int) (int, bool, error)
	FinishRun(ctx context.Context, run catalog.ReportRun) (bool, error)
}

// Sessions opens engine sessions scoped to a principal. It must be safe for
// concurrent use.
type Sessions interface {
	Session(ctx context.Context, p auth.Principal) (*engine.Session, error)
}

// Objects stores report results. It must be safe for concurrent use.
type Objects interface {
	// Create opens the object at path (slash-separated, relative to the
	// store's root) for writing and returns its full location.
	Create(ctx context.Context, path string) (io.WriteCloser, string, error)
}

// Scheduler runs due reports. Run owns its only goroutine: reports run one
// at a time on a node, which is plenty for nightly and weekly grains and
// keeps them from crowding interactive queries.
type Scheduler struct {
	cfg      Config
	store    Store
	logins   auth.Store
	sessions Sessions
	objects  Objects
	logger   *slog.Logger
	parser   cron.Parser
	runs     *prometheus.CounterVec
	duration prometheus.Histogram
}

// New returns a Scheduler and registers its metrics with reg (nil: not
// registered).
func New(cfg Config, store Store, logins auth.Store, sessions Sessions, objects Objects, logger *slog.Logger, reg prometheus.Registerer) (*Scheduler, error) {
	cfg.fill()
	s := &Scheduler{
		cfg: cfg, store: store, logins: logins, sessions: sessions, objects: objects,
		logger: logger.With("component", "reports"),
		parser: cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "reports", Name: "runs_total",
			Help: "Report runs on this node, by outcome (done, failed)."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "medlake", Subsystem: "reports", Name: "run_duration_seconds",
			Help: "Time to run a report and write its result.", Buckets: prometheus.ExponentialBuckets(0.1, 3, 10)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.runs, s.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering report metrics: %w", err)
			}
		}
	}
	return s, nil
}

// ParseSchedule checks a cron expression the way the scheduler reads it:
// five fields (minute hour day-of-month month day-of-week, UTC) or a
// descriptor such as @daily or @every 1h.
func ParseSchedule(expr string) (cron.Schedule, error) {
	sched, err := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", expr, err)
	}
	return sched, nil
}

// Run checks schedules every PollInterval until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("checking report schedules", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick runs every report occurrence that is due and not yet taken.
func (s *Scheduler) Tick(ctx context.Context) error {
	all, err := s.store.Reports(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range all {
		if !r.Enabled {
			continue
		}
		sched, err := s.parser.Parse(r.Cron)
		if err != nil {
			errs = append(errs, fmt.Errorf("report %s: schedule %q: %w", r.Name, r.Cron, err))
			continue
		}
		now := s.cfg.Now().UTC()
		occ, ok := latest(sched, now.Add(-s.cfg.CatchUp), now)
		if !ok {
			continue
		}
		attempt, ok, err := s.store.ClaimRun(ctx, r.Name, occ, s.cfg.Node, now, now.Add(s.cfg.Lease), now.Add(-s.cfg.RetryBackoff), s.cfg.MaxAttempts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			s.run(ctx, r, occ, attempt)
		}
	}
	return errors.Join(errs...)
}

// latest returns the last occurrence of sched in (from, now].
func latest(sched cron.Schedule, from, now time.Time) (time.Time, bool) {
	var last time.Time
	for t := sched.Next(from); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		last = t
	}
	return last, !last.IsZero()
}

func (s *Scheduler) run(ctx context.Context, r catalog.Report, occ time.Time, attempt int) {
	start := s.cfg.Now()
	// The run must end before its lease does, or another node would run
	// the occurrence again while this one still writes.
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Lease*9/10)
	defer cancel()
	rows, location, err := s.execute(rctx, r, occ)
	rec := catalog.ReportRun{Report: r.Name, ScheduledFor: occ, Node: s.cfg.Node, Attempt: attempt,
		FinishedAt: s.cfg.Now(), Rows: rows, Location: location, Status: catalog.RunDone}
	if err != nil {
		rec.Status, rec.Error = catalog.RunFailed, err.Error()
	}
	s.runs.WithLabelValues(rec.Status).Inc()
	s.duration.Observe(time.Since(start).Seconds())
	// Record the outcome even when ctx ended, so a stopping node does not
	// leave a run to wait out its lease.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer fcancel()
	kept, ferr := s.store.FinishRun(fctx, rec)
	switch {
	case ferr != nil:
		s.logger.Error("recording report run", "report", r.Name, "scheduled_for", occ, "err", ferr)
	case !kept:
		s.logger.Warn("report run outlived its lease; another node took it over", "report", r.Name, "scheduled_for", occ)
	case err != nil:
		s.logger.Warn("report failed", "report", r.Name, "scheduled_for", occ, "attempt", attempt, "err", err)
	default:
		s.logger.Info("report done", "report", r.Name, "scheduled_for", occ, "rows", rows, "location", location)
	}
}

// execute runs the report as its owner and writes the result.
func (s *Scheduler) execute(ctx context.Context, r catalog.Report, occ time.Time) (int64, string, error) {
	enc, err := results.Lookup(r.Format)
	if err != nil {
		return 0, "", err
	}
	login, err := s.logins.Login(ctx, r.Owner)
	switch {
	case err != nil:
		return 0, "", fmt.Errorf("owner %s: %w", r.Owner, err)
	case login.Disabled:
		return 0, "", fmt.Errorf("owner %s is disabled", r.Owner)
	}
	sess, err := s.sessions.Session(ctx, login.Principal)
	if err != nil {
		return 0, "", err
	}
	defer sess.Close()
	st, err := sess.Prepare(ctx, r.SQL)
	if err != nil {
		return 0, "", fmt.Errorf("preparing: %w", err)
	}
	defer st.Close()
	if len(st.Params) > 0 {
		return 0, "", fmt.Errorf("reports take no parameters; the statement has %d", len(st.Params))
	}
	path := fmt.Sprintf("reports/%s/%s.%s", r.Name, occ.UTC().Format("20060102T150405Z"), enc.Ext)
	w, location, err := s.objects.Create(ctx, path)
	if err != nil {
		return 0, "", fmt.Errorf("creating %s: %w", path, err)
	}
	out, err := enc.Open(w, st.ArrowSchema())
	if err != nil {
		w.Close()
		return 0, location, err
	}
	var rows int64
	err = st.QueryRecords(ctx, nil, 0, func(rec arrow.RecordBatch) error {
		rows += rec.NumRows()
		return out.Write(rec)
	})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing %s: %w", location, cerr)
	}
	return rows, location, err
}

// Warehouse stores results under the lake's warehouse (a directory or an
// s3:// prefix), through the same IO as the tables.
type Warehouse struct {
	Root  string            // the warehouse location
	Props map[string]string // IO properties (s3.endpoint, credentials, ...)
}

// Create opens root/path for writing.
func (w Warehouse) Create(ctx context.Context, path string) (io.WriteCloser, string, error) {
	location := strings.TrimSuffix(w.Root, "/") + "/" + path
	fsys, err := iceio.LoadFS(ctx, w.Props, location)
	if err != nil {
		return nil, location, err
	}
	wfs, ok := fsys.(iceio.WriteFileIO)
	if !ok {
		return nil, location, fmt.Errorf("warehouse %s cannot be written", w.Root)
	}
	f, err := wfs.Create(location)
	return f, location, err
}
