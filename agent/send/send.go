package send

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/medlake/medlake/protocol"
)

// Spool is what the sender needs from the batch spool. Implementations must be safe for
// concurrent use.
type Spool interface {
	// List returns spooled batch ids, oldest first.
	List() []string
	Get(batchID string) ([]byte, error)
	Has(batchID string) bool
	Delete(batchID string) error
	MoveToDeadLetter(batchID, reason string) error
	// Added returns a channel closed when a batch is next added.
	Added() <-chan struct{}
}

// AckFunc records the hub's answer for a spooled batch before the sender drops the batch
// from the spool. When it fails, the batch stays spooled and is re-sent, so the hub
// answers again. It is called from the sender's goroutine.
type AckFunc func(ctx context.Context, ack protocol.Ack) error

// StatusFunc fills the agent-wide fields of a status report (spool, files, errors); the
// sender adds identity, state, time, in-flight count and events.
type StatusFunc func() protocol.Status

// Config is the sender's MQTT and flow-control setup.
type Config struct {
	Broker   string // tcp://host:port
	Username string
	Password string
	// Tenant, Facility and Agent name the topics; Agent is also the MQTT client id, so the
	// broker keeps one persistent session per agent.
	Tenant, Facility, Agent string
	// MaxInflight bounds batches published and not yet acked by the hub.
	MaxInflight int
	// AckTimeout is the shortest wait for the hub's ack before a batch is re-sent; the
	// wait adapts to the ack latency observed, up to AckTimeoutMax (see ackTimer).
	AckTimeout time.Duration
	// AckTimeoutMax caps the adaptive wait and the backoff of repeated re-sends of one
	// batch. Zero means max(2m, AckTimeout).
	AckTimeoutMax time.Duration
	// StatusInterval is how often status is published besides on events.
	StatusInterval time.Duration
	// MaxReconnectInterval caps the reconnect backoff.
	MaxReconnectInterval time.Duration
	// OnConfig receives each message on the agent's config topic (retained, so also on
	// every subscribe), before the message is acknowledged to the broker. It may be
	// called from several goroutines at once and must not block for long. Nil: the
	// sender does not subscribe to the config topic.
	OnConfig func(payload []byte)
}

// DefaultConfig returns flow-control defaults; identity and broker must still be set.
func DefaultConfig() Config {
	return Config{MaxInflight: 32, AckTimeout: DefaultAckTimeout, AckTimeoutMax: DefaultAckTimeoutMax,
		StatusInterval: 30 * time.Second, MaxReconnectInterval: 10 * time.Second}
}

// Ack timeout defaults. With the hub committing every second, the adaptive wait sits at
// the floor: a batch sent to a hub that died is re-sent, and committed by another, within
// about 5 s plus one commit.
const (
	DefaultAckTimeout    = 5 * time.Second
	DefaultAckTimeoutMax = 2 * time.Minute
)

func (c Config) validate() error {
	for _, f := range []struct{ kind, v string }{{"tenant", c.Tenant}, {"facility", c.Facility}, {"agent", c.Agent}} {
		if err := protocol.ValidateID(f.kind, f.v); err != nil {
			return err
		}
	}
	switch {
	case c.Broker == "":
		return errors.New("broker url is empty")
	case c.MaxInflight < 1:
		return fmt.Errorf("max_inflight %d must be at least 1", c.MaxInflight)
	case c.AckTimeout <= 0:
		return fmt.Errorf("ack_timeout %s must be positive", c.AckTimeout)
	case c.AckTimeoutMax < 0:
		return fmt.Errorf("ack_timeout_max %s must not be negative", c.AckTimeoutMax)
	case c.StatusInterval <= 0:
		return fmt.Errorf("status interval %s must be positive", c.StatusInterval)
	case c.MaxReconnectInterval <= 0:
		return fmt.Errorf("max reconnect interval %s must be positive", c.MaxReconnectInterval)
	}
	return nil
}

// Stats counts what the sender has done since it started.
type Stats struct {
	Published int64 // first sends
	Resent    int64 // re-sends after ack_timeout
	Committed int64
	Rejected  int64
	Ignored   int64 // unknown or duplicate acks
	InFlight  int
	Connected bool
	// AckTimeout is the current first wait for an ack (adapted to observed latency).
	AckTimeout time.Duration
}

// maxPendingEvents bounds events waiting for the next status; the facts behind them are
// kept on disk (state, dead-letter, quarantine), the events only announce them.
const maxPendingEvents = 256

// flight is a batch sent and not yet acked.
type flight struct {
	sentAt   time.Time // last send
	deadline time.Time // re-send after
	sends    int
	// level is the backoff step of the last send (ackTimer.timeout's argument).
	level int
	// table is the table the batch goes to (from its frame header).
	table string
}

