package pgwire

import (
	"bytes"
	"context"
	"database/sql/driver"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medlake/medlake/query/engine"
)

// Defaults for the limits on open results.
const (
	// DefaultMaxCursors bounds the cursors and suspended portals one
	// connection keeps open.
	DefaultMaxCursors = 8
	// DefaultCursorIdleTimeout closes a cursor or suspended portal that no
	// FETCH or Execute has read for that long.
	DefaultCursorIdleTimeout = 5 * time.Minute
)

// resultStream is a result read a piece at a time across messages: a DECLAREd
// cursor or a portal executed with a row limit. An engine statement's rows
// come from an engine.Cursor (its own DuckDB connection, streaming); a
// session command's few rows are kept whole.
//
// The connection's goroutine uses it; the idle timer closes it from its own
// goroutine. mu guards every field below it.
type resultStream struct {
	what string // `cursor "c"`, `portal "p"`: for errors and logs
	cols []column

	mu       sync.Mutex
	cur      *engine.Cursor // nil: rows
	rows     [][]driver.Value
	sent     int64 // rows handed to the client (FETCH, Execute) or skipped (MOVE)
	finished bool  // exhausted, failed or closed: resources released, audit recorded
	gone     error // set when closed by the idle timeout: what the next use reports
	finish   func(rows int64, err error)
	idle     *time.Timer // nil: no idle timeout
	timeout  time.Duration
	started  time.Time
	observe  QueryObserver
	open     *atomic.Int64 // the server's count of open results; nil until counted
}

// openStreams counts the cursors and suspended portals holding an engine
// result (and so a DuckDB connection).
func (c *conn) openStreams() int {
	n := 0
	for _, pt := range c.portals {
		if pt.stream != nil && pt.stream.holdsEngine() {
			n++
		}
	}
	for _, cur := range c.cursors {
		if cur.stream.holdsEngine() {
			n++
		}
	}
	return n
}

// openStream starts p for reading a piece at a time. A non-empty tag means p
// is a session command with no rows (BEGIN, SET, ...): it has run, nothing
// is kept, and the tag completes the command.
func (c *conn) openStream(ctx context.Context, what string, p *prepared, args []any) (_ *resultStream, tag string, err error) {
	// The bound is on results that hold a DuckDB connection; a session
	// command's few rows do not.
	if max := c.s.cfg.MaxCursors; p.st != nil && max > 0 && c.openStreams() >= max {
		return nil, "", errorf("53400", "too many open cursors and suspended portals on this connection (max_open_cursors = %d); close one (CLOSE, or finish reading it) first", max)
	}
	finish, err := c.auditBegin(ctx, p)
	if err != nil {
		return nil, "", err
	}
	s := &resultStream{what: what, cols: p.cols, finish: finish, timeout: c.s.cfg.CursorIdleTimeout,
		started: time.Now(), observe: c.s.observe}
	defer func() {
		if err != nil {
			s.close(err)
		}
	}()
	switch {
	case p.st != nil:
		if p.args != nil {
			args = p.args // bound by SQL EXECUTE
		}
		if args == nil && len(p.paramOIDs) > 0 {
			return nil, "", errorf("42P02", "there is no parameter $1")
		}
		err = c.run(ctx, func(ctx context.Context) error {
			var err error
			s.cur, err = p.st.OpenCursor(ctx, args)
			return err
		})
		if err != nil {
			return nil, "", err
		}
	case p.fetch != nil:
		// FETCH run through a row-limited portal: its rows (at most the
		// count it names, or what is left of the cursor) are kept.
		size := 0
		if _, err = p.fetch(ctx, func(row []driver.Value) error {
			cp := make([]driver.Value, len(row))
			for i, v := range row {
				if b, ok := v.([]byte); ok {
					v = bytes.Clone(b)
				}
				cp[i] = v
				size += valueSize(v)
			}
			if size > maxBufferedBytes {
				return errorf("54000", "FETCH through a row-limited portal keeps its rows and they exceed %d MiB; FETCH fewer rows at a time", maxBufferedBytes>>20)
			}
			s.rows = append(s.rows, cp)
			return nil
		}); err != nil {
			return nil, "", err
		}
	default:
		v := p.virtual
		if p.run != nil {
			if v, err = p.run(ctx); err != nil {
				return nil, "", err
			}
		}
		if v.tag != "" && len(p.cols) == 0 {
			s.close(nil)
			return nil, v.tag, nil
		}
		s.rows = v.rows
	}
	if s.timeout > 0 {
		s.idle = time.AfterFunc(s.timeout, func() { s.expire(c) })
	}
	s.open = &c.s.openResults
	s.open.Add(1)
	return s, "", nil
}

