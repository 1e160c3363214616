package maintain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
)

// LeaseName is the catalog lease a node holds while it maintains tables.
const LeaseName = "table-maintenance"

// Jobs a pass runs on each table, in this order, as metric and log labels.
const (
	JobCompact = "compact"
	JobExpire  = "expire"
	JobOrphans = "orphans"
)

// Runner runs maintenance passes over every table of the catalog on a schedule. Every
// node of the maintenance role runs one; the lease makes one of them do the work, and
// keeps doing it: after a pass the node holds the lease for another Interval, so the
// cluster makes one pass per Interval, and another node takes over when this one stops
// (it releases the lease) or dies (the lease lapses).
// The lease is an economy, not the safety: each step commits with conflict detection,
// so two nodes maintaining a table at once (a lease lapsed mid-pass) lose nothing.
type Runner struct {
	cfg    Config
	cat    *catalog.Catalog
	tables Tables
	node   string
	log    *slog.Logger
	m      *metrics
	now    func() time.Time

	// lastOrphans is when orphan cleanup last ran on each table; owned by the caller
	// of Pass (Run's goroutine).
	lastOrphans map[string]time.Time
}

// New builds a runner for cfg, identifying this node in the lease as node.
func New(cfg Config, cat *catalog.Catalog, node string, log *slog.Logger, reg prometheus.Registerer) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, cat: cat, tables: CatalogTables(cat), node: node,
		log: log.With("component", "maintenance", "node", node), m: m, now: time.Now,
		lastOrphans: map[string]time.Time{}}, nil
}

// Run runs a pass every Interval until ctx ends. A failing pass is logged and
// counted; the next one runs on schedule.
func (r *Runner) Run(ctx context.Context) error {
	if !r.cfg.Enabled {
		r.log.Info("scheduled maintenance disabled")
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.cat.ReleaseLease(ctx, LeaseName, r.node); err != nil {
			r.log.Warn("releasing maintenance lease", "err", err)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("maintenance pass failed", "err", err)
			}
		}
	}
}

// Pass takes the lease and, if this node got it, maintains every table once, then
// keeps the lease for another Interval. It reports whether it held the lease. A table
// whose step fails is logged and counted and the pass goes on with the next.
func (r *Runner) Pass(ctx context.Context) (bool, error) {
	ok, err := r.claim(ctx, r.cfg.LeaseTTL)
	if err != nil || !ok {
		r.m.leaseHeld.Set(0)
		if err == nil {
			r.log.Debug("another node holds the maintenance lease")
		}
		return false, err
	}
	r.m.leaseHeld.Set(1)
	defer func() {
		// The next pass is this node's, at its next tick; others wait an Interval.
		if _, err := r.claim(context.WithoutCancel(ctx), r.cfg.Interval); err != nil {
			r.log.Warn("keeping maintenance lease", "err", err)
		}
	}()
	names, err := ListTables(ctx, r.cat)
	if err != nil {
		return true, err
	}
	start := r.now()
	var failed []string
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		if err := r.Table(ctx, name); err != nil {
			failed = append(failed, name)
		}
		if ok, err := r.claim(ctx, r.cfg.LeaseTTL); err != nil || !ok {
			return true, fmt.Errorf("lost the maintenance lease after table %s (%v)", name, err)
		}
	}
	r.log.Info("maintenance pass done", "tables", len(names), "failed", len(failed), "duration", r.now().Sub(start))
	if len(failed) > 0 {
		return true, fmt.Errorf("maintenance failed on tables %v", failed)
	}
	return true, nil
}

func (r *Runner) claim(ctx context.Context, ttl time.Duration) (bool, error) {
	now := r.now()
	return r.cat.ClaimLease(ctx, LeaseName, r.node, now, now.Add(ttl))
}