// nextLevel is the backoff level of the send about to be made, given when the newest
// batch of the same table that the hub has acked was last sent: 1 for a first send;
// for a re-send, the first re-send's level again when a batch of the same table sent
// after this copy has been acked (the table's hubs work: this copy was lost, e.g. with
// a hub that died holding it), else one level above the last (no later batch of the
// table is acked either: its hubs are down or slow, and copies at the same pace would
// only feed them duplicates to decode and look up while they fall further behind).
// Acks of other tables say nothing about this one: tables commit at their own pace.
func (f *flight) nextLevel(tableAckedSent time.Time) int {
	switch {
	case f.sends <= 1:
		return 1
	case tableAckedSent.After(f.sentAt):
		return 2
	default:
		return f.level + 1
	}
}

type inboundAck struct {
	ack protocol.Ack
	msg mqtt.Message
}

// Sender owns one MQTT client. Run drives it; Event, Stats and InFlight are safe to call
// from any goroutine.
type Sender struct {
	cfg    Config
	spool  Spool
	onAck  AckFunc
	status StatusFunc
	logger *slog.Logger

	batchTopic, ackTopic, statusTopic, configTopic string

	acks   chan inboundAck // paho handlers → Run
	connCh chan struct{}   // paho connect/lost notifications → Run
	kick   chan struct{}   // Event → Run
	stop   chan struct{}   // closed when Run returns, unblocks paho handlers

	mu       sync.Mutex
	inflight map[string]*flight // guarded by mu; by batch id
	// ackedSent is, per table, the last send of the newest-sent batch the hub acked as
	// committed; guarded by mu.
	ackedSent map[string]time.Time
	timer     *ackTimer        // guarded by mu
	events    []protocol.Event // guarded by mu
	dropped   int              // guarded by mu; events beyond maxPendingEvents
	stats     Stats            // guarded by mu
	connected bool             // guarded by mu
}

// New builds a sender. onAck and status may be nil.
func New(cfg Config, sp Spool, onAck AckFunc, status StatusFunc, logger *slog.Logger) (*Sender, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring sender: %w", err)
	}
	if sp == nil {
		return nil, errors.New("configuring sender: spool is nil")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if onAck == nil {
		onAck = func(context.Context, protocol.Ack) error { return nil }
	}
	if status == nil {
		status = func() protocol.Status { return protocol.Status{} }
	}
	return &Sender{
		cfg:         cfg,
		spool:       sp,
		onAck:       onAck,
		status:      status,
		logger:      logger.With("component", "send", "agent", cfg.Agent),
		batchTopic:  protocol.BatchTopic(cfg.Tenant, cfg.Facility, cfg.Agent),
		ackTopic:    protocol.AckTopic(cfg.Tenant, cfg.Facility, cfg.Agent),
		statusTopic: protocol.StatusTopic(cfg.Tenant, cfg.Facility, cfg.Agent),
		configTopic: protocol.ConfigTopic(cfg.Tenant, cfg.Facility, cfg.Agent),
		acks:        make(chan inboundAck, 1024),
		connCh:      make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		inflight:    make(map[string]*flight),
		ackedSent:   make(map[string]time.Time),
		timer:       newAckTimer(cfg.AckTimeout, cmp.Or(cfg.AckTimeoutMax, max(DefaultAckTimeoutMax, cfg.AckTimeout))),
	}, nil
}

// Event queues an event for the next status report, which is published promptly.
func (s *Sender) Event(ev protocol.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	s.mu.Lock()
	if len(s.events) >= maxPendingEvents {
		s.events = s.events[1:]
		s.dropped++
	}
	s.events = append(s.events, ev)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stats returns counters and the current in-flight count.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.InFlight = len(s.inflight)
	st.Connected = s.connected
	st.AckTimeout = s.timer.base()
	return st
}

func (s *Sender) notifyConn(connected bool) {
	s.mu.Lock()
	s.connected = connected
	s.mu.Unlock()
	select {
	case s.connCh <- struct{}{}:
	default:
	}
}

func (s *Sender) isConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

// handleMessage runs on paho's goroutines. The message is acknowledged to the broker
// only after Run has recorded it, so an ack received just before a crash is redelivered
// through the persistent session.
func (s *Sender) handleMessage(_ mqtt.Client, msg mqtt.Message) {
	if msg.Topic() == s.configTopic && s.cfg.OnConfig != nil {
		s.cfg.OnConfig(msg.Payload())
		msg.Ack()
		return
	}
	if msg.Topic() != s.ackTopic {
		s.logger.Debug("ignoring message on unexpected topic", "topic", msg.Topic())
		msg.Ack()
		return
	}
	ack, err := protocol.DecodeAck(msg.Payload())
	if err != nil {
		s.logger.Warn("ignoring undecodable ack", "err", err)
		msg.Ack()
		return
	}
	select {
	case s.acks <- inboundAck{ack: ack, msg: msg}:
	case <-s.stop:
	}
}

