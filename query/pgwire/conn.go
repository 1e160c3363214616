package pgwire

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/audit"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
)

const (
	maxMessageBytes = 16 << 20
	startupTimeout  = time.Minute
	flushBytes      = 64 << 10
)

// pgError is an error with the SQLSTATE sent to the client.
type pgError struct {
	code string
	msg  string
}

func (e *pgError) Error() string { return e.msg }

func errorf(code, format string, args ...any) error {
	return &pgError{code: code, msg: fmt.Sprintf(format, args...)}
}

// conn is one client connection, served by one goroutine (serve). Only
// running is touched from other goroutines (CancelRequest), under runMu.
type conn struct {
	s      *Server
	nc     net.Conn
	out    *connWriter // what be writes to
	be     *pgproto3.Backend
	logger *slog.Logger
	pid    uint32
	secret []byte
	sess   *engine.Session
	app    string
	// principal is who logged in; every statement runs on its behalf.
	principal auth.Principal

	stmts   map[string]*prepared
	portals map[string]*portal
	cursors map[string]*cursor // DECLARE … CURSOR
	// settings are the session's values of sessionSettings (SET); startupSettings
	// those of the startup message, which RESET returns to.
	settings, startupSettings map[string]string
	// inTx is true between BEGIN and COMMIT/ROLLBACK: portals then outlive
	// Sync, as in PostgreSQL (pgJDBC pages through them that way).
	inTx    bool
	pending int // bytes sent since the last flush
	// rowVals and rowBuf are sendRow's scratch space, reused row to row.
	rowVals [][]byte
	rowBuf  []byte

	runMu   sync.Mutex
	running context.CancelFunc
}

// connWriter is what the backend writes to. During startup writes go
// straight to the connection; once the session starts (buffer) they gather
// until conn.flush sends them.
type connWriter struct {
	w   io.Writer     // the connection, TLS once negotiated
	buf *bufio.Writer // nil during startup
}

func (cw *connWriter) Write(p []byte) (int, error) {
	if cw.buf == nil {
		return cw.w.Write(p)
	}
	return cw.buf.Write(p)
}

func (cw *connWriter) buffer() { cw.buf = bufio.NewWriterSize(cw.w, 2*flushBytes) }

func (cw *connWriter) flush() error {
	if cw.buf == nil {
		return nil
	}
	return cw.buf.Flush()
}

// prepared is a parsed statement: a DuckDB statement or a session command
// answered by the server itself (virtual).
type prepared struct {
	query     string // as the client sent it, for the audit log
	empty     bool
	st        *engine.Statement
	paramOIDs []uint32
	cols      []column
	virtual   *virtualResult
	// run computes a virtual result when the statement executes (DECLARE,
	// CLOSE), not when it is parsed.
	run func(ctx context.Context) (*virtualResult, error)
	// fetch streams rows from a cursor to send when the statement executes
	// (FETCH, MOVE) and returns the command tag.
	fetch func(ctx context.Context, send func(row []driver.Value) error) (tag string, err error)
	// binary: results go out in binary unless Bind says otherwise (FETCH
	// from a BINARY cursor).
	binary bool
	// args are bound by SQL EXECUTE; borrowed statements belong to another
	// prepared (the one EXECUTE names) and are not closed with this one.
	args     []any
	borrowed bool
}

type column struct {
	name string
	t    pgType
}

type virtualResult struct {
	rows [][]driver.Value
	tag  string
}

type portal struct {
	name    string
	p       *prepared
	args    []any
	formats []int16
	// stream is the result of a portal executed with a row limit, read on
	// by the next Execute (PortalSuspended ends each piece but the last).
	stream *resultStream
}

func (p *prepared) close() {
	if p.st != nil && !p.borrowed {
		p.st.Close()
	}
}

func (s *Server) serve(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	out := &connWriter{w: nc}
	c := &conn{
		s: s, nc: nc, out: out, be: pgproto3.NewBackend(nc, out),
		logger:          s.logger.With("remote", nc.RemoteAddr().String()),
		stmts:           map[string]*prepared{},
		portals:         map[string]*portal{},
		cursors:         map[string]*cursor{},
		settings:        map[string]string{},
		startupSettings: map[string]string{},
	}
	c.be.SetMaxBodyLen(maxMessageBytes)
	_ = nc.SetDeadline(time.Now().Add(startupTimeout))
	ok, err := c.startup(ctx)
	if err != nil {
		if !errors.Is(err, io.EOF) && ctx.Err() == nil {
			c.logger.Info("pgwire startup failed", "err", err)
		}
		return
	}
	if !ok {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	c.out.buffer()
	defer s.unregister(c.pid)
	defer c.closeAll()
	if err := c.loop(ctx); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
		c.logger.Info("pgwire connection ended", "err", err)
	}
}