// maxBufferedBytes bounds the rows a FETCH run through a row-limited portal
// keeps.
const maxBufferedBytes = 256 << 20

func valueSize(v driver.Value) int {
	switch x := v.(type) {
	case string:
		return 16 + len(x)
	case []byte:
		return 24 + len(x)
	default:
		return 16
	}
}

// holdsEngine reports whether the stream still holds an engine result.
func (s *resultStream) holdsEngine() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.finished && s.cur != nil
}

// fetch reads up to max rows (all that remain when max <= 0) and calls send
// with each. It returns whether rows may remain. A stream that ended gives no
// more rows; one closed by the idle timeout gives that error.
func (s *resultStream) fetch(ctx context.Context, c *conn, max int64, send func([]driver.Value) error) (more bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone != nil {
		return false, s.gone
	}
	if s.finished {
		return false, nil
	}
	if s.idle != nil {
		s.idle.Stop()
	}
	counted := func(row []driver.Value) error {
		s.sent++
		return send(row)
	}
	if s.cur != nil {
		err = c.run(ctx, func(ctx context.Context) error {
			var err error
			more, err = s.cur.Fetch(ctx, max, counted)
			return err
		})
	} else {
		n := int64(len(s.rows))
		if max > 0 && max < n {
			n = max
		}
		for _, row := range s.rows[:n] {
			if err = counted(row); err != nil {
				break
			}
		}
		s.rows = s.rows[n:]
		more = len(s.rows) > 0
	}
	if err != nil || !more {
		s.closeLocked(err)
		return more, err
	}
	if s.idle != nil {
		s.idle.Reset(s.timeout)
	}
	return more, nil
}

// close releases the result and records the statement's end. Safe to call
// twice and from any goroutine.
func (s *resultStream) close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(err)
}

func (s *resultStream) closeLocked(err error) {
	if s.idle != nil {
		s.idle.Stop()
	}
	if s.finished {
		return
	}
	s.finished = true
	s.rows = nil
	if s.open != nil {
		s.open.Add(-1)
	}
	if s.cur != nil {
		s.cur.Close()
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	s.observe(outcome, time.Since(s.started))
	s.finish(s.sent, err)
}

// expire closes a stream no one read for the idle timeout.
func (s *resultStream) expire(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return
	}
	s.gone = errorf("55000", "%s was closed after %s without being read (cursor_idle_timeout)", s.what, s.timeout)
	c.logger.Info("pgwire result closed after idle timeout", "what", s.what, "rows_sent", s.sent)
	s.closeLocked(s.gone)
}

// closeStreams closes the portals' results and, with cursors, the cursors
// that do not outlive the transaction (all when rollback).
func (c *conn) endOfTransaction(rollback bool) {
	for name, pt := range c.portals {
		if pt.stream != nil {
			pt.stream.close(nil)
		}
		delete(c.portals, name)
	}
	c.closeCursors(func(cur *cursor) bool { return !cur.hold || rollback })
}

// closeCursors closes and forgets the cursors for which drop is true.
func (c *conn) closeCursors(drop func(*cursor) bool) {
	for name, cur := range c.cursors {
		if drop(cur) {
			cur.stream.close(nil)
			delete(c.cursors, name)
		}
	}
}

// dropPortal closes and forgets a portal.
func (c *conn) dropPortal(name string) {
	if pt := c.portals[name]; pt != nil && pt.stream != nil {
		pt.stream.close(nil)
	}
	delete(c.portals, name)
}

func portalWhat(name string) string {
	if name == "" {
		return "the unnamed portal"
	}
	return fmt.Sprintf("portal %q", name)
}

// rowsSent is how many rows the stream handed out.
func (s *resultStream) rowsSent() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}