func (s *Sender) clientOptions() (*mqtt.ClientOptions, error) {
	will, err := s.encodeStatus(protocol.StateOffline, nil)
	if err != nil {
		return nil, err
	}
	o := mqtt.NewClientOptions().
		AddBroker(s.cfg.Broker).
		SetClientID(s.cfg.Agent).
		SetCleanSession(false).
		SetResumeSubs(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(s.cfg.MaxReconnectInterval).
		SetKeepAlive(30*time.Second).
		SetConnectTimeout(30*time.Second).
		SetOrderMatters(false).
		SetAutoAckDisabled(true).
		SetBinaryWill(s.statusTopic, will, 1, true).
		SetDefaultPublishHandler(s.handleMessage).
		SetOnConnectHandler(func(c mqtt.Client) {
			// With a persistent session the broker keeps the subscription, but the first
			// connect must create it, and re-subscribing is harmless.
			topics := map[string]byte{s.ackTopic: 1}
			if s.cfg.OnConfig != nil {
				topics[s.configTopic] = 1
			}
			tok := c.SubscribeMultiple(topics, s.handleMessage)
			if tok.WaitTimeout(30*time.Second) && tok.Error() != nil {
				s.logger.Error("subscribing to acks and config failed", "topic", s.ackTopic, "err", tok.Error())
			}
			s.logger.Info("connected to broker", "broker", s.cfg.Broker)
			s.notifyConn(true)
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.logger.Warn("connection to broker lost", "broker", s.cfg.Broker, "err", err)
			s.notifyConn(false)
		})
	if s.cfg.Username != "" {
		o.SetUsername(s.cfg.Username).SetPassword(s.cfg.Password)
	}
	return o, nil
}

func (s *Sender) encodeStatus(state string, events []protocol.Event) ([]byte, error) {
	st := s.status()
	st.Agent, st.Tenant, st.Facility = s.cfg.Agent, s.cfg.Tenant, s.cfg.Facility
	st.State = state
	st.Time = time.Now().UTC()
	st.InFlight = s.Stats().InFlight
	st.Events = events
	b, err := protocol.EncodeStatus(st)
	if err != nil {
		return nil, fmt.Errorf("encoding %s status: %w", state, err)
	}
	return b, nil
}

// Run connects (retrying forever with backoff), sends spooled batches and processes acks
// until ctx ends. On the way out it publishes an "offline" status and disconnects.
func (s *Sender) Run(ctx context.Context) error {
	defer close(s.stop)
	opts, err := s.clientOptions()
	if err != nil {
		return err
	}
	client := mqtt.NewClient(opts)
	// With ConnectRetry the token completes only once connected; the handlers report it.
	client.Connect()
	defer func() {
		if s.isConnected() {
			if b, err := s.encodeStatus(protocol.StateOffline, s.takeEvents()); err == nil {
				client.Publish(s.statusTopic, 1, true, b).WaitTimeout(5 * time.Second)
			}
		}
		client.Disconnect(500)
	}()

	statusTick := time.NewTicker(s.cfg.StatusInterval)
	defer statusTick.Stop()
	resend := time.NewTimer(time.Hour)
	defer resend.Stop()
	for {
		added := s.spool.Added()
		wait := time.Hour
		if s.isConnected() {
			s.fill(client)
			// Re-send deadlines only matter while connected; after a reconnect expired
			// batches go out at once.
			wait = s.untilNextDeadline()
		}
		resend.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case in := <-s.acks:
			s.handleAck(ctx, in)
		case <-added:
		case <-resend.C:
			if s.isConnected() {
				s.resendExpired(client)
			}
		case <-s.connCh:
			if s.isConnected() {
				s.publishStatus(client)
				s.resendExpired(client)
			}
		case <-s.kick:
			if s.isConnected() {
				s.publishStatus(client)
			}
		case <-statusTick.C:
			if s.isConnected() {
				s.publishStatus(client)
			}
		}
	}
}

func (s *Sender) takeEvents() []protocol.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.events
	s.events = nil
	if s.dropped > 0 {
		s.logger.Warn("status events dropped while disconnected", "dropped", s.dropped)
		s.dropped = 0
	}
	return ev
}

func (s *Sender) publishStatus(client mqtt.Client) {
	events := s.takeEvents()
	b, err := s.encodeStatus(protocol.StateOnline, events)
	if err != nil {
		s.logger.Error("encoding status failed", "err", err)
		return
	}
	// Not waited for: a lost status is replaced by the next one, and waiting here would
	// stall acks.
	client.Publish(s.statusTopic, 1, true, b)
}

