package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// Ingester consumes batches from the broker and commits them to the lake.
//
// Lock order: refreshMu, then agentsMu or mu; agentsMu and mu are never held together.
type Ingester struct {
	cfg Config
	cat *catalog.Catalog
	log *slog.Logger
	m   *metrics
	mem memory.Allocator

	// fs is the feed definitions loaded from the catalog, swapped whole by refreshFeeds.
	fs          atomic.Pointer[feedState]
	refreshMu   sync.Mutex // serializes refreshFeeds; guards lastRefresh
	lastRefresh time.Time

	agentsMu sync.Mutex
	agents   map[string]*knownAgent // guarded by agentsMu; by tenant/facility/agent

	// runCtx is the context of Run, set before the client connects; message handlers
	// run on paho's goroutine and stop blocking when it is done.
	mu       sync.Mutex
	runCtx   context.Context       // guarded by mu
	client   paho.Client           // guarded by mu
	cmts     map[string]*committer // guarded by mu; by table, started on a table's first batch
	stopping bool                  // guarded by mu; no committer starts once set
	wg       sync.WaitGroup        // committers and the feed refresher

	// archive takes archive chunks to the archivers, which keep them in store.
	archive chan *batch
	store   *catalog.ArchiveStore

	subscribed     chan struct{} // closed once the batch subscription is in place
	subscribedOnce sync.Once
}

// Ready is closed once the hub has subscribed to agents' batches: from then on a batch
// published is delivered to this hub or another member of the shared subscription.
func (in *Ingester) Ready() <-chan struct{} { return in.subscribed }

// New seeds the catalog from feeds_dir (when set) and loads the feed definitions from
// the catalog. registerer may be nil (metrics are then kept private).
func New(cfg Config, cat *catalog.Catalog, logger *slog.Logger, registerer prometheus.Registerer) (*Ingester, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cat == nil {
		return nil, errors.New("hub: catalog is nil")
	}
	if registerer == nil {
		registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(registerer)
	if err != nil {
		return nil, fmt.Errorf("registering hub metrics: %w", err)
	}
	in := &Ingester{cfg: cfg, cat: cat, log: logger.With("component", "hub"), m: m, subscribed: make(chan struct{}),
		mem: memory.DefaultAllocator, cmts: map[string]*committer{}, agents: map[string]*knownAgent{},
		archive: make(chan *batch, 2*archiveWorkers)}
	if err := registerer.Register(newFleetCollector(in)); err != nil {
		return nil, fmt.Errorf("registering hub fleet metrics: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if cfg.FeedsDir != "" {
		if err := seedFeeds(ctx, cat, cfg.FeedsDir, in.log); err != nil {
			return nil, err
		}
	}
	if _, err := in.refreshFeeds(ctx, true); err != nil {
		return nil, err
	}
	if in.store, err = cat.Archives(ctx); err != nil {
		return nil, err
	}
	if len(in.fs.Load().versions) == 0 {
		in.log.Warn("the catalog holds no feed definitions yet; batches are rejected until one is applied (medlake feeds apply)")
	}
	return in, nil
}

// committer returns the committer of table, starting it on first use with def (the
// newest definition writing the table). It returns nil while the hub stops.
func (in *Ingester) committer(table string, def *feed.Definition) *committer {
	in.mu.Lock()
	defer in.mu.Unlock()
	if c, ok := in.cmts[table]; ok {
		return c
	}
	if in.stopping || in.runCtx == nil {
		return nil
	}
	c := newCommitter(def, in.cat, in.cfg.ClientID, in.cfg, in.log, in.m, in.publishAcks)
	c.notice = in.publishCommitNotice
	in.cmts[table] = c
	ctx := in.runCtx
	in.wg.Go(func() { c.run(ctx) })
	return c
}

// Run connects to the broker and ingests until ctx is done. It returns after every
// committer has made its last commit attempt and the client has disconnected.
func (in *Ingester) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in.mu.Lock()
	in.runCtx = ctx
	in.mu.Unlock()
	in.wg.Go(func() { in.runFeedRefresh(ctx) })
	in.wg.Go(func() { in.createRejectsTable(ctx) })
	for range archiveWorkers {
		in.wg.Go(func() { in.runArchiver(ctx) })
	}
	stop := func() {
		cancel()
		in.mu.Lock()
		in.stopping = true
		in.mu.Unlock()
		in.wg.Wait()
	}

	client := paho.NewClient(in.clientOptions())
	in.mu.Lock()
	in.client = client
	in.mu.Unlock()
	tok := client.Connect()
	// ConnectRetry makes Connect keep trying in the background; failing here would
	// only be for bad options.
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			stop()
			return fmt.Errorf("connecting to broker %s: %w", in.cfg.Broker, err)
		}
	case <-ctx.Done():
	}
	in.log.Info("hub ingest running", "broker", in.cfg.Broker, "client_id", in.cfg.ClientID,
		"tables", len(in.fs.Load().byTable), "config_revision", in.fs.Load().config.Revision)

	<-ctx.Done()
	// Committers make their last commit and publish acks while the client is still up.
	stop()
	client.Disconnect(1000)
	in.log.Info("hub ingest stopped")
	return nil
}

