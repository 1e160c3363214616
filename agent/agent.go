package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/agent/send"
	"github.com/medlake/medlake/agent/spool"
	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/agent/watch"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// maxReconnectInterval caps the broker reconnect backoff: a broker back after a restart
// sees the agent again within this time. paho keeps doubling its wait across
// connection losses that follow each other within its connect timeout, so after a
// few broker restarts an agent waits the whole cap: with 10 s, agents came back 10 s
// after a 3 s broker restart, 6 s after the hubs, and nothing was ingested until
// then. The hubs' cap is 5 s too.
const maxReconnectInterval = 5 * time.Second

// Option adjusts an Agent at construction.
type Option func(*Agent)

// WithRegisterer registers the agent's Prometheus metrics with reg.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(a *Agent) { a.reg = reg }
}

// Agent is one running facility agent. Build it with New, run it once with Run.
type Agent struct {
	cfg    Config
	logger *slog.Logger
	reg    prometheus.Registerer

	// feeds is the current feed set, swapped whole when a pushed config is applied;
	// read it through feedsFor.
	feeds        atomic.Pointer[feedSet]
	feedsSwapped chan struct{}      // signalled on every swap
	local        []*feed.Definition // from feeds_dir, fixed after New
	m            *configMetrics

	cfgMu        sync.Mutex  // serializes pushed configs; guards pushed, seenRevision
	pushed       pushedState // guarded by cfgMu
	seenRevision string      // guarded by cfgMu; the config last handled in this run

	roots  map[string]WatchConfig // by cleaned watch path
	limits unpack.Limits
	dirs   dirs

	state   *state.DB
	spool   *spool.Spool
	sender  *send.Sender
	watcher *watch.Watcher

	finalizeQ *queue // sha256s of files whose batches are all answered

	rowsRejected atomic.Int64
	filesDone    atomic.Int64 // this run, for metrics

	mu        sync.Mutex
	lastError string // guarded by mu

	closeOnce sync.Once
}

type dirs struct {
	spool, deadLetter, quarantine, rejects, tmp string
}

// New loads the feed definitions, opens the state database and the spool and builds
// every component. Call Run, or Close if Run is never called.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Agent, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:    cfg,
		logger: logger.With("component", "agent", "agent", cfg.ID),
		roots:  make(map[string]WatchConfig),
		dirs: dirs{
			spool:      filepath.Join(cfg.StateDir, "spool"),
			deadLetter: filepath.Join(cfg.StateDir, "dead-letter"),
			quarantine: filepath.Join(cfg.StateDir, "quarantine"),
			rejects:    filepath.Join(cfg.StateDir, "rejects"),
			tmp:        filepath.Join(cfg.StateDir, "tmp"),
		},
		finalizeQ:    newQueue(),
		feedsSwapped: make(chan struct{}, 1),
		m:            newConfigMetrics(),
	}
	for _, o := range opts {
		o(a)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state_dir %s: %w", cfg.StateDir, err)
	}
	var err error
	if a.local, err = loadLocalFeeds(cfg.FeedsDir); err != nil {
		return nil, err
	}
	if a.pushed, err = loadPushed(a.pushedPath()); err != nil {
		return nil, err
	}
	pushed, perrs := parsePushed(a.pushed.Feeds)
	for _, e := range perrs {
		a.logger.Error("dropping a persisted pushed feed that no longer parses", "err", e)
	}
	set, err := a.buildFeedSet(a.local, pushed)
	if err != nil {
		return nil, err
	}
	a.feeds.Store(set)
	if a.pushed.Applied != "" {
		a.m.revision.WithLabelValues(a.pushed.Applied).Set(1)
	}
	for _, d := range []string{a.dirs.quarantine, a.dirs.rejects, a.dirs.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if err := clearTmp(a.dirs.tmp); err != nil {
		return nil, err
	}
	a.limits = unpack.Limits{
		TempDir: a.dirs.tmp, MaxRatio: cfg.Limits.MaxRatio, MaxEntrySize: cfg.Limits.MaxEntryBytes,
		MaxArchiveSize: cfg.Limits.MaxFileBytes, MaxEntries: cfg.Limits.MaxEntries, MaxDepth: cfg.Limits.MaxDepth,
	}

	var roots []watch.Root
	for _, w := range cfg.Watch {
		a.roots[filepath.Clean(w.Path)] = w
		roots = append(roots, watch.Root{Path: w.Path, Recursive: w.Recursive, DoneDir: w.DoneDir})
	}
	a.watcher, err = watch.New(watch.Config{Roots: roots, QuietPeriod: cfg.QuietPeriod, RescanInterval: cfg.RescanInterval}, logger)
	if err != nil {
		return nil, fmt.Errorf("configuring watcher: %w", err)
	}

	a.state, err = state.Open(filepath.Join(cfg.StateDir, "state.db"))
	if err != nil {
		return nil, err
	}
	a.spool, err = spool.Open(spool.Config{Dir: a.dirs.spool, DeadLetterDir: a.dirs.deadLetter, MaxBytes: cfg.SpoolMaxBytes, MaxBatches: cfg.SpoolMaxBatches}, logger)
	if err != nil {
		a.state.Close()
		return nil, err
	}
	a.sender, err = send.New(send.Config{
		Broker: cfg.Broker, Username: cfg.Username, Password: cfg.Password,
		Tenant: cfg.Tenant, Facility: cfg.Facility, Agent: cfg.ID,
		MaxInflight: cfg.MaxInflight, AckTimeout: cfg.AckTimeout, AckTimeoutMax: cfg.AckTimeoutMax,
		StatusInterval: cfg.StatusInterval,
		// Capped so an agent is back within seconds of a broker restart.
		MaxReconnectInterval: maxReconnectInterval,
		OnConfig:             a.onConfig,
	}, a.spool, a.onAck, a.status, logger)
	if err != nil {
		a.Close()
		return nil, err
	}
	if a.reg != nil {
		if err := a.registerMetrics(a.reg); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}

// clearTmp removes unpack staging files a crash left behind: they hold patient data.
func clearTmp(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, de := range des {
		if err := os.RemoveAll(filepath.Join(dir, de.Name())); err != nil {
			return fmt.Errorf("clearing leftover staging file: %w", err)
		}
	}
	return nil
}

// Close releases the state database and spool. Run calls it on return; safe to call twice.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		if a.spool != nil {
			a.spool.Close()
		}
		if a.state != nil {
			err = a.state.Close()
		}
	})
	return err
}