// startup runs the handshake. It returns false without error for a
// CancelRequest connection or a refused login (already answered).
func (c *conn) startup(ctx context.Context) (bool, error) {
	for {
		msg, err := c.be.ReceiveStartupMessage()
		if err != nil {
			return false, err
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if c.s.tls == nil || c.isTLS() {
				// Clients then continue in plain text, or give up when
				// they require TLS.
				if _, err := c.nc.Write([]byte{'N'}); err != nil {
					return false, err
				}
				continue
			}
			if _, err := c.nc.Write([]byte{'S'}); err != nil {
				return false, err
			}
			tc := tls.Server(c.nc, c.s.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				return false, fmt.Errorf("tls handshake: %w", err)
			}
			c.nc = tc
			c.out = &connWriter{w: tc}
			c.be = pgproto3.NewBackend(tc, c.out)
			c.be.SetMaxBodyLen(maxMessageBytes)
		case *pgproto3.GSSEncRequest:
			if _, err := c.nc.Write([]byte{'N'}); err != nil {
				return false, err
			}
		case *pgproto3.CancelRequest:
			c.s.cancelQuery(m.ProcessID, m.SecretKey)
			return false, nil
		case *pgproto3.StartupMessage:
			return c.login(ctx, m)
		default:
			return false, fmt.Errorf("unexpected startup message %T", msg)
		}
	}
}

// unknownUser reports whether the login store has no such user.
func (c *conn) unknownUser(ctx context.Context, user string) bool {
	_, err := c.s.store.Login(ctx, user)
	return errors.Is(err, auth.ErrUnknownUser)
}

func (c *conn) login(ctx context.Context, m *pgproto3.StartupMessage) (bool, error) {
	user := m.Parameters["user"]
	c.app = m.Parameters["application_name"]
	for name, v := range m.Parameters {
		if name = strings.ToLower(name); sessionSettings[name] {
			c.startupSettings[name] = v
		}
	}
	c.logger = c.logger.With("user", user, "tls", c.isTLS())
	if c.s.cfg.RequireTLS && !c.isTLS() && !isLoopback(c.nc.RemoteAddr()) {
		c.logger.Warn("pgwire login refused", "reason", "tls required")
		return false, c.fatal("28000", "TLS is required for connections from other hosts (sslmode=require)")
	}
	if c.s.store == nil {
		if !isLoopback(c.nc.RemoteAddr()) {
			return false, c.fatal("28000", "no users are configured: only loopback connections are trusted")
		}
		// The demo's trust mode: whoever connects on loopback reads all.
		c.principal = auth.Principal{User: user, Admin: true}
	} else if c.s.cfg.TrustLoopback && isLoopback(c.nc.RemoteAddr()) && c.unknownUser(ctx, user) {
		c.logger.Info("pgwire login trusted", "reason", "unknown user on loopback")
		c.principal = auth.Principal{User: user, Admin: true}
	} else {
		p, err := c.authenticateSCRAM(ctx, user)
		if errors.Is(err, errLoginRefused) {
			c.logger.Warn("pgwire authentication failed", "reason", err.Error())
			return false, c.fatal("28P01", fmt.Sprintf("password authentication failed for user %q", user))
		}
		if err != nil {
			return false, err
		}
		c.principal = p
	}
	sess, err := c.s.eng.Session(ctx, c.principal)
	if err != nil {
		return false, c.fatal("57P03", "query engine unavailable")
	}
	c.sess = sess
	c.pid, c.secret = c.s.register(c)
	c.be.Send(&pgproto3.AuthenticationOk{})
	for _, kv := range [][2]string{
		{"server_version", serverVersion},
		{"server_encoding", "UTF8"},
		{"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},
		{"IntervalStyle", "postgres"},
		{"integer_datetimes", "on"},
		{"standard_conforming_strings", "on"},
		{"TimeZone", "UTC"},
		{"is_superuser", "off"},
		{"application_name", c.app},
	} {
		c.be.Send(&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]})
	}
	c.be.Send(&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.secret})
	c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	c.logger.Debug("pgwire session started")
	return true, c.be.Flush()
}