func (in *Ingester) clientOptions() *paho.ClientOptions {
	o := paho.NewClientOptions().
		AddBroker(in.cfg.Broker).
		SetClientID(in.cfg.ClientID).
		SetUsername(in.cfg.Username).
		SetPassword(in.cfg.Password).
		// A clean session: when a hub dies its session ends with it, so the broker stops
		// giving it a share of the batches. A persistent session would keep receiving its
		// share while the hub is down (mosquitto queues shared-subscription messages for
		// an offline persistent member), and every such batch would wait for its agent's
		// re-send, again and again. What the dead hub held unacknowledged is re-sent by
		// the agents in any case.
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		// A broker restart is over in seconds; a longer cap only delays the hub's
		// return (and every agent's acks) after it.
		SetMaxReconnectInterval(maxReconnectInterval).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		// Messages of the shared subscription arrive on "medlake/v1/..." without the
		// "$share/group/" prefix, and queued ones can arrive before Subscribe returns:
		// route everything through one handler that dispatches on the topic.
		SetDefaultPublishHandler(in.onMessage).
		SetOnConnectHandler(in.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			in.log.Warn("broker connection lost", "err", err)
		})
	return o
}

func (in *Ingester) onConnect(c paho.Client) {
	in.log.Info("connected to broker", "broker", in.cfg.Broker)
	tok := c.SubscribeMultiple(map[string]byte{
		protocol.HubBatchSubscription:  1,
		protocol.HubStatusSubscription: 1,
	}, nil)
	// A clean session loses its subscriptions with the connection: every connect
	// subscribes; a failure here is logged and the next reconnect subscribes again.
	if !tok.WaitTimeout(30 * time.Second) {
		in.log.Error("subscribing timed out", "err", "no suback within 30s")
		return
	}
	if err := tok.Error(); err != nil {
		in.log.Error("subscribing failed", "err", err)
		return
	}
	in.subscribedOnce.Do(func() { close(in.subscribed) })
}

func (in *Ingester) onMessage(_ paho.Client, msg paho.Message) {
	t, err := protocol.ParseTopic(msg.Topic())
	if err != nil {
		in.log.Warn("ignoring message on unexpected topic", "topic", msg.Topic(), "err", err)
		return
	}
	switch t.Kind {
	case protocol.KindBatch:
		in.onBatch(t, msg.Payload())
	case protocol.KindStatus:
		in.onStatus(t, msg.Payload(), msg.Retained())
	default:
		in.log.Debug("ignoring message", "topic", msg.Topic())
	}
}

func (in *Ingester) ctx() context.Context {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.runCtx
}

func (in *Ingester) onBatch(t protocol.Topic, frame []byte) {
	in.m.received.Inc()
	st := in.fs.Load()
	b, rej := decodeBatch(t, frame, st.feeds, in.mem)
	if rej != nil && (rej.metric == "unknown_feed" || rej.metric == "unknown_table") && in.refreshForUnknown(in.ctx()) {
		st = in.fs.Load()
		b, rej = decodeBatch(t, frame, st.feeds, in.mem)
	}
	if rej != nil {
		in.reject(rej)
		return
	}
	b.received = time.Now()
	if b.chunk != nil {
		in.enqueueChunk(b)
		return
	}
	c := in.committer(b.hdr.Table, st.byTable[b.hdr.Table]) // decodeBatch accepts only declared tables
	if c == nil {
		b.release() // stopping: not acked, the agent re-sends it to a running hub
		return
	}
	if cdef, err := c.accepts(b.def, st.byTable[b.hdr.Table]); err != nil {
		// The table's newest definition changed its columns in a way this batch's rows
		// cannot be written into (see checkWritable).
		b.release()
		in.reject(&rejection{topic: t, batchID: b.hdr.BatchID, metric: "schema_mismatch",
			reason: fmt.Sprintf("batch %s: feed %q version %d changes the columns of table %s (written with feed %q version %d): %v",
				b.hdr.BatchID, b.hdr.Feed, b.hdr.FeedVersion, b.hdr.Table, cdef.Name, cdef.Version, err)})
		return
	}
	// A committer whose buffer is full (the catalog or the object store is down, or
	// commits fall behind) stops taking batches. Waiting for it here would stall paho's
	// delivery goroutine, and with it agents' statuses and the connection itself, so after
	// a short wait the batch is dropped unacknowledged: its agent keeps it spooled and
	// re-sends it, backing off, and the hub commits it once there is room.
	wait := time.NewTimer(enqueueWait)
	defer wait.Stop()
	select {
	case c.in <- b:
	case <-wait.C:
		b.release()
		in.m.deferred.WithLabelValues(b.hdr.Table).Inc()
		in.log.Debug("commit buffer full, batch left to the agent's re-send", "table", b.hdr.Table, "batch_id", b.hdr.BatchID)
	case <-in.ctx().Done():
		b.release() // not acked: the agent re-sends it to a running hub
	}
}

