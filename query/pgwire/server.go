package pgwire

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medlake/medlake/query/audit"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
)

// DefaultListen is the default listen address.
const DefaultListen = "127.0.0.1:5433"

// User is a login configured with its password. The server keeps only its
// SCRAM-SHA-256 verifier; configured users read every tenant's rows.
type User struct {
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
}

// Config configures a Server.
type Config struct {
	// Listen is the TCP address (default 127.0.0.1:5433).
	Listen string `yaml:"listen"`
	// Users are logins from the configuration. With none and no login store
	// (WithAuthStore), any user name is trusted, but only on loopback
	// connections.
	Users []User `yaml:"users"`
	// TLSCertFile and TLSKeyFile (PEM) enable TLS: SSLRequest is answered
	// 'S'. Without them it is answered 'N'.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// RequireTLS refuses clients on non-loopback addresses that do not use
	// TLS. It needs TLSCertFile and TLSKeyFile.
	RequireTLS bool `yaml:"require_tls"`
	// TrustLoopback admits a user name the login store does not know, on a
	// loopback connection and with no password, as an admin (single-machine
	// setups). Known users always prove their password.
	TrustLoopback bool `yaml:"-"`
	// MaxCursors bounds the cursors (DECLARE) and suspended portals
	// (Execute with a row limit) one connection keeps open at once; each
	// holds a DuckDB connection and its query's working memory. Default 8;
	// negative: no bound.
	MaxCursors int `yaml:"max_open_cursors"`
	// CursorIdleTimeout closes a cursor or suspended portal that nothing
	// read for that long (SQLSTATE 55000 on its next use). Default 5m;
	// negative: never.
	CursorIdleTimeout time.Duration `yaml:"cursor_idle_timeout"`
}

// Validate reports configuration errors.
func (c Config) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, u := range c.Users {
		if u.Name == "" || u.Password == "" {
			errs = append(errs, fmt.Errorf("pgwire: users[%d] needs a name and a password", i))
		}
		if seen[u.Name] {
			errs = append(errs, fmt.Errorf("pgwire: user %s configured twice", u.Name))
		}
		seen[u.Name] = true
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("pgwire: tls_cert_file and tls_key_file go together"))
	}
	if c.RequireTLS && c.TLSCertFile == "" {
		errs = append(errs, errors.New("pgwire: require_tls needs tls_cert_file and tls_key_file"))
	}
	return errors.Join(errs...)
}

// SessionOpener opens engine sessions reading as a principal; *engine.Engine
// implements it. It must be safe for concurrent use.
type SessionOpener interface {
	Session(ctx context.Context, principal auth.Principal) (*engine.Session, error)
}

// QueryObserver is told the outcome ("ok", "error", "refused") and duration
// of every statement a client runs. It must be safe for concurrent use.
type QueryObserver func(outcome string, elapsed time.Duration)

// Option configures optional Server behaviour.
type Option func(*Server)

// WithQueryObserver sets the statement observer (for metrics).
func WithQueryObserver(o QueryObserver) Option { return func(s *Server) { s.observe = o } }

// WithAuthStore checks logins against store (SCRAM-SHA-256) instead of
// Config.Users; configuring both is an error.
func WithAuthStore(store auth.Store) Option { return func(s *Server) { s.store = store } }

// Server is a PostgreSQL wire protocol server over the engine.
//
// Concurrency: Run owns the listener and one goroutine per connection, and
// waits for all of them before returning. mu guards ln, conns and nextPID.
type Server struct {
	cfg      Config
	eng      SessionOpener
	logger   *slog.Logger
	observe  QueryObserver
	store    auth.Store      // nil: trust on loopback
	tls      *tls.Config     // nil: no TLS
	mockKey  []byte          // salts the verifiers of unknown users
	auditLog audit.Log       // nil: statements are not recorded
	audit    *audit.Recorder // over auditLog; set by New
	ready    chan struct{}   // closed once ln is set
	// openResults counts the cursors and suspended portals holding a
	// result, on every connection.
	openResults atomic.Int64

	mu      sync.Mutex
	ln      net.Listener
	conns   map[uint32]*conn // by process id, for CancelRequest
	nextPID uint32
}

// New validates cfg and returns a Server; Run starts it.
func New(cfg Config, eng SessionOpener, logger *slog.Logger, opts ...Option) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxCursors == 0 {
		cfg.MaxCursors = DefaultMaxCursors
	}
	if cfg.CursorIdleTimeout == 0 {
		cfg.CursorIdleTimeout = DefaultCursorIdleTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, eng: eng, logger: logger.With("component", "query/pgwire"),
		observe: func(string, time.Duration) {}, ready: make(chan struct{}),
		conns: map[uint32]*conn{}, mockKey: make([]byte, 32),
	}
	if _, err := rand.Read(s.mockKey); err != nil {
		return nil, fmt.Errorf("pgwire: %w", err)
	}
	for _, o := range opts {
		o(s)
	}
	s.audit = audit.NewRecorder(s.auditLog, auditProtocol, s.logger)
	if len(cfg.Users) > 0 {
		if s.store != nil {
			return nil, errors.New("pgwire: configure users or a login store, not both")
		}
		store, err := configStore(cfg.Users)
		if err != nil {
			return nil, err
		}
		s.store = store
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("pgwire: loading TLS certificate %s: %w", cfg.TLSCertFile, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return s, nil
}

// configStore turns the configured users into a login store. Configured
// users predate tenants: each reads every tenant's rows.
func configStore(users []User) (*auth.StaticStore, error) {
	logins := make(map[string]auth.Login, len(users))
	for _, u := range users {
		l, err := auth.PasswordLogin(auth.Principal{User: u.Name, Admin: true}, u.Password)
		if err != nil {
			return nil, fmt.Errorf("pgwire: user %s: %w", u.Name, err)
		}
		logins[u.Name] = l
	}
	return auth.NewStaticStore(logins), nil
}

// Run listens on cfg.Listen and serves until ctx is done; it then closes the
// listener and every connection (cancelling their queries) and waits for
// the connection goroutines to end.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Listen, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	close(s.ready)
	s.logger.Info("pgwire listening", "addr", ln.Addr().String())

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	var acceptErr error
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("accepting pgwire connection: %w", err)
			}
			break
		}
		wg.Go(func() { s.serve(ctx, nc) })
	}
	cancel()
	wg.Wait()
	return acceptErr
}

// Addr returns the listen address once Run has started listening, blocking
// until then or until ctx is done.
func (s *Server) Addr(ctx context.Context) (net.Addr, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ln.Addr(), nil
}

func (s *Server) register(c *conn) (pid uint32, secret []byte) {
	secret = make([]byte, 4)
	_, _ = rand.Read(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextPID++
	pid = s.nextPID
	s.conns[pid] = c
	return pid, secret
}

func (s *Server) unregister(pid uint32) {
	s.mu.Lock()
	delete(s.conns, pid)
	s.mu.Unlock()
}

// cancelQuery handles a CancelRequest: the running statement of the
// connection with that key is interrupted; a wrong key does nothing, as in
// PostgreSQL.
func (s *Server) cancelQuery(pid uint32, secret []byte) {
	s.mu.Lock()
	c := s.conns[pid]
	s.mu.Unlock()
	if c == nil || subtle.ConstantTimeCompare(c.secret, secret) != 1 {
		return
	}
	c.cancelRunning()
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
