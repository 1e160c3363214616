package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync"
	"time"
	"unsafe"

	bindings "github.com/duckdb/duckdb-go-bindings"
	"github.com/duckdb/duckdb-go/v2"
	"github.com/duckdb/duckdb-go/v2/mapping"
)

// Results stream out of DuckDB: a statement's rows are computed chunk by
// chunk (2048 rows) as Statement.Query and Cursor.Fetch read them, so what a
// result holds in memory, in DuckDB and in Go, does not grow with its size.
//
// DuckDB offers two kinds of result: a materialized one, computed whole and
// held in memory (outside memory_limit) before its first row can be read, and
// a streaming one, whose last pipeline runs as chunks are fetched. duckdb-go
// always asks for the materialized kind, and its rows report a streaming
// result that fails midway as if it had ended. Its mapping layer calls the C
// API through package variables, so the engine routes the call that starts a
// prepared query through streamingHook, which asks for a streaming result
// for the statements registered in streamed: those that Query and
// OpenCursor run, and which check the result's error at its end (endErr).
// Every other query of the process (metadata queries, Engine.Query) stays
// materialized as duckdb-go expects.
//
// Reaching duckdb-go's statement, connection and result handles takes three
// unexported fields, found by name and type (ducklayout); if a duckdb-go
// upgrade moves them, nothing streams and results are materialized as
// before, which TestResultsStream reports.
//
// What streaming changes: a connection runs one query at a time, and running
// anything else on it (even preparing) ends the result it streams. A
// Session's statements run one after another on its connection; a Cursor,
// which stays open while other statements run, reads on a connection of its
// own.

// ducklayout locates the handles inside duckdb-go's types: the prepared
// statement in a Stmt, the C connection in a Conn (for duckdb_interrupt:
// duckdb-go interrupts a query only while it starts, and a streaming result
// does its work in each fetch) and the result in its rows.
type ducklayout struct {
	stmtOffset, connOffset uintptr
}

// layout is found once, at init, and never changes; nil when duckdb-go's
// types lack a field: then nothing streams.
var layout = findLayout()

func findLayout() *ducklayout {
	sf, ok1 := reflect.TypeFor[duckdb.Stmt]().FieldByName("preparedStmt")
	cf, ok2 := reflect.TypeFor[duckdb.Conn]().FieldByName("conn")
	if !ok1 || !ok2 || sf.Type != reflect.TypeFor[*mapping.PreparedStatement]() || cf.Type != reflect.TypeFor[mapping.Connection]() {
		return nil
	}
	// The result's field is in duckdb-go's unexported rows type: endErr
	// finds it on the rows it is given.
	return &ducklayout{stmtOffset: sf.Offset, connOffset: cf.Offset}
}

// streamed holds the C handles of the prepared statements being started as
// streaming results. It is process-wide because duckdb-go's hook is.
var streamed sync.Map // unsafe.Pointer -> struct{}

func init() {
	if layout == nil {
		return
	}
	mapping.PendingPrepared = streamingHook
}

func streamingHook(ps mapping.PreparedStatement, out *mapping.PendingResult) mapping.State {
	if _, ok := streamed.Load(ps.Ptr); ok {
		return bindings.PendingPreparedStreaming(ps, out)
	}
	return bindings.PendingPrepared(ps, out)
}

// queryStreaming runs stmt as a streaming result when the layout allows,
// else as duckdb-go's materialized one.
func queryStreaming(ctx context.Context, stmt *duckdb.Stmt, args []driver.NamedValue) (driver.Rows, error) {
	if layout == nil {
		return stmt.QueryContext(ctx, args)
	}
	ps := *(**mapping.PreparedStatement)(unsafe.Add(unsafe.Pointer(stmt), layout.stmtOffset))
	if ps == nil {
		return stmt.QueryContext(ctx, args) // closed: duckdb-go reports it
	}
	streamed.Store(ps.Ptr, struct{}{})
	defer streamed.Delete(ps.Ptr)
	return stmt.QueryContext(ctx, args)
}

