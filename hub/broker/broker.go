package broker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// DefaultListen is the address the embedded broker listens on when none is configured.
const DefaultListen = "127.0.0.1:1883"

// Config configures the embedded broker.
type Config struct {
	// Listen is the TCP address. Default 127.0.0.1:1883; ":0" style picks a free port.
	Listen string `yaml:"listen"`
	// Users, when non-empty, is the only way in: a client must present one of these
	// username/password pairs. When empty, only loopback clients are admitted.
	Users []User `yaml:"users"`
	// StateDir, when set, holds broker.db where sessions, subscriptions and in-flight
	// QoS 1 messages survive a restart. Empty keeps them in memory only.
	StateDir string `yaml:"state_dir"`
}

// User is one username/password pair admitted by the broker.
type User struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Validate reports a configuration the broker cannot start with.
func (c Config) Validate() error {
	for i, u := range c.Users {
		if u.Username == "" || u.Password == "" {
			return fmt.Errorf("broker users[%d]: username and password are both required", i)
		}
	}
	return nil
}

// Broker is the embedded MQTT 3.1.1/5 broker.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	srv    *mqtt.Server
	tcp    *listeners.TCP
	ready  chan struct{} // closed once the listener is bound
	mu     sync.Mutex
	addr   string // guarded by mu; bound address once Run has started listening
	runErr error  // guarded by mu
}

// New builds a broker; Run starts it.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = logger.With("component", "broker")
	caps := mqtt.NewDefaultServerCapabilities()
	mochiLog := slog.New(mochiHandler{logger.Handler()}).With("lib", "mochi")
	srv := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: mochiLog})
	if err := srv.AddHook(&authHook{users: cfg.Users}, nil); err != nil {
		return nil, fmt.Errorf("adding broker auth hook: %w", err)
	}
	if cfg.StateDir != "" {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating broker state dir %s: %w", cfg.StateDir, err)
		}
		path := filepath.Join(cfg.StateDir, "broker.db")
		err := srv.AddHook(&boltStore{Hook: new(bolt.Hook)}, &bolt.Options{Path: path, Options: &bbolt.Options{Timeout: 0, NoSync: false}})
		if err != nil {
			return nil, fmt.Errorf("opening broker session store %s: %w", path, err)
		}
	}
	b := &Broker{cfg: cfg, log: logger, srv: srv, ready: make(chan struct{})}
	b.tcp = listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Listen})
	if err := srv.AddListener(b.tcp); err != nil {
		return nil, fmt.Errorf("adding broker listener %s: %w", cfg.Listen, err)
	}
	return b, nil
}

// Run serves until ctx is done, then disconnects every client and closes the store.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.srv.Serve(); err != nil {
		b.srv.Close()
		close(b.ready)
		return fmt.Errorf("starting embedded broker on %s: %w", b.cfg.Listen, err)
	}
	b.mu.Lock()
	b.addr = b.tcp.Address()
	b.mu.Unlock()
	close(b.ready)
	b.log.Info("broker listening", "addr", b.Addr(), "users", len(b.cfg.Users), "persistent", b.cfg.StateDir != "")
	<-ctx.Done()
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("stopping embedded broker: %w", err)
	}
	b.log.Info("broker stopped")
	return nil
}

// Ready is closed once Run has bound the listener (or failed to).
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addr returns the bound host:port once Ready is closed, else the configured address.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.addr != "" {
		return b.addr
	}
	return b.cfg.Listen
}

// URL returns the tcp:// URL clients connect to.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// authHook admits configured users, or loopback clients when no users are configured.
// mochi refuses every client when no hook provides authentication.
type authHook struct {
	mqtt.HookBase
	users []User
}

func (h *authHook) ID() string { return "medlake-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if len(h.users) == 0 {
		return isLoopback(cl.Net.Remote)
	}
	user, pass := pk.Connect.Username, pk.Connect.Password
	ok := false
	for _, u := range h.users {
		// Compare every entry in constant time so timing does not reveal which names exist.
		uOK := subtle.ConstantTimeCompare(user, []byte(u.Username))
		pOK := subtle.ConstantTimeCompare(pass, []byte(u.Password))
		if uOK&pOK == 1 {
			ok = true
		}
	}
	return ok
}

// OnACLCheck admits every authenticated client to every topic. Per-tenant topic ACLs
// belong to the production broker's configuration.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// boltStore works around mochi v2.7.9's bolt hook, which stores in-flight QoS messages
// without their packet id: restored messages then fail to resend ("protocol violation:
// missing packet id") and are lost. The id is the suffix of the stored key
// ("if_<client>:<packet id>"), so it is restored from there.
type boltStore struct {
	*bolt.Hook
}

func (h *boltStore) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID != 0 {
			continue
		}
		j := strings.LastIndexByte(msgs[i].ID, ':')
		if j < 0 {
			continue
		}
		if id, perr := strconv.ParseUint(msgs[i].ID[j+1:], 10, 16); perr == nil {
			msgs[i].PacketID = uint16(id)
		}
	}
	return msgs, err
}