// fill publishes spooled batches that are not in flight until the window is full.
func (s *Sender) fill(client mqtt.Client) {
	s.mu.Lock()
	room := s.cfg.MaxInflight - len(s.inflight)
	s.mu.Unlock()
	if room <= 0 {
		return
	}
	for _, id := range s.spool.List() {
		if room == 0 {
			return
		}
		s.mu.Lock()
		_, busy := s.inflight[id]
		s.mu.Unlock()
		if busy {
			continue
		}
		if s.publish(client, id, false) {
			room--
		}
	}
}

func (s *Sender) publish(client mqtt.Client, id string, resend bool) bool {
	frame, err := s.spool.Get(id)
	if err != nil {
		// Acked or dead-lettered meanwhile, or unreadable: the spool logged the latter.
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		s.logger.Debug("skipping batch not readable from spool", "batch_id", id, "err", err)
		return false
	}
	// The token is not awaited: the broker's PUBACK is not the hub's ack, and the re-send
	// timer covers a publish that never reaches the broker.
	client.Publish(s.batchTopic, 1, false, frame)
	s.mu.Lock()
	f := s.inflight[id]
	if f == nil {
		f = &flight{table: protocol.PeekBatchTable(frame)}
		s.inflight[id] = f
	}
	f.sends++
	f.level = f.nextLevel(s.ackedSent[f.table])
	f.sentAt = time.Now()
	wait := s.timer.timeout(f.level)
	f.deadline = f.sentAt.Add(wait)
	sends := f.sends
	if resend {
		s.stats.Resent++
	} else {
		s.stats.Published++
	}
	s.mu.Unlock()
	if resend {
		s.logger.Info("re-sending batch without hub ack", "batch_id", id, "sends", sends, "next_in", wait.String())
	} else {
		s.logger.Debug("batch published", "batch_id", id, "bytes", len(frame))
	}
	return true
}

func (s *Sender) untilNextDeadline() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := time.Hour
	now := time.Now()
	for _, f := range s.inflight {
		next = min(next, max(f.deadline.Sub(now), 0))
	}
	return next
}

func (s *Sender) resendExpired(client mqtt.Client) {
	now := time.Now()
	s.mu.Lock()
	var due []string
	for id, f := range s.inflight {
		if !f.deadline.After(now) {
			due = append(due, id)
		}
	}
	s.mu.Unlock()
	for _, id := range due {
		s.publish(client, id, true)
	}
}

func (s *Sender) handleAck(ctx context.Context, in inboundAck) {
	ack := in.ack
	s.mu.Lock()
	if f := s.inflight[ack.BatchID]; f != nil {
		if f.sends == 1 {
			s.timer.observe(time.Since(f.sentAt))
		}
		if ack.Status == protocol.AckCommitted && f.sentAt.After(s.ackedSent[f.table]) {
			s.ackedSent[f.table] = f.sentAt
		}
	}
	delete(s.inflight, ack.BatchID)
	s.mu.Unlock()
	if ack.BatchID == "" || !s.spool.Has(ack.BatchID) {
		s.mu.Lock()
		s.stats.Ignored++
		s.mu.Unlock()
		s.logger.Debug("ignoring ack for a batch not in the spool", "batch_id", ack.BatchID, "status", string(ack.Status))
		in.msg.Ack()
		return
	}
	if err := s.onAck(ctx, ack); err != nil {
		// Leave the batch spooled: it is re-sent after the timeout and the hub answers
		// again, so this ack message itself need not be kept.
		s.logger.Error("recording hub ack failed", "batch_id", ack.BatchID, "err", err)
		s.mu.Lock()
		now := time.Now()
		s.inflight[ack.BatchID] = &flight{sentAt: now, deadline: now.Add(s.timer.base()), sends: 1, level: 1}
		s.mu.Unlock()
		in.msg.Ack()
		return
	}
	switch ack.Status {
	case protocol.AckCommitted:
		if err := s.spool.Delete(ack.BatchID); err != nil {
			s.logger.Error("deleting committed batch from spool failed", "batch_id", ack.BatchID, "err", err)
		}
		s.mu.Lock()
		s.stats.Committed++
		s.mu.Unlock()
	case protocol.AckRejected:
		if err := s.spool.MoveToDeadLetter(ack.BatchID, ack.Reason); err != nil {
			s.logger.Error("moving rejected batch to dead-letter failed", "batch_id", ack.BatchID, "err", err)
		} else {
			s.Event(protocol.Event{Kind: protocol.EventDeadLetter, BatchID: ack.BatchID, Reason: ack.Reason})
		}
		s.mu.Lock()
		s.stats.Rejected++
		s.mu.Unlock()
	}
	in.msg.Ack()
}