// endErr tells a result that ended from one that failed: duckdb-go's rows
// report both as io.EOF. It returns the result's error, if any.
func endErr(rows driver.Rows) error {
	v := reflect.ValueOf(rows)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("cannot check the end of a %T result", rows)
	}
	f, ok := v.Type().Elem().FieldByName("res")
	if !ok || f.Type != reflect.TypeFor[mapping.Result]() {
		// A streamed result whose end cannot be checked may be cut short:
		// refuse it rather than send it as complete.
		return fmt.Errorf("cannot check the end of a %T result", rows)
	}
	res := (*mapping.Result)(unsafe.Add(v.UnsafePointer(), f.Offset))
	if msg := mapping.ResultError(res); msg != "" {
		return &duckdb.Error{Type: duckdb.ErrorType(mapping.ResultErrorType(res)), Msg: msg}
	}
	return nil
}

// errFailedMidStream replaces DuckDB's interrupt error when nothing
// interrupted the query: a worker thread's failure interrupts the others,
// and a streaming result may report that interruption instead of the
// failure itself.
var errFailedMidStream = &Error{Code: "XX000", Msg: "the query failed while computing its rows and DuckDB reported only that it was interrupted; rows after this point were not sent"}

// streamErr is err, the end of a read, with an interruption nobody asked
// for reported as errFailedMidStream.
func streamErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr // DuckDB's "INTERRUPT Error" is the cancellation
	}
	var de *duckdb.Error
	if errors.As(err, &de) && de.Type == duckdb.ErrorTypeInterrupt {
		return &Error{Code: errFailedMidStream.Code, Msg: errFailedMidStream.Msg, Err: err}
	}
	return err
}

// checkEvery is how many rows are read between checks of the context.
const checkEvery = 1024