// enqueueWait is how long a batch waits for room in its table's commit buffer before it
// is left to the agent's re-send.
const enqueueWait = 2 * time.Second

func (in *Ingester) reject(r *rejection) {
	in.m.rejected.WithLabelValues(r.metric).Inc()
	in.log.Warn("batch rejected", "tenant", r.topic.Tenant, "facility", r.topic.Facility, "agent", r.topic.Agent,
		"batch_id", r.batchID, "reason", r.reason)
	in.publishAcks(in.ctx(), []ackOut{{
		topic: protocol.AckTopic(r.topic.Tenant, r.topic.Facility, r.topic.Agent),
		ack:   protocol.Ack{BatchID: r.batchID, Status: protocol.AckRejected, Reason: r.reason},
	}})
}

// onStatus logs an agent's status and its events. Statuses are published retained, so
// a retained copy (delivered at subscribe time, already seen by some hub) is logged but
// not counted in the event metrics again.
func (in *Ingester) onStatus(t protocol.Topic, payload []byte, retained bool) {
	s, err := protocol.DecodeStatus(payload)
	if err != nil {
		in.log.Warn("undecodable agent status", "topic", t.String(), "err", err)
		return
	}
	var applied, refused string
	if s.Config != nil {
		applied, refused = s.Config.Applied, s.Config.Refused
		for _, e := range s.Config.Errors {
			in.log.Warn("agent refused a pushed feed", "tenant", t.Tenant, "facility", t.Facility, "agent", t.Agent,
				"revision", refused, "feed", e.Feed, "version", e.Version, "err", e.Error)
		}
	}
	in.log.Info("agent status", "tenant", t.Tenant, "facility", t.Facility, "agent", t.Agent, "state", s.State,
		"spool_batches", s.SpoolBatches, "spool_bytes", s.SpoolBytes, "in_flight", s.InFlight,
		"files_done", s.FilesDone, "dead_letters", s.DeadLetters, "last_error", s.LastError,
		"config_applied", applied, "config_refused", refused)
	in.noteAgent(t, s)
	for _, e := range s.Events {
		level := slog.LevelInfo
		switch e.Kind {
		case protocol.EventQuarantine, protocol.EventDeadLetter:
			// Ops must act on these: a file or batch waits for a fix and a retry.
			level = slog.LevelWarn
		}
		in.log.Log(context.Background(), level, "agent event", "tenant", t.Tenant, "facility", t.Facility, "agent", t.Agent,
			"kind", e.Kind, "batch_id", e.BatchID, "file", e.File, "reason", e.Reason, "time", e.Time, "retained", retained)
		if retained {
			continue
		}
		in.m.agentEvents.WithLabelValues(eventMetricKind(e.Kind)).Inc()
		if e.Kind == protocol.EventQuarantine {
			in.m.quarantined.Inc()
		}
	}
}

// eventMetricKind bounds the kind label to the kinds this hub knows.
func eventMetricKind(kind string) string {
	switch kind {
	case protocol.EventQuarantine, protocol.EventDeadLetter, protocol.EventFileDone:
		return kind
	}
	return "other"
}

// publishAcks publishes acks at QoS 1 without waiting for the broker's PUBACK: paho
// delivers PUBACKs on the goroutine that also feeds the message handler, which blocks
// while a committer's buffer is full, so waiting here could deadlock. paho keeps
// unacknowledged QoS 1 publishes and resends them after a reconnect; an ack lost anyway
// costs a re-send: the agent re-sends after its timeout and the hub acks from the ledger.
func (in *Ingester) publishAcks(_ context.Context, acks []ackOut) {
	in.mu.Lock()
	client := in.client
	in.mu.Unlock()
	if client == nil {
		return
	}
	for _, a := range acks {
		payload, err := protocol.EncodeAck(a.ack)
		if err != nil {
			in.log.Error("encoding ack", "batch_id", a.ack.BatchID, "err", err)
			continue
		}
		client.Publish(a.topic, 1, false, payload)
	}
}

// createRejectsTable makes the rejects table exist from the start, so that ops' queries
// on it answer (with no rows) before any row is rejected. While the catalog or the
// warehouse is unreachable it tries again; the committer creates the table anyway when
// rejects arrive first.
func (in *Ingester) createRejectsTable(ctx context.Context) {
	for wait := time.Second; ; wait = min(2*wait, maxBackoff) {
		_, err := loadOrCreateTable(ctx, in.cat, feed.Rejects(), in.log)
		if err == nil || ctx.Err() != nil {
			return
		}
		in.log.Warn("creating the rejects table failed, will retry", "table", feed.RejectsTable, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