// File returns the agent's record of a source file by content hash.
func (a *Agent) File(sha256 string) (state.File, bool, error) {
	return a.state.Get(sha256)
}

func (a *Agent) setError(err error) {
	a.mu.Lock()
	a.lastError = err.Error()
	a.mu.Unlock()
}

// Run starts the watcher, the file processor, the finisher and the sender, and returns
// when ctx ends (nil) or when one of them fails (its error), after stopping and waiting
// for all of them. It closes the agent on return.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	resume, err := a.resume()
	if err != nil {
		return err
	}
	files := make(chan watch.File)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	start := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	start("sender", a.sender.Run)
	start("finisher", a.runFinisher)
	start("processor", func(ctx context.Context) error { return a.runProcessor(ctx, resume, files) })
	start("watcher", func(ctx context.Context) error { return a.watcher.Run(ctx, files) })
	a.logger.Info("agent running", "feeds", len(a.feeds.Load().defs), "local_feeds", len(a.local),
		"config_revision", a.pushed.Applied, "watch", len(a.cfg.Watch), "resumed_files", len(resume))
	wg.Wait()
	a.logger.Info("agent stopped")
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// resume looks at files left in progress by the previous run: complete ones are queued
// for finishing, ones whose spooling was interrupted (or whose spooled frames were found
// corrupt) are returned for re-parsing.
func (a *Agent) resume() ([]watch.File, error) {
	inp, err := a.state.InProgress()
	if err != nil {
		return nil, err
	}
	var reparse []watch.File
	for _, f := range inp {
		switch {
		case f.Complete():
			a.finalizeQ.push(f.SHA256)
		case !a.allSpooled(f) && a.rejectsRetryPending(f.SHA256):
			// Re-running its rejects: takeRejectRetries resumes it from its rejects.
		case !a.allSpooled(f) && a.resumeFromCopy(f):
			a.logger.Info("resuming interrupted retry from the quarantine copy", "path", f.Path, "sha256", f.SHA256)
		case !a.allSpooled(f):
			a.logger.Info("resuming interrupted file", "path", f.Path, "sha256", f.SHA256)
			reparse = append(reparse, watch.File{Path: f.Path, Root: f.Root, Size: f.Size, ModTime: f.ModTime})
		}
	}
	return reparse, nil
}

// allSpooled reports whether every unanswered batch of f is in the spool, so the file
// needs no parsing, only acks.
func (a *Agent) allSpooled(f state.File) bool {
	if !f.Spooled {
		return false
	}
	for _, id := range f.Unacked() {
		if !a.spool.Has(id) {
			return false
		}
	}
	return true
}