// txStatus is ReadyForQuery's transaction status: 'T' in a transaction
// block, 'I' outside.
func (c *conn) txStatus() byte {
	if c.inTx {
		return 'T'
	}
	return 'I'
}

func (c *conn) isTLS() bool {
	_, ok := c.nc.(*tls.Conn)
	return ok
}

func (c *conn) fatal(code, msg string) error {
	c.be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	_ = c.be.Flush()
	return nil
}

func (c *conn) closeAll() {
	c.endOfTransaction(true)
	for _, p := range c.stmts {
		p.close()
	}
	c.stmts, c.portals = nil, nil
	if c.sess != nil {
		c.sess.Close()
	}
}

func (c *conn) loop(ctx context.Context) error {
	skipToSync := false // after an error in the extended protocol
	for {
		msg, err := c.be.Receive()
		if err != nil {
			return err
		}
		if skipToSync {
			switch msg.(type) {
			case *pgproto3.Sync:
				skipToSync = false
			case *pgproto3.Terminate:
				return nil
			default:
				continue
			}
		}
		var opErr error
		switch m := msg.(type) {
		case *pgproto3.Query:
			c.simpleQuery(ctx, m.String)
		case *pgproto3.Parse:
			opErr = c.parse(ctx, m)
		case *pgproto3.Bind:
			opErr = c.bind(m)
		case *pgproto3.Describe:
			opErr = c.describe(m)
		case *pgproto3.Execute:
			opErr = c.executePortal(ctx, m)
		case *pgproto3.Close:
			c.closeObject(m)
		case *pgproto3.Sync:
			// Sync ends an implicit transaction, which drops portals and
			// cursors without HOLD.
			if !c.inTx {
				c.endOfTransaction(false)
			}
			c.be.Send(&pgproto3.ReadyForQuery{TxStatus: c.txStatus()})
			opErr = c.flush()
		case *pgproto3.Flush:
			opErr = c.flush()
		case *pgproto3.Terminate:
			return nil
		default:
			opErr = errorf("0A000", "message %T is not supported", msg)
		}
		if opErr != nil {
			if !isQueryError(opErr) {
				return opErr // I/O error: the connection is gone
			}
			c.sendError(opErr)
			if _, isSync := msg.(*pgproto3.Sync); !isSync {
				skipToSync = true
			}
			// As PostgreSQL does, the error goes out at once: a client that
			// sent Flush rather than Sync (reading a portal piece by piece)
			// waits for it, and Flush is skipped with the rest until Sync.
			if err := c.flush(); err != nil {
				return err
			}
		}
		if c.pending > flushBytes {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
}

func (c *conn) flush() error {
	c.pending = 0
	if err := c.be.Flush(); err != nil {
		return err
	}
	return c.out.flush()
}

// send sends one of many messages (a DataRow): it moves it on to the
// connection's buffer at once, which keeps pgproto3's own buffer small and
// reused (pgproto3 drops a buffer grown past 1 KiB at each Flush, and growing
// it again batch after batch took a tenth of a large result's CPU).
func (c *conn) send(msg pgproto3.BackendMessage, size int) error {
	c.be.Send(msg)
	if err := c.be.Flush(); err != nil {
		return err
	}
	c.pending += size
	if c.pending > flushBytes {
		return c.flush()
	}
	return nil
}

func (c *conn) simpleQuery(ctx context.Context, sql string) {
	for _, q := range engine.SplitStatements(sql) {
		if q == "" {
			c.be.Send(&pgproto3.EmptyQueryResponse{})
			continue
		}
		p, err := c.prepare(ctx, q)
		if err == nil {
			err = c.execute(ctx, q, p, nil, nil, true)
			p.close()
		}
		if err != nil {
			c.sendError(err)
			break
		}
	}
	// The implicit transaction of a query outside BEGIN ends here, and
	// with it the cursors declared without HOLD.
	if !c.inTx {
		c.closeCursors(func(cur *cursor) bool { return !cur.hold })
	}
	c.be.Send(&pgproto3.ReadyForQuery{TxStatus: c.txStatus()})
	_ = c.flush()
}

func (c *conn) parse(ctx context.Context, m *pgproto3.Parse) error {
	if _, exists := c.stmts[m.Name]; exists && m.Name != "" {
		return errorf("42P05", "prepared statement %q already exists", m.Name)
	}
	parts := engine.SplitStatements(m.Query)
	if len(parts) > 1 {
		return errorf("42601", "cannot insert multiple commands into a prepared statement")
	}
	var p *prepared
	if parts[0] == "" {
		p = &prepared{empty: true}
	} else {
		var err error
		if p, err = c.prepare(ctx, parts[0]); err != nil {
			return err
		}
	}
	if old := c.stmts[m.Name]; old != nil {
		old.close()
	}
	c.stmts[m.Name] = p
	c.be.Send(&pgproto3.ParseComplete{})
	return nil
}

func (c *conn) bind(m *pgproto3.Bind) error {
	p := c.stmts[m.PreparedStatement]
	if p == nil {
		return errorf("26000", "prepared statement %q does not exist", m.PreparedStatement)
	}
	if len(m.Parameters) != len(p.paramOIDs) {
		return errorf("08P01", "bind message supplies %d parameters, but prepared statement %q requires %d",
			len(m.Parameters), m.PreparedStatement, len(p.paramOIDs))
	}
	args, err := decodeParams(p.paramOIDs, m.ParameterFormatCodes, m.Parameters)
	if err != nil {
		return err
	}
	formats, err := resultFormats(len(p.cols), m.ResultFormatCodes)
	if err != nil {
		return err
	}
	if c.logger.Enabled(context.Background(), slog.LevelDebug) {
		c.logger.Debug("pgwire bind", "statement", m.PreparedStatement, "result_formats", fmt.Sprint(formats))
	}
	c.dropPortal(m.DestinationPortal)
	c.portals[m.DestinationPortal] = &portal{name: m.DestinationPortal, p: p, args: args, formats: formats}
	c.be.Send(&pgproto3.BindComplete{})
	return nil
}

// decodeParams decodes Bind parameters by the types the statement reported
// in its ParameterDescription.
func decodeParams(oids []uint32, formatCodes []int16, values [][]byte) ([]any, error) {
	if len(formatCodes) > 1 && len(formatCodes) != len(values) {
		return nil, errorf("08P01", "bind message has %d parameter formats but %d parameters", len(formatCodes), len(values))
	}
	if len(values) != len(oids) {
		return nil, errorf("08P01", "bind message supplies %d parameters, statement requires %d", len(values), len(oids))
	}
	args := make([]any, len(values))
	for i, v := range values {
		f := int16(0)
		switch len(formatCodes) {
		case 0:
		case 1:
			f = formatCodes[0]
		default:
			f = formatCodes[i]
		}
		a, err := decodeParam(oids[i], f, v)
		if err != nil {
			return nil, errorf("22P02", "parameter $%d: %v", i+1, err)
		}
		args[i] = a
	}
	return args, nil
}

func resultFormats(ncols int, codes []int16) ([]int16, error) {
	out := make([]int16, ncols)
	switch {
	case len(codes) == 0:
	case len(codes) == 1:
		for i := range out {
			out[i] = codes[0]
		}
	case len(codes) == ncols:
		copy(out, codes)
	default:
		return nil, errorf("08P01", "bind message has %d result formats but query has %d columns", len(codes), ncols)
	}
	for _, f := range out {
		if f != 0 && f != 1 {
			return nil, errorf("08P01", "unknown result format code %d", f)
		}
	}
	return out, nil
}

func (c *conn) describe(m *pgproto3.Describe) error {
	switch m.ObjectType {
	case 'S':
		p := c.stmts[m.Name]
		if p == nil {
			return errorf("26000", "prepared statement %q does not exist", m.Name)
		}
		c.be.Send(&pgproto3.ParameterDescription{ParameterOIDs: p.paramOIDs})
		c.sendRowDescription(p, nil)
	case 'P':
		pt := c.portals[m.Name]
		if pt == nil {
			return errorf("34000", "portal %q does not exist", m.Name)
		}
		c.sendRowDescription(pt.p, pt.formats)
	default:
		return errorf("08P01", "invalid describe object type %q", m.ObjectType)
	}
	return nil
}

func (c *conn) sendRowDescription(p *prepared, formats []int16) {
	if len(p.cols) == 0 {
		c.be.Send(&pgproto3.NoData{})
		return
	}
	fields := make([]pgproto3.FieldDescription, len(p.cols))
	for i, col := range p.cols {
		fields[i] = pgproto3.FieldDescription{
			Name: []byte(col.name), DataTypeOID: col.t.oid, DataTypeSize: col.t.size, TypeModifier: col.t.mod,
		}
		if formats != nil {
			fields[i].Format = formats[i]
		}
	}
	c.be.Send(&pgproto3.RowDescription{Fields: fields})
}

func (c *conn) executePortal(ctx context.Context, m *pgproto3.Execute) error {
	pt := c.portals[m.Portal]
	if pt == nil {
		return errorf("34000", "portal %q does not exist", m.Portal)
	}
	if pt.p.empty {
		c.be.Send(&pgproto3.EmptyQueryResponse{})
		return nil
	}
	if m.MaxRows == 0 && pt.stream == nil {
		return c.execute(ctx, "", pt.p, pt.args, pt.formats, false)
	}
	// A row limit: the result streams, piece by piece, one per Execute.
	if pt.stream == nil {
		s, tag, err := c.openStream(ctx, portalWhat(pt.name), pt.p, pt.args)
		if err != nil {
			return err
		}
		if tag != "" {
			c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
			return nil
		}
		pt.stream = s
	}
	more, err := pt.stream.fetch(ctx, c, int64(m.MaxRows), func(row []driver.Value) error {
		return c.sendRow(pt.p.cols, pt.formats, row)
	})
	if err != nil {
		return err
	}
	if more {
		c.be.Send(&pgproto3.PortalSuspended{})
		return nil
	}
	c.be.Send(&pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", pt.stream.rowsSent())})
	return nil
}

func (c *conn) closeObject(m *pgproto3.Close) {
	switch m.ObjectType {
	case 'S':
		if p := c.stmts[m.Name]; p != nil {
			for name, pt := range c.portals {
				if pt.p == p {
					c.dropPortal(name)
				}
			}
			p.close()
			delete(c.stmts, m.Name)
		}
	case 'P':
		c.dropPortal(m.Name)
	}
	c.be.Send(&pgproto3.CloseComplete{})
}

// execute runs p and streams its rows. sql is only used to spot catalog
// probes in logs.
func (c *conn) execute(ctx context.Context, sql string, p *prepared, args []any, formats []int16, rowDesc bool) (err error) {
	finish, err := c.auditBegin(ctx, p)
	if err != nil {
		return err
	}
	var n int64 // rows sent
	defer func() { finish(n, err) }()
	if formats == nil {
		formats = make([]int16, len(p.cols))
		if p.binary {
			for i := range formats {
				formats[i] = 1
			}
		}
	}
	if rowDesc {
		c.sendRowDescription(p, formats)
	}
	if p.fetch != nil {
		tag, err := p.fetch(ctx, func(row []driver.Value) error {
			n++
			return c.sendRow(p.cols, formats, row)
		})
		if err != nil {
			return err
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
		return nil
	}
	v := p.virtual
	if p.run != nil {
		var err error
		if v, err = p.run(ctx); err != nil {
			return err
		}
	}
	if v != nil {
		for _, row := range v.rows {
			if err := c.sendRow(p.cols, formats, row); err != nil {
				return err
			}
			n++
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(v.tag)})
		return nil
	}
	start := time.Now()
	err = c.query(ctx, p, args, func(row []driver.Value) error {
		n++
		return c.sendRow(p.cols, formats, row)
	})
	elapsed := time.Since(start)
	if err != nil {
		c.s.observe("error", elapsed)
		if sql != "" && looksLikeCatalogProbe(sql) {
			c.logger.Warn("unhandled catalog probe", "query", truncate(sql, 2000), "err", err)
		}
		return err
	}
	c.s.observe("ok", elapsed)
	c.be.Send(&pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", n)})
	return nil
}

// query runs an engine statement, cancellable by a CancelRequest.
func (c *conn) query(ctx context.Context, p *prepared, args []any, fn func(row []driver.Value) error) error {
	if p.args != nil {
		args = p.args // bound by SQL EXECUTE
	}
	if args == nil && len(p.paramOIDs) > 0 {
		return errorf("42P02", "there is no parameter $1")
	}
	return c.run(ctx, func(ctx context.Context) error { return p.st.Query(ctx, args, fn) })
}

// run runs one piece of statement work (a query, opening a cursor, a FETCH
// or row-limited Execute) under the session's statement_timeout, and
// cancellable by a CancelRequest while it runs.
func (c *conn) run(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d := c.statementTimeout(); d > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, d, errStatementTimeout)
		defer stop()
	}
	c.runMu.Lock()
	c.running = cancel
	c.runMu.Unlock()
	defer func() {
		c.runMu.Lock()
		c.running = nil
		c.runMu.Unlock()
	}()
	err := fn(ctx)
	if err != nil && errors.Is(context.Cause(ctx), errStatementTimeout) {
		return errorf("57014", "canceling statement due to statement timeout")
	}
	return err
}

func (c *conn) sendRow(cols []column, formats []int16, row []driver.Value) error {
	// The values are encoded into one buffer reused row after row: Send
	// copies the message out before the next row.
	if cap(c.rowVals) < len(row) {
		c.rowVals = make([][]byte, len(row))
	}
	if c.rowBuf == nil {
		c.rowBuf = make([]byte, 0, 512) // never nil: a nil value is NULL
	}
	vals, buf := c.rowVals[:len(row)], c.rowBuf[:0]
	ends := make([]int, 0, 16)
	for i, v := range row {
		if v == nil {
			ends = append(ends, -1)
			continue
		}
		var err error
		if formats[i] == 1 {
			var b []byte
			b, err = encodeBinary(cols[i].t, v)
			buf = append(buf, b...)
		} else {
			buf, err = appendText(buf, cols[i].t, v)
		}
		if err != nil {
			return errorf("XX000", "column %s: %v", cols[i].name, err)
		}
		ends = append(ends, len(buf))
	}
	start := 0
	for i, end := range ends {
		if end < 0 {
			vals[i] = nil
			continue
		}
		vals[i] = buf[start:end:end]
		start = end
	}
	if cap(buf) <= maxRowBuf {
		c.rowBuf = buf
	}
	return c.send(&pgproto3.DataRow{Values: vals}, len(buf)+4*len(row))
}

// maxRowBuf bounds the encoding buffer a connection keeps between rows.
const maxRowBuf = 1 << 20

func (c *conn) cancelRunning() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	if c.running != nil {
		c.running()
	}
}

// prepare turns one statement into a prepared: session commands are
// answered here, everything else goes to the engine.
func (c *conn) prepare(ctx context.Context, q string) (*prepared, error) {
	c.logger.Debug("pgwire statement", "query", q)
	if v, err := c.sessionCommand(ctx, q); v != nil || err != nil {
		if err != nil {
			c.s.observe("refused", 0)
			c.auditRefused(ctx, q, err)
			return nil, err
		}
		v.query = q
		return v, nil
	}
	st, err := c.sess.Prepare(ctx, rewriteSQL(q, session{user: c.principal.User, pid: c.pid}, c.setting))
	if err != nil {
		outcome := "error"
		if audit.Outcome(err) == catalog.AuditRefused {
			outcome = "refused"
		}
		c.s.observe(outcome, 0)
		c.auditRefused(ctx, q, err)
		if looksLikeCatalogProbe(q) {
			c.logger.Warn("unhandled catalog probe", "query", truncate(q, 2000), "err", err)
		}
		return nil, err
	}
	p := &prepared{query: q, st: st}
	for _, t := range st.Params {
		oid := pgTypeOf(t).oid
		p.paramOIDs = append(p.paramOIDs, oid)
	}
	for _, col := range st.Columns {
		p.cols = append(p.cols, column{name: pgColumnName(col.Name), t: pgTypeOf(col.Type)})
	}
	return p, nil
}

const serverVersion = "15.0 (medlake)"

// versionString is what version() returns; clients parse the
// "PostgreSQL major.minor" at its start.
const versionString = "PostgreSQL " + serverVersion + " on x86_64-pc-linux-gnu, compiled by DuckDB, 64-bit"

var showQuery = regexp.MustCompile(`(?i)\bshow\s+"?([a-z_.]+)"?`)

var versionQuery = regexp.MustCompile(`(?i)^select\s+(pg_catalog\.)?version\(\s*\)\s*$`)

// showValues are the settings SHOW answers.
var showValues = map[string]string{
	"server_version":                      serverVersion,
	"server_version_num":                  "150000",
	"server_encoding":                     "UTF8",
	"client_encoding":                     "UTF8",
	"datestyle":                           "ISO, MDY",
	"intervalstyle":                       "postgres",
	"integer_datetimes":                   "on",
	"standard_conforming_strings":         "on",
	"extra_float_digits":                  "1",
	"statement_timeout":                   "0",
	"lock_timeout":                        "0",
	"idle_in_transaction_session_timeout": "0",
	"bytea_output":                        "hex",
	"lc_collate":                          "C.UTF-8",
	"lc_ctype":                            "C.UTF-8",
	"lc_messages":                         "C.UTF-8",
	"lc_monetary":                         "C.UTF-8",
	"lc_numeric":                          "C.UTF-8",
	"lc_time":                             "C.UTF-8",
	"transaction_deferrable":              "off",
	"default_transaction_deferrable":      "off",
	"max_index_keys":                      "32",
	"application_name":                    "",
	"timezone":                            "UTC",
	"transaction_isolation":               "read committed",
	"default_transaction_isolation":       "read committed",
	"transaction_read_only":               "on",
	"default_transaction_read_only":       "on",
	"is_superuser":                        "off",
	"max_identifier_length":               "63",
	"search_path":                         `"$user", public`,
}

var textCol = pgTypeOf(engine.Type{ID: duckdb.TYPE_VARCHAR})

// sessionCommand answers the commands that configure a PostgreSQL session.
// Settings are accepted and ignored: the engine runs in UTC, UTF-8 and ISO
// dates whatever the client asks, and refusing SET would break drivers.
func (c *conn) sessionCommand(ctx context.Context, q string) (*prepared, error) {
	kw := engine.FirstKeyword(q)
	tag := func(t string) *prepared { return &prepared{virtual: &virtualResult{tag: t}} }
	switch kw {
	case "SET":
		return c.set(q)
	case "RESET":
		return c.reset(q)
	case "BEGIN", "START":
		return &prepared{run: func(context.Context) (*virtualResult, error) {
			c.inTx = true
			return &virtualResult{tag: "BEGIN"}, nil
		}}, nil
	case "COMMIT", "END":
		return c.endTransaction("COMMIT"), nil
	case "ROLLBACK", "ABORT":
		return c.endTransaction("ROLLBACK"), nil
	case "DECLARE":
		return c.declareCursor(ctx, q)
	case "FETCH", "MOVE":
		return c.fetchCursor(q)
	case "CLOSE":
		return c.closeCursor(q)
	case "DISCARD":
		return tag("DISCARD ALL"), nil
	case "DEALLOCATE":
		return c.deallocate(q)
	case "PREPARE":
		return c.prepareSQL(ctx, q)
	case "EXECUTE":
		return c.executeSQL(q)
	case "SHOW":
		m := showQuery.FindStringSubmatch(q)
		if m == nil {
			return nil, errorf("42601", "syntax error in SHOW")
		}
		name := strings.ToLower(m[1])
		if name == "all" {
			return c.showAll(), nil
		}
		val, ok := c.setting(name)
		if !ok {
			return nil, errorf("42704", "unrecognized configuration parameter %q", name)
		}
		return &prepared{
			cols:    []column{{name: name, t: textCol}},
			virtual: &virtualResult{rows: [][]driver.Value{{val}}, tag: "SHOW"},
		}, nil
	case "SELECT":
		if versionQuery.MatchString(strings.TrimSpace(q)) {
			v := versionString
			return &prepared{
				cols:    []column{{name: "version", t: textCol}},
				virtual: &virtualResult{rows: [][]driver.Value{{v}}, tag: "SELECT 1"},
			}, nil
		}
	}
	return nil, nil
}

func looksLikeCatalogProbe(q string) bool {
	l := strings.ToLower(q)
	return strings.Contains(l, "pg_") || strings.Contains(l, "information_schema")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// isQueryError reports whether err came from the engine (the statement
// failed) rather than from the connection.
func isQueryError(err error) bool {
	return !isNetError(err)
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

func (c *conn) sendError(err error) {
	code, msg := sqlState(err), err.Error()
	c.be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg})
}

// sqlState maps an error to its SQLSTATE.
func sqlState(err error) string {
	var pe *pgError
	if errors.As(err, &pe) {
		return pe.code
	}
	return engine.SQLState(err)
}