// interruptOnDone interrupts the query running on dc once ctx is done, and
// again every interruptEvery until stop is called (DuckDB forgets an
// interrupt that arrives between two tasks). stop waits for the watcher.
func interruptOnDone(ctx context.Context, dc any) (stop func()) {
	c, ok := dc.(*duckdb.Conn)
	if !ok || layout == nil || ctx.Done() == nil {
		return func() {}
	}
	h := *(*mapping.Connection)(unsafe.Add(unsafe.Pointer(c), layout.connOffset))
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTicker(interruptEvery)
		defer t.Stop()
		for {
			mapping.Interrupt(h)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

const interruptEvery = 200 * time.Millisecond

// readRows calls fn for each row of rows until it ends (io.EOF), max rows
// were read (max > 0), fn fails or ctx is done. It returns whether rows may
// remain.
func readRows(ctx context.Context, rows driver.Rows, dest []driver.Value, max int64, fn func([]driver.Value) error) (more bool, err error) {
	for n := int64(0); max <= 0 || n < max; n++ {
		if n%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return false, err
			}
		}
		if err := rows.Next(dest); err != nil {
			if errors.Is(err, io.EOF) {
				err = endErr(rows)
			}
			if err != nil {
				return false, streamErr(ctx, err)
			}
			return false, nil
		}
		if err := fn(dest); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Cursor is a statement's result read a piece at a time, across other
// statements of the same session: a PostgreSQL cursor or a portal suspended
// between row-limited executions. It reads on a DuckDB connection of its own,
// which it holds until it is exhausted or closed, with the query's working
// memory; it holds a statement slot only while it computes rows (Open and
// Fetch).
//
// A Cursor is not safe for concurrent use, except Close, which may be called
// from any goroutine while no Fetch runs.
type Cursor struct {
	e    *Engine
	cols []Column

	mu   sync.Mutex // guards what follows; Fetch holds it while it reads
	conn driver.Conn
	stmt *duckdb.Stmt
	rows driver.Rows
	dest []driver.Value
	// exhausted: every row was read; closed: Close was called or a Fetch
	// failed. Either way the result and connection are released.
	exhausted, closed bool
}

// ErrCursorClosed is returned by Fetch on a closed cursor.
var ErrCursorClosed = errors.New("cursor is closed")

// OpenCursor starts the statement with args on a connection of its own and
// returns its result, of which no row is read yet. Work that must finish
// before the first row (sorting, aggregating) is done here, under a
// statement slot and the statement timeout, like Query.
func (st *Statement) OpenCursor(ctx context.Context, args []any) (_ *Cursor, err error) {
	if len(args) != len(st.Params) {
		return nil, fmt.Errorf("statement has %d parameters, got %d values", len(st.Params), len(args))
	}
	e := st.s.e
	ctx, release, err := e.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = release(err) }()
	if err := st.rebindIfStale(ctx); err != nil {
		return nil, err
	}
	dc, err := e.connector.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening duckdb connection for a cursor: %w", err)
	}
	c := &Cursor{e: e, cols: st.Columns, conn: dc}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ds, err := dc.(*duckdb.Conn).PrepareContext(ctx, st.sql)
	if err != nil {
		return nil, err
	}
	c.stmt = ds.(*duckdb.Stmt)
	if n, err := c.stmt.ColumnCount(); err != nil || n != len(st.Columns) {
		// A refresh changed the tables between the statement's prepare and this one.
		return nil, ErrResultChanged
	}
	for i, col := range st.Columns {
		if t, err := c.stmt.ColumnType(i); err != nil || t != col.Type.ID {
			return nil, ErrResultChanged
		}
	}
	named := make([]driver.NamedValue, len(args))
	for i, a := range args {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	if c.rows, err = queryStreaming(ctx, c.stmt, named); err != nil {
		return nil, err
	}
	c.dest = make([]driver.Value, len(st.Columns))
	return c, nil
}

// Columns are the result's columns.
func (c *Cursor) Columns() []Column { return slices.Clone(c.cols) }

// Fetch reads up to max rows (all that remain when max <= 0) and calls fn
// with each; the row slice is reused between calls, so fn copies what it
// keeps. It returns whether rows may remain: false once the result is
// exhausted (the cursor then releases its connection), true when it stopped
// at max. It runs under a statement slot and the statement timeout; ctx done
// interrupts DuckDB. After an error the cursor is done; Close it still.
func (c *Cursor) Fetch(ctx context.Context, max int64, fn func(row []driver.Value) error) (more bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return false, ErrCursorClosed
	case c.exhausted:
		return false, nil
	}
	ctx, release, err := c.e.begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { err = release(err) }()
	stop := interruptOnDone(ctx, c.conn)
	more, err = readRows(ctx, c.rows, c.dest, max, fn)
	stop()
	if err != nil {
		c.closed = true
		c.releaseLocked()
	} else if !more {
		c.exhausted = true
		c.releaseLocked()
	}
	return more, err
}

// Close releases the cursor's result and connection. Safe to call twice.
func (c *Cursor) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return c.releaseLocked()
}

func (c *Cursor) releaseLocked() error {
	var errs []error
	if c.rows != nil {
		errs = append(errs, c.rows.Close())
		c.rows = nil
	}
	if c.stmt != nil {
		errs = append(errs, c.stmt.Close())
		c.stmt = nil
	}
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
		c.conn = nil
	}
	return errors.Join(errs...)
}

// begin takes a statement slot and applies the statement timeout for one
// piece of statement work. release gives the slot back and turns a deadline
// into the timeout's error.
func (e *Engine) begin(ctx context.Context) (_ context.Context, release func(error) error, _ error) {
	free, err := e.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	d := e.cfg.StatementTimeout
	if d <= 0 {
		return ctx, func(err error) error { free(); return err }, nil
	}
	ctx, cancel := context.WithTimeoutCause(ctx, d, &Error{Code: CodeQueryCanceled,
		Msg: fmt.Sprintf("canceling statement: it ran longer than the statement timeout (%s)", d)})
	return ctx, func(err error) error {
		if cause := context.Cause(ctx); err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && cause != nil {
			err = cause
		}
		cancel()
		free()
		return err
	}, nil
}
