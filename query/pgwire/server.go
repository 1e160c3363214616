package pgwire

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
)

// DefaultListen is the default listen address.
const DefaultListen = "127.0.0.1:5433"

// User is a login accepted with a cleartext password.
type User struct {
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
}

// Config configures a Server.
type Config struct {
	// Listen is the TCP address (default 127.0.0.1:5433).
	Listen string `yaml:"listen"`
	// Users are the accepted logins. With none, any user name is trusted,
	// but only on loopback connections.
	Users []User `yaml:"users"`
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

// Server is a PostgreSQL wire protocol server over the engine.
//
// Concurrency: Run owns the listener and one goroutine per connection, and
// waits for all of them before returning. mu guards ln, conns and nextPID.
type Server struct {
	cfg     Config
	eng     SessionOpener
	logger  *slog.Logger
	observe QueryObserver
	auditor Auditor       // nil: statements are not recorded
	ready   chan struct{} // closed once ln is set

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
	seen := map[string]bool{}
	for _, u := range cfg.Users {
		if u.Name == "" || u.Password == "" {
			return nil, errors.New("pgwire: users need a name and a password")
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("pgwire: user %s configured twice", u.Name)
		}
		seen[u.Name] = true
	}
	s := &Server{
		cfg: cfg, eng: eng, logger: logger.With("component", "query/pgwire"),
		observe: func(string, time.Duration) {}, ready: make(chan struct{}),
		conns: map[uint32]*conn{},
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
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

func (s *Server) authenticate(user, password string) bool {
	ok := false
	for _, u := range s.cfg.Users {
		// Compare every entry so timing does not reveal which names exist.
		nameOK := subtle.ConstantTimeCompare([]byte(u.Name), []byte(user))
		passOK := subtle.ConstantTimeCompare([]byte(u.Password), []byte(password))
		if nameOK&passOK == 1 {
			ok = true
		}
	}
	return ok
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