func (a *Agent) runProcessor(ctx context.Context, resume []watch.File, files <-chan watch.File) error {
	if !a.waitForFeeds(ctx) {
		return nil
	}
	for _, wf := range resume {
		if err := a.processFile(ctx, wf); err != nil {
			return err
		}
	}
	takeRetries := func() error {
		if err := a.takeRetries(ctx); err != nil {
			return err
		}
		return a.takeRejectRetries(ctx)
	}
	if err := takeRetries(); err != nil {
		return err
	}
	retries := time.NewTicker(a.retryPoll())
	defer retries.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case wf := <-files:
			if err := a.processFile(ctx, wf); err != nil {
				return err
			}
		case <-retries.C:
			if err := takeRetries(); err != nil {
				return err
			}
		}
	}
}

// onAck records the hub's answer in state before the sender drops the spooled frame.
func (a *Agent) onAck(_ context.Context, ack protocol.Ack) error {
	f, ok, err := a.state.Ack(ack.BatchID, ack.Status == protocol.AckCommitted, ack.Reason)
	if err != nil {
		a.setError(err)
		return err
	}
	if !ok {
		a.logger.Warn("ack for a spooled batch unknown to state", "batch_id", ack.BatchID)
		return nil
	}
	if f.Complete() {
		a.finalizeQ.push(f.SHA256)
	}
	return nil
}

func (a *Agent) status() protocol.Status {
	st := a.spool.Stats()
	s := protocol.Status{
		SpoolBatches: st.Batches, SpoolBytes: st.Bytes, SpoolFull: st.Full, DeadLetters: st.DeadLetters,
		RowsRejected: a.rowsRejected.Load(), OldestUnacked: st.Oldest.UTC(),
	}
	if c, err := a.state.Counts(); err == nil {
		s.FilesDone, s.Quarantined, s.FilesWaiting = c.Done, int(c.Quarantined), int(c.InProgress)
	}
	a.mu.Lock()
	s.LastError = a.lastError
	a.mu.Unlock()
	s.Config = a.configState()
	return s
}

func (a *Agent) registerMetrics(reg prometheus.Registerer) error {
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "medlake_agent", Name: name, Help: help}, fn)
	}
	counter := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "medlake_agent", Name: name, Help: help}, fn)
	}
	cs := []prometheus.Collector{
		counter("files_done_total", "Source files finished in this run.", func() float64 { return float64(a.filesDone.Load()) }),
		counter("batches_sent_total", "Batch publishes, re-sends included.", func() float64 { st := a.sender.Stats(); return float64(st.Published + st.Resent) }),
		counter("batches_resent_total", "Batches re-sent after waiting for the hub's ack.", func() float64 { return float64(a.sender.Stats().Resent) }),
		gauge("ack_timeout_seconds", "Current first wait for the hub's ack before a re-send, adapted to observed ack latency.", func() float64 { return a.sender.Stats().AckTimeout.Seconds() }),
		counter("batches_acked_total", "Batches committed by the hub.", func() float64 { return float64(a.sender.Stats().Committed) }),
		counter("batches_rejected_total", "Batches rejected by the hub (dead-lettered).", func() float64 { return float64(a.sender.Stats().Rejected) }),
		counter("rows_rejected_total", "Source rows rejected by normalization.", func() float64 { return float64(a.rowsRejected.Load()) }),
		gauge("spool_bytes", "Bytes in the spool.", func() float64 { return float64(a.spool.Stats().Bytes) }),
		gauge("spool_batches", "Batches in the spool.", func() float64 { return float64(a.spool.Stats().Batches) }),
		gauge("spool_full", "1 while the spool is full and intake pauses.", func() float64 {
			if a.spool.Stats().Full {
				return 1
			}
			return 0
		}),
		gauge("inflight_batches", "Batches sent and awaiting the hub's ack.", func() float64 { return float64(a.sender.Stats().InFlight) }),
		gauge("oldest_unacked_age_seconds", "Age of the oldest spooled batch not yet acknowledged by the hub; 0 when none waits.", func() float64 {
			if o := a.spool.Stats().Oldest; !o.IsZero() {
				return time.Since(o).Seconds()
			}
			return 0
		}),
		gauge("files_waiting", "Source files taken and not yet done (being read, spooled, or waiting for acks).", func() float64 {
			c, err := a.state.Counts()
			if err != nil {
				return 0
			}
			return float64(c.InProgress)
		}),
	}
	for _, c := range append(cs, a.m.collectors()...) {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering agent metrics: %w", err)
		}
	}
	return nil
}

// queue is an unbounded FIFO of strings with a wake-up channel, so producers (the
// sender's ack path) never block on the consumer.
type queue struct {
	mu    sync.Mutex
	items []string
	wake  chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) push(s string) {
	q.mu.Lock()
	q.items = append(q.items, s)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) pop() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return "", false
	}
	s := q.items[0]
	q.items = q.items[1:]
	return s, true
}
