package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/query/internal/testlake"
)

func limitedEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	e, err := New(context.Background(), cfg, testlake.Catalog(t), testlake.Namespace, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func runOne(ctx context.Context, t *testing.T, e *Engine, q string) error {
	t.Helper()
	sess, err := e.Session(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := sess.Prepare(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return st.Query(ctx, nil, func([]driver.Value) error { return nil })
}

func TestStatementTimeout(t *testing.T) {
	e := limitedEngine(t, Config{StatementTimeout: 300 * time.Millisecond})
	err := runOne(context.Background(), t, e, "SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3")
	var ee *Error
	if !errors.As(err, &ee) || ee.Code != CodeQueryCanceled || !strings.Contains(err.Error(), "statement timeout (300ms)") {
		t.Fatalf("got %v, want SQLSTATE 57014 naming the timeout", err)
	}
	if SQLState(err) != "57014" {
		t.Errorf("SQLState = %s", SQLState(err))
	}
	// A short statement is not affected.
	if err := runOne(context.Background(), t, e, "SELECT 42"); err != nil {
		t.Fatal(err)
	}
}

func TestMaxConcurrent(t *testing.T) {
	e := limitedEngine(t, Config{MaxConcurrent: 1})
	release, err := e.acquire(context.Background()) // another statement holds the only slot
	if err != nil {
		t.Fatal(err)
	}
	// The deadline covers preparing the statement too (which reads DuckDB's catalog and
	// can take a while on a loaded machine) before the wait for a slot runs it out.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = runOne(ctx, t, e, "SELECT 1")
	if SQLState(err) != CodeTooManyConnections || !strings.Contains(err.Error(), "1 statement slots") {
		t.Fatalf("got %v, want SQLSTATE 53300 naming the slots", err)
	}
	release()
	if err := runOne(context.Background(), t, e, "SELECT 1"); err != nil {
		t.Fatalf("after the slot freed: %v", err)
	}
}

func TestMemoryLimit(t *testing.T) {
	e := limitedEngine(t, Config{MemoryLimit: "64MB"})
	err := runOne(context.Background(), t, e, "SELECT list(i) FROM range(200000000) t(i)")
	if SQLState(err) != CodeOutOfMemory {
		t.Fatalf("got %v (SQLSTATE %s), want 53200", err, SQLState(err))
	}
	if err := runOne(context.Background(), t, e, "SELECT 1"); err != nil {
		t.Fatalf("the engine after an out-of-memory query: %v", err)
	}
}