// Table compacts, expires and (every OrphanInterval) cleans one table, each step
// logged and measured. It returns the steps' failures joined; an abandoned compaction
// is not a failure. Not safe for concurrent use.
func (r *Runner) Table(ctx context.Context, name string) error {
	log := r.log.With("table", name)
	var errs []error
	step := func(job string, run func() (string, []any, error)) {
		start := r.now()
		outcome, attrs, err := run()
		r.m.duration.WithLabelValues(job).Observe(r.now().Sub(start).Seconds())
		switch {
		case errors.Is(err, ErrAbandoned):
			outcome = "abandoned"
			log.Warn("maintenance step abandoned", append([]any{"job", job, "err", err}, attrs...)...)
		case err != nil:
			outcome = "error"
			errs = append(errs, err)
			log.Error("maintenance step failed", append([]any{"job", job, "err", err}, attrs...)...)
		default:
			r.m.lastSuccess.WithLabelValues(job, name).Set(float64(r.now().UnixMilli()) / 1e3)
			log.Info("maintenance step done", append([]any{"job", job, "outcome", outcome, "duration", r.now().Sub(start)}, attrs...)...)
		}
		r.m.runs.WithLabelValues(job, outcome).Inc()
	}
	step(JobCompact, func() (string, []any, error) {
		res, err := Compact(ctx, r.tables, name, r.cfg.CompactOptions())
		r.m.filesRewritten.WithLabelValues(name).Add(float64(res.FilesRemoved))
		r.m.deleteFilesFolded.WithLabelValues(name).Add(float64(res.DeleteFilesRemoved))
		outcome := "ok"
		if res.SnapshotID == 0 {
			outcome = "nothing"
		}
		return outcome, []any{"groups", res.Groups, "files_removed", res.FilesRemoved, "files_added", res.FilesAdded,
			"delete_files_removed", res.DeleteFilesRemoved, "bytes_before", res.BytesBefore, "bytes_after", res.BytesAfter,
			"attempts", res.Attempts, "snapshot_id", res.SnapshotID}, err
	})
	step(JobExpire, func() (string, []any, error) {
		res, err := Expire(ctx, r.tables, r.cat, name, r.cfg.Retention(), r.cfg.CommitRetries)
		r.m.snapshotsExpired.WithLabelValues(name).Add(float64(res.SnapshotsExpired))
		outcome := "ok"
		if res.SnapshotsExpired == 0 {
			outcome = "nothing"
		}
		return outcome, []any{"snapshots_before", res.SnapshotsBefore, "snapshots_expired", res.SnapshotsExpired,
			"batches_recorded", res.BatchesRecorded}, err
	})
	if last, ok := r.lastOrphans[name]; ok && r.now().Sub(last) < r.cfg.OrphanInterval {
		return errors.Join(errs...)
	}
	r.lastOrphans[name] = r.now()
	step(JobOrphans, func() (string, []any, error) {
		res, err := CleanOrphans(ctx, r.tables, name, r.cfg.OrphanMinAge, false)
		r.m.orphansDeleted.WithLabelValues(name).Add(float64(res.Deleted))
		outcome := "ok"
		if res.Deleted == 0 {
			outcome = "nothing"
		}
		return outcome, []any{"orphans", res.Files, "orphan_bytes", res.Bytes, "deleted", res.Deleted}, err
	})
	return errors.Join(errs...)
}

// ListTables returns the names of the tables in medlake's namespace, sorted.
func ListTables(ctx context.Context, cat *catalog.Catalog) ([]string, error) {
	var names []string
	for id, err := range cat.Iceberg().ListTables(ctx, cat.Namespace()) {
		if err != nil {
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		names = append(names, id[len(id)-1])
	}
	slices.Sort(names)
	return names, nil
}

type metrics struct {
	runs              *prometheus.CounterVec   // by job, outcome
	duration          *prometheus.HistogramVec // by job
	lastSuccess       *prometheus.GaugeVec     // by job, table
	filesRewritten    *prometheus.CounterVec   // by table
	deleteFilesFolded *prometheus.CounterVec   // by table
	snapshotsExpired  *prometheus.CounterVec   // by table
	orphansDeleted    *prometheus.CounterVec   // by table
	leaseHeld         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "medlake", Subsystem: "maintenance", Name: name, Help: help}
	}
	m := &metrics{
		runs: prometheus.NewCounterVec(opts("steps_total",
			"Maintenance steps run, by job (compact, expire, orphans) and outcome (ok, nothing, abandoned, error)."), []string{"job", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "medlake", Subsystem: "maintenance",
			Name: "step_duration_seconds", Help: "Duration of maintenance steps, by job.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"job"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "medlake", Subsystem: "maintenance",
			Name: "last_success_timestamp_seconds", Help: "When a maintenance job last succeeded on a table."}, []string{"job", "table"}),
		filesRewritten:    prometheus.NewCounterVec(opts("data_files_rewritten_total", "Small data files compaction replaced."), []string{"table"}),
		deleteFilesFolded: prometheus.NewCounterVec(opts("delete_files_folded_total", "Delete files compaction applied and removed."), []string{"table"}),
		snapshotsExpired:  prometheus.NewCounterVec(opts("snapshots_expired_total", "Snapshots removed by expiry."), []string{"table"}),
		orphansDeleted:    prometheus.NewCounterVec(opts("orphan_files_deleted_total", "Unreferenced files removed."), []string{"table"}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "medlake", Subsystem: "maintenance",
			Name: "lease_held", Help: "1 while this node runs a maintenance pass."}),
	}
	for _, c := range []prometheus.Collector{m.runs, m.duration, m.lastSuccess, m.filesRewritten, m.deleteFilesFolded,
		m.snapshotsExpired, m.orphansDeleted, m.leaseHeld} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering maintenance metrics: %w", err)
		}
	}
	return m, nil
}
