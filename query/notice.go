package query

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/query/engine"
)

// NoticeConfig says where the hubs publish their commit notices (protocol.CommitNotice).
type NoticeConfig struct {
	// Broker is the MQTT broker URL (tcp://host:port) the hubs use.
	Broker   string
	Username string
	Password string
	// ClientID must be unique on the broker. Default medlake-query-<host>-<random>.
	ClientID string
}

// WithCommitNotices subscribes to the hubs' commit notices on the broker, so a commit
// is queryable as soon as the engine has refreshed the table rather than at its next
// poll. The poll stays: notices are QoS 0 and the broker may be away.
func WithCommitNotices(cfg NoticeConfig) Option {
	return func(o *options) { o.notices = &cfg }
}

// noticeListener feeds the hubs' commit notices to the engine.
type noticeListener struct {
	cfg      NoticeConfig
	eng      *engine.Engine
	log      *slog.Logger
	received *prometheus.CounterVec // by outcome: ok, malformed
}

func newNoticeListener(cfg NoticeConfig, eng *engine.Engine, log *slog.Logger, received *prometheus.CounterVec) (*noticeListener, error) {
	if cfg.Broker == "" {
		return nil, fmt.Errorf("query: commit notices need a broker URL")
	}
	if cfg.ClientID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("query: commit notice client id: %w", err)
		}
		cfg.ClientID = "medlake-query-" + sanitizeClientID(host) + "-" + hex.EncodeToString(b[:])
	}
	return &noticeListener{cfg: cfg, eng: eng, log: log.With("broker", cfg.Broker), received: received}, nil
}

func sanitizeClientID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}

// Run listens until ctx is done. A broker that is away is retried forever; meanwhile
// the engine polls. It never fails: without notices queries are only less fresh.
func (l *noticeListener) Run(ctx context.Context) error {
	opts := paho.NewClientOptions().
		AddBroker(l.cfg.Broker).
		SetClientID(l.cfg.ClientID).
		SetUsername(l.cfg.Username).
		SetPassword(l.cfg.Password).
		// Notices are worth nothing once old: no session to keep.
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(false).
		SetOnConnectHandler(l.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			l.log.Warn("commit notice connection lost; polling only until it is back", "err", err)
		})
	client := paho.NewClient(opts)
	tok := client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			// Bad options, not an absent broker (that is retried): queries go on
			// with the poll alone.
			l.log.Error("commit notices off: connecting to the broker failed", "err", err)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	client.Disconnect(250)
	return nil
}

// onConnect subscribes (a clean session loses its subscriptions with the connection)
// and has the engine refresh, for commits whose notices went by while disconnected.
func (l *noticeListener) onConnect(c paho.Client) {
	tok := c.Subscribe(protocol.CommitNoticeSubscription, 0, l.onNotice)
	if !tok.WaitTimeout(30 * time.Second) {
		l.log.Warn("subscribing to commit notices timed out; polling only")
		return
	}
	if err := tok.Error(); err != nil {
		l.log.Warn("subscribing to commit notices failed; polling only", "err", err)
		return
	}
	l.log.Info("subscribed to commit notices", "topic", protocol.CommitNoticeSubscription)
	l.eng.Notify("")
}

func (l *noticeListener) onNotice(_ paho.Client, msg paho.Message) {
	table, err := protocol.ParseCommitNoticeTopic(msg.Topic())
	if err == nil {
		var n protocol.CommitNotice
		if n, err = protocol.DecodeCommitNotice(msg.Payload()); err == nil && n.Table != table {
			err = fmt.Errorf("notice for table %q on the topic of %q", n.Table, table)
		}
	}
	if err != nil {
		l.received.WithLabelValues("malformed").Inc()
		l.log.Debug("ignoring malformed commit notice", "topic", msg.Topic(), "err", err)
		return
	}
	l.received.WithLabelValues("ok").Inc()
	l.eng.Notify(table)
}
