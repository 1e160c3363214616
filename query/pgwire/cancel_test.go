package pgwire

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// TestCancelRequest cancels a long query through a CancelRequest on a second
// connection (what pgx does on context cancellation with this handler) and
// checks the session survives.
func TestCancelRequest(t *testing.T) {
	addr, srv := startServer(t, Config{})
	cfg, err := pgx.ParseConfig(dsn(addr, "analyst", ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: time.Minute}
	}
	ctx := context.Background()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)

	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		// Cancel once the server runs the statement; it cannot finish on its own.
		for !srv.running() {
			runtime.Gosched()
		}
		cancel()
	})
	_, err = c.Exec(qctx, `SELECT count(*) FROM range(1000000000000) a, range(10) b`)
	wg.Wait()
	var pgErr *pgconn.PgError
	if err == nil {
		t.Fatal("long query was not cancelled")
	}
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Errorf("cancelled query: %v, want SQLSTATE 57014", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
		t.Errorf("after cancel: %d, %v", n, err)
	}
}

// running reports whether any connection is executing a statement.
func (s *Server) running() bool {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.runMu.Lock()
		r := c.running != nil
		c.runMu.Unlock()
		if r {
			return true
		}
	}
	return false
}
