package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// Ingester consumes batches from the broker and commits them to the lake.
type Ingester struct {
	cfg  Config
	cat  *catalog.Catalog
	log  *slog.Logger
	m    *metrics
	fs   *feeds
	mem  memory.Allocator
	cmts map[string]*committer // by table; fixed after New

	// runCtx is the context of Run, set before the client connects; message handlers
	// run on paho's goroutine and stop blocking when it is done.
	mu     sync.Mutex
	runCtx context.Context // guarded by mu
	client paho.Client     // guarded by mu
}

// New loads the feed definitions and prepares one committer per declared table.
// registerer may be nil (metrics are then kept private).
func New(cfg Config, cat *catalog.Catalog, logger *slog.Logger, registerer prometheus.Registerer) (*Ingester, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cat == nil {
		return nil, errors.New("hub: catalog is nil")
	}
	defs, err := feed.ParseFS(os.DirFS(cfg.FeedsDir))
	if err != nil {
		return nil, fmt.Errorf("loading feed definitions from %s: %w", cfg.FeedsDir, err)
	}
	fs, err := indexFeeds(defs)
	if err != nil {
		return nil, fmt.Errorf("feed definitions in %s: %w", cfg.FeedsDir, err)
	}
	if registerer == nil {
		registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(registerer)
	if err != nil {
		return nil, fmt.Errorf("registering hub metrics: %w", err)
	}
	in := &Ingester{cfg: cfg, cat: cat, log: logger.With("component", "hub"), m: m, fs: fs,
		mem: memory.DefaultAllocator, cmts: map[string]*committer{}}
	for t, def := range fs.byTable {
		in.cmts[t] = newCommitter(def, cat, cfg.ClientID, cfg, in.log, m, in.publishAcks)
	}
	return in, nil
}

// Run connects to the broker and ingests until ctx is done. It returns after every
// committer has made its last commit attempt and the client has disconnected.
func (in *Ingester) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in.mu.Lock()
	in.runCtx = ctx
	in.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range in.cmts {
		wg.Go(func() { c.run(ctx) })
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
			cancel()
			wg.Wait()
			return fmt.Errorf("connecting to broker %s: %w", in.cfg.Broker, err)
		}
	case <-ctx.Done():
	}
	in.log.Info("hub ingest running", "broker", in.cfg.Broker, "client_id", in.cfg.ClientID, "tables", len(in.cmts))

	<-ctx.Done()
	// Committers make their last commit and publish acks while the client is still up.
	wg.Wait()
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
		// A persistent session keeps batches queued at the broker while the hub restarts.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
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
	// The persistent session keeps earlier subscriptions, so a failure here is logged
	// and the next reconnect subscribes again.
	if !tok.WaitTimeout(30 * time.Second) {
		in.log.Error("subscribing timed out", "err", "no suback within 30s")
		return
	}
	if err := tok.Error(); err != nil {
		in.log.Error("subscribing failed", "err", err)
	}
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
	b, rej := decodeBatch(t, frame, in.fs, in.mem)
	if rej != nil {
		in.reject(rej)
		return
	}
	c := in.cmts[b.hdr.Table] // decodeBatch accepts only declared tables
	select {
	case c.in <- b:
	case <-in.ctx().Done():
		b.release() // not acked: the agent re-sends it to a running hub
	}
}

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
	in.log.Info("agent status", "tenant", t.Tenant, "facility", t.Facility, "agent", t.Agent, "state", s.State,
		"spool_batches", s.SpoolBatches, "spool_bytes", s.SpoolBytes, "in_flight", s.InFlight,
		"files_done", s.FilesDone, "dead_letters", s.DeadLetters, "last_error", s.LastError)
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
