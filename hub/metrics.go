package hub

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	received   prometheus.Counter
	committed  *prometheus.CounterVec // by table
	duplicates *prometheus.CounterVec // by table
	rejected   *prometheus.CounterVec // by reason
	deferred   *prometheus.CounterVec // by table
	rows       *prometheus.CounterVec // by table
	failures   *prometheus.CounterVec // by table
	// conflicts counts commits that lost the race to another hub's commit of the same
	// table, by whether the retry re-applied the data files already written (reused)
	// or had to write them again (rewritten: the buffer or the table's schema or
	// partition spec changed meanwhile; keyed tables always re-plan).
	conflicts  *prometheus.CounterVec // by table, data_files
	duration   *prometheus.HistogramVec
	commitRows *prometheus.HistogramVec

	feedVersions        prometheus.Gauge
	feedRefreshFailures prometheus.Counter
	configPublishes     prometheus.Counter
	// Agent status events: central ops see quarantined files and dead letters of every
	// facility without logging in to it.
	agentEvents *prometheus.CounterVec // by kind
	quarantined prometheus.Counter

	// Delivery: per committed batch, from the agent's spooling (commitLag) and from the
	// source file's mtime (freshness) to the snapshot's commit.
	commitLag  *prometheus.HistogramVec // by table
	freshness  *prometheus.HistogramVec // by table
	lastCommit *prometheus.GaugeVec     // by table

	// keyedRows counts the rows of upsert, cdc and duplicates-drop tables by what the
	// commit did with them: upserted, deleted, stale (an older sequence than the key's),
	// unchanged (identical to the live row), superseded (a newer row of the key in the
	// same commit), duplicate (a seen key in a duplicates-drop table).
	keyedRows *prometheus.CounterVec // by table, outcome
	// Raw archives kept in the warehouse.
	archiveChunks *prometheus.CounterVec // by outcome: stored, duplicate, failed, deferred, rejected
	archived      prometheus.Counter
	archivedBytes prometheus.Counter
}

// LatencyBuckets are the buckets of the delivery latency histograms (commit lag,
// freshness), in seconds: fine around the 10 s freshness goal, coarse beyond it.
var LatencyBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "batches_received_total", Help: "Batch messages received from the broker."}),
		committed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "batches_committed_total", Help: "Batches written to the lake and acknowledged."}, []string{"table"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "batches_duplicate_total", Help: "Re-sent batches found in the ledger and acknowledged without writing."}, []string{"table"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "batches_rejected_total", Help: "Batches rejected, by reason."}, []string{"reason"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "rows_committed_total", Help: "Rows written to the lake."}, []string{"table"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "commit_failures_total", Help: "Commits that failed and will be retried."}, []string{"table"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "commit_duration_seconds", Help: "Time to write and commit one table snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}, []string{"table"}),
		commitRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "commit_rows", Help: "Rows per committed snapshot.",
			Buckets: prometheus.ExponentialBuckets(10, 4, 10)}, []string{"table"}),
		feedVersions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "feed_versions", Help: "Feed definition versions loaded from the catalog."}),
		feedRefreshFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "feed_refresh_failures_total", Help: "Failed reloads of feed definitions from the catalog."}),
		configPublishes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "config_publishes_total", Help: "Config messages published to agents."}),
		agentEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "agent_events_total", Help: "Events reported in agent statuses, by kind (quarantine, dead_letter, file_done, other)."}, []string{"kind"}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
			Name: "agent_quarantined_files_total", Help: "Source files agents reported quarantined (unreadable, or rejected by the hub)."}),
	}
	m.deferred = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "batches_deferred_total", Help: "Batches left unacknowledged because the table's commit buffer stayed full; their agents re-send them."}, []string{"table"})
	m.commitLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "commit_lag_seconds", Help: "Per committed batch: from the agent spooling it (created_at, agent clock) to the snapshot commit (hub clock).",
		Buckets: LatencyBuckets}, []string{"table"})
	m.freshness = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "freshness_committed_seconds", Help: "Per committed batch: from the source file's mtime (facility clock; created_at for 1.0 agents) to the snapshot commit (hub clock).",
		Buckets: LatencyBuckets}, []string{"table"})
	m.lastCommit = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "table_last_commit_timestamp_seconds", Help: "When this hub last committed a snapshot of the table (Unix seconds)."}, []string{"table"})
	m.keyedRows = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "keyed_rows_total", Help: "Rows of upsert, cdc and duplicates-drop tables, by what the commit did with them."}, []string{"table", "outcome"})
	m.conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "commit_conflicts_total", Help: "Commits retried because another commit moved the table first, by whether the retry reused the data files already written (reused) or wrote them again (rewritten)."}, []string{"table", "data_files"})
	m.archiveChunks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "archive_chunks_total", Help: "Archive chunks received, by outcome (stored, duplicate: the archive was already stored, failed: left to the agent's re-send, deferred: archivers busy, rejected)."}, []string{"outcome"})
	m.archived = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "archives_stored_total", Help: "Source files this hub stored whole in the warehouse under their SHA-256."})
	m.archivedBytes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake", Subsystem: "hub",
		Name: "archive_bytes_total", Help: "Bytes of the source files this hub stored in the warehouse."})
	for _, c := range []prometheus.Collector{m.conflicts, m.keyedRows, m.archiveChunks, m.archived, m.archivedBytes, m.deferred, m.commitLag, m.freshness, m.lastCommit, m.received, m.committed, m.duplicates, m.rejected, m.rows, m.failures, m.duration, m.commitRows,
		m.feedVersions, m.feedRefreshFailures, m.configPublishes, m.agentEvents, m.quarantined} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
