package flightsql

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	arrowflightsql "github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql/schema_ref"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/medlake/medlake/query/audit"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
)

// Defaults for Config.
const (
	DefaultListen   = "127.0.0.1:5434"
	DefaultTokenTTL = time.Hour
	// maxTokens bounds the live bearer tokens, so a client logging in in a
	// loop cannot grow the server's memory without bound.
	maxTokens = 100_000
)

// Config configures a Server.
type Config struct {
	// Listen is the gRPC address.
	Listen string
	// TokenTTL is how long a bearer token from the handshake stays valid.
	TokenTTL time.Duration
	// TLS, when set, serves gRPC over TLS.
	TLS *tls.Config
	// BatchRows is the rows per record batch sent.
	BatchRows int
	// TrustLoopback admits a user name the login store does not know, from
	// a loopback peer, as an admin (single-machine setups). Known users
	// always prove their password.
	TrustLoopback bool
}

// Sessions opens engine sessions scoped to a principal. It must be safe for
// concurrent use.
type Sessions interface {
	Session(ctx context.Context, p auth.Principal) (*engine.Session, error)
	// Tables lists the lake tables.
	Tables() []string
}

// Observer is told the outcome ("ok", "error", "refused") and duration of
// every statement. It must be safe for concurrent use.
type Observer func(outcome string, elapsed time.Duration)

// Server is a Flight SQL server over the engine.
//
// Concurrency: Run owns the gRPC server; every DoGet stream has a goroutine
// that Run waits for (streams) before returning. mu guards tokens.
type Server struct {
	arrowflightsql.BaseServer
	cfg      Config
	store    auth.Store // nil: any login on loopback is an admin
	sessions Sessions
	logger   *slog.Logger
	observe  Observer
	audit    *audit.Recorder
	streams  sync.WaitGroup
	ready    chan struct{}
	addr     net.Addr

	mu     sync.Mutex
	tokens map[string]token
}

type token struct {
	principal auth.Principal
	expires   time.Time
}

// New returns a Server. store may be nil only when Listen is a loopback
// address: then any login is accepted as an admin (the single-machine demo).
// log may be nil: statements are not audited.
func New(cfg Config, store auth.Store, sessions Sessions, log audit.Log, logger *slog.Logger, observe Observer) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = engine.DefaultBatchRows
	}
	if store == nil && !loopbackAddr(cfg.Listen) {
		return nil, fmt.Errorf("flightsql: listen %s is not loopback and no logins are configured", cfg.Listen)
	}
	if observe == nil {
		observe = func(string, time.Duration) {}
	}
	logger = logger.With("component", "flightsql")
	s := &Server{
		cfg: cfg, store: store, sessions: sessions, observe: observe, logger: logger,
		audit:  audit.NewRecorder(log, "flightsql", logger),
		ready:  make(chan struct{}),
		tokens: map[string]token{},
	}
	s.Alloc = memory.DefaultAllocator
	for id, v := range map[arrowflightsql.SqlInfo]any{
		arrowflightsql.SqlInfoFlightSqlServerName:         "medlake",
		arrowflightsql.SqlInfoFlightSqlServerVersion:      "1",
		arrowflightsql.SqlInfoFlightSqlServerArrowVersion: "18",
		arrowflightsql.SqlInfoFlightSqlServerReadOnly:     true,
	} {
		if err := s.RegisterSqlInfo(id, v); err != nil {
			return nil, fmt.Errorf("flightsql: registering sql info: %w", err)
		}
	}
	return s, nil
}

func loopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run serves until ctx is done, then stops the gRPC server (cancelling
// streams still open after a grace period) and waits for every stream.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("flightsql: listening on %s: %w", s.cfg.Listen, err)
	}
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(s.unaryAuth), grpc.ChainStreamInterceptor(s.streamAuth)}
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	gs := grpc.NewServer(opts...)
	flight.RegisterFlightServiceServer(gs, arrowflightsql.NewFlightServer(s))
	s.addr = ln.Addr()
	close(s.ready)
	s.logger.Info("flight sql listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil)

	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
			<-stopped
		}
		err = <-served
	}
	s.streams.Wait()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// Addr returns the listen address once Run listens.
func (s *Server) Addr(ctx context.Context) (net.Addr, error) {
	select {
	case <-s.ready:
		return s.addr, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Logins: a client sends HTTP Basic credentials, either in the handshake
// (ADBC, pyarrow), which answers with a bearer token for later calls, or on
// every call (arrow-go's database/sql driver); or it sends a bearer token.
// arrow-go's own auth middleware takes Basic only in the handshake, so these
// interceptors are written here.

type principalKey struct{}

func principal(ctx context.Context) (auth.Principal, error) {
	p, ok := ctx.Value(principalKey{}).(auth.Principal)
	if !ok {
		return auth.Principal{}, status.Error(codes.Unauthenticated, "must authenticate first")
	}
	return p, nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, _, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return handler(context.WithValue(ctx, principalKey{}, p), req)
}

func (s *Server) streamAuth(srv any, stream grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, basic, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	if strings.HasSuffix(info.FullMethod, "/Handshake") {
		if !basic {
			return status.Error(codes.Unauthenticated, "the handshake takes Basic credentials")
		}
		tok, err := s.issue(p)
		if err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("authorization", "Bearer "+tok))
	}
	return handler(srv, &authedStream{ServerStream: stream, ctx: context.WithValue(stream.Context(), principalKey{}, p)})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

// authenticate resolves the call's authorization header; basic reports
// whether it held credentials rather than a token.
func (s *Server) authenticate(ctx context.Context) (p auth.Principal, basic bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return p, false, status.Error(codes.Unauthenticated, "must authenticate first")
	}
	scheme, cred, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	cred = strings.TrimLeft(cred, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		s.mu.Lock()
		t, ok := s.tokens[cred]
		s.mu.Unlock()
		if !ok || time.Now().After(t.expires) {
			return p, false, status.Error(codes.Unauthenticated, "token unknown or expired; log in again")
		}
		return t.principal, false, nil
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			raw, err = base64.RawStdEncoding.DecodeString(cred)
		}
		user, password, ok := strings.Cut(string(raw), ":")
		if err != nil || !ok {
			return p, false, status.Error(codes.Unauthenticated, "malformed Basic credentials")
		}
		p, err := s.login(ctx, user, password)
		return p, true, err
	}
	return p, false, status.Error(codes.Unauthenticated, "authorization must be Basic or Bearer")
}

func (s *Server) login(ctx context.Context, user, password string) (auth.Principal, error) {
	if s.store == nil {
		return auth.Principal{User: user, Admin: true}, nil
	}
	login, err := s.store.Login(ctx, user)
	reason := ""
	switch {
	case errors.Is(err, auth.ErrUnknownUser) && s.cfg.TrustLoopback && loopbackPeer(ctx):
		return auth.Principal{User: user, Admin: true}, nil
	case errors.Is(err, auth.ErrUnknownUser):
		reason = "unknown user"
	case err != nil:
		s.logger.Error("looking up login", "user", user, "err", err)
		return auth.Principal{}, status.Error(codes.Unavailable, "cannot check credentials now; retry")
	case login.Disabled:
		reason = "login disabled"
	case !login.Verifier.Check(password):
		reason = "wrong password"
	}
	if reason != "" {
		s.logger.Warn("flight sql login refused", "user", user, "reason", reason)
		return auth.Principal{}, status.Error(codes.Unauthenticated, "authentication failed")
	}
	return login.Principal, nil
}

func loopbackPeer(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return p.Addr.String()
	}
	return ""
}

// issue returns a new bearer token for p.
func (s *Server) issue(p auth.Principal) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", status.Error(codes.Internal, "issuing token")
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, k)
		}
	}
	if len(s.tokens) >= maxTokens {
		return "", status.Error(codes.ResourceExhausted, "too many open logins; retry later")
	}
	s.tokens[tok] = token{principal: p, expires: now.Add(s.cfg.TokenTTL)}
	return tok, nil
}

// handle is a statement's own text and bound parameters. Handles are kept by
// the client, not the server, so a statement prepared on one query node runs
// on any other; the statement is checked again under the caller's principal
// each time it runs, so a handle grants nothing.
type handle struct {
	SQL    string  `json:"sql"`
	Params []param `json:"params,omitempty"`
}

// param is one bound value with its kind, so JSON keeps integers exact.
type param struct {
	Kind  string    `json:"k"` // null, int, uint, float, string, bool, time, bytes
	Int   int64     `json:"i,omitempty"`
	Uint  uint64    `json:"u,omitempty"`
	Float float64   `json:"f,omitempty"`
	Str   string    `json:"s,omitempty"`
	Bool  bool      `json:"b,omitempty"`
	Time  time.Time `json:"t,omitempty"`
	Bytes []byte    `json:"y,omitempty"`
}

func (p param) value() any {
	switch p.Kind {
	case "int":
		return p.Int
	case "uint":
		return p.Uint
	case "float":
		return p.Float
	case "string":
		return p.Str
	case "bool":
		return p.Bool
	case "time":
		return p.Time
	case "bytes":
		return p.Bytes
	}
	return nil
}

func encodeHandle(h handle) ([]byte, error) { return json.Marshal(h) }

func decodeHandle(b []byte) (handle, error) {
	var h handle
	if err := json.Unmarshal(b, &h); err != nil || h.SQL == "" {
		return handle{}, status.Error(codes.InvalidArgument, "not a statement handle of this server")
	}
	return h, nil
}

// prepare opens a session for the caller and prepares query in it. The
// caller closes both.
func (s *Server) prepare(ctx context.Context, query string) (*engine.Session, *engine.Statement, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, nil, err
	}
	sess, err := s.sessions.Session(ctx, p)
	if err != nil {
		return nil, nil, statusOf(err)
	}
	st, err := sess.Prepare(ctx, query)
	if err != nil {
		sess.Close()
		s.observe(outcome(err), 0)
		s.audit.Refused(ctx, p, peerAddr(ctx), query, err)
		return nil, nil, statusOf(err)
	}
	return sess, st, nil
}

func outcome(err error) string { return audit.Outcome(err) }

// statusOf turns an engine error into a gRPC status carrying its SQLSTATE.
func statusOf(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.InvalidArgument
	state := engine.SQLState(err)
	switch state {
	case "42501", "25006":
		code = codes.PermissionDenied
	case "42P01":
		code = codes.NotFound
	case "57014":
		code = codes.DeadlineExceeded
	case "53200", "53300":
		code = codes.ResourceExhausted
	case "XX000":
		code = codes.Internal
	}
	return status.Errorf(code, "%s (SQLSTATE %s)", strings.TrimSpace(err.Error()), state)
}

func (s *Server) flightInfo(desc *flight.FlightDescriptor, ticket []byte, schema *arrow.Schema) *flight.FlightInfo {
	return &flight.FlightInfo{
		Endpoint:         []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: ticket}}},
		FlightDescriptor: desc,
		Schema:           flight.SerializeSchema(schema, s.Alloc),
		TotalRecords:     -1,
		TotalBytes:       -1,
	}
}

// GetFlightInfoStatement prepares the query to describe its result, and
// hands back a ticket holding the query itself.
func (s *Server) GetFlightInfoStatement(ctx context.Context, cmd arrowflightsql.StatementQuery, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	sess, st, err := s.prepare(ctx, cmd.GetQuery())
	if err != nil {
		return nil, err
	}
	schema := st.ArrowSchema()
	st.Close()
	sess.Close()
	h, err := encodeHandle(handle{SQL: cmd.GetQuery()})
	if err != nil {
		return nil, err
	}
	tkt, err := arrowflightsql.CreateStatementQueryTicket(h)
	if err != nil {
		return nil, err
	}
	return s.flightInfo(desc, tkt, schema), nil
}

// GetSchemaStatement describes a query's result without running it.
func (s *Server) GetSchemaStatement(ctx context.Context, cmd arrowflightsql.StatementQuery, _ *flight.FlightDescriptor) (*flight.SchemaResult, error) {
	sess, st, err := s.prepare(ctx, cmd.GetQuery())
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	defer st.Close()
	return &flight.SchemaResult{Schema: flight.SerializeSchema(st.ArrowSchema(), s.Alloc)}, nil
}

// DoGetStatement runs the query named by a ticket.
func (s *Server) DoGetStatement(ctx context.Context, tkt arrowflightsql.StatementQueryTicket) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	h, err := decodeHandle(tkt.GetStatementHandle())
	if err != nil {
		return nil, nil, err
	}
	return s.stream(ctx, h)
}

// CreatePreparedStatement describes the statement and returns a handle
// holding it.
func (s *Server) CreatePreparedStatement(ctx context.Context, req arrowflightsql.ActionCreatePreparedStatementRequest) (arrowflightsql.ActionCreatePreparedStatementResult, error) {
	var res arrowflightsql.ActionCreatePreparedStatementResult
	sess, st, err := s.prepare(ctx, req.GetQuery())
	if err != nil {
		return res, err
	}
	defer sess.Close()
	defer st.Close()
	fields := make([]arrow.Field, len(st.Params))
	for i, t := range st.Params {
		fields[i] = arrow.Field{Name: fmt.Sprintf("$%d", i+1), Type: engine.ArrowType(t), Nullable: true}
	}
	if res.Handle, err = encodeHandle(handle{SQL: req.GetQuery()}); err != nil {
		return res, err
	}
	res.DatasetSchema = st.ArrowSchema()
	res.ParameterSchema = arrow.NewSchema(fields, nil)
	return res, nil
}

// ClosePreparedStatement has nothing to release: handles live with clients.
func (s *Server) ClosePreparedStatement(context.Context, arrowflightsql.ActionClosePreparedStatementRequest) error {
	return nil
}

// DoPutPreparedStatementQuery binds the first row of parameters sent and
// returns the handle with them bound.
func (s *Server) DoPutPreparedStatementQuery(ctx context.Context, cmd arrowflightsql.PreparedStatementQuery, rdr flight.MessageReader, _ flight.MetadataWriter) ([]byte, error) {
	if _, err := principal(ctx); err != nil {
		return nil, err
	}
	h, err := decodeHandle(cmd.GetPreparedStatementHandle())
	if err != nil {
		return nil, err
	}
	h.Params = nil
	rows := 0
	for rdr.Next() {
		rec := rdr.RecordBatch()
		for r := 0; r < int(rec.NumRows()); r++ {
			if rows++; rows > 1 {
				return nil, status.Error(codes.InvalidArgument, "a query binds one row of parameters")
			}
			for c := 0; c < int(rec.NumCols()); c++ {
				p, err := paramOf(rec.Column(c), r)
				if err != nil {
					return nil, status.Errorf(codes.InvalidArgument, "parameter $%d: %v", c+1, err)
				}
				h.Params = append(h.Params, p)
			}
		}
	}
	if err := rdr.Err(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "reading parameters: %v", err)
	}
	return encodeHandle(h)
}

// GetFlightInfoPreparedStatement describes the prepared statement; its
// ticket is the handle itself.
func (s *Server) GetFlightInfoPreparedStatement(ctx context.Context, cmd arrowflightsql.PreparedStatementQuery, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	h, err := decodeHandle(cmd.GetPreparedStatementHandle())
	if err != nil {
		return nil, err
	}
	sess, st, err := s.prepare(ctx, h.SQL)
	if err != nil {
		return nil, err
	}
	schema := st.ArrowSchema()
	st.Close()
	sess.Close()
	return s.flightInfo(desc, desc.Cmd, schema), nil
}

// DoGetPreparedStatement runs a prepared statement with its bound parameters.
func (s *Server) DoGetPreparedStatement(ctx context.Context, cmd arrowflightsql.PreparedStatementQuery) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	h, err := decodeHandle(cmd.GetPreparedStatementHandle())
	if err != nil {
		return nil, nil, err
	}
	return s.stream(ctx, h)
}

// stream prepares h for the caller and sends its rows from a goroutine the
// server waits for; the goroutine ends with the query or the client's stream.
func (s *Server) stream(ctx context.Context, h handle) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	start := time.Now()
	sess, st, err := s.prepare(ctx, h.SQL)
	if err != nil {
		return nil, nil, err
	}
	args := make([]any, len(h.Params))
	for i, p := range h.Params {
		args[i] = p.value()
	}
	p, _ := principal(ctx)
	finish, err := s.audit.Begin(ctx, p, peerAddr(ctx), h.SQL, st.Tables)
	if err != nil {
		st.Close()
		sess.Close()
		return nil, nil, statusOf(err)
	}
	schema := st.ArrowSchema()
	ch := make(chan flight.StreamChunk, 2)
	s.streams.Add(1)
	go func() {
		defer s.streams.Done()
		defer close(ch)
		defer sess.Close()
		defer st.Close()
		var rows int64
		err := st.QueryRecords(ctx, args, s.cfg.BatchRows, func(rec arrow.RecordBatch) error {
			rows += rec.NumRows()
			rec.Retain()
			select {
			case ch <- flight.StreamChunk{Data: rec}:
				return nil
			case <-ctx.Done():
				rec.Release()
				return ctx.Err()
			}
		})
		finish(rows, err)
		result := "ok"
		if err != nil {
			result = outcome(err)
			select {
			case ch <- flight.StreamChunk{Err: statusOf(err)}:
			case <-ctx.Done():
			}
		}
		s.observe(result, time.Since(start))
	}()
	return schema, ch, nil
}

// GetFlightInfoCatalogs and the metadata endpoints below describe one
// catalog ("medlake") with one schema ("medlake") holding the lake tables.
func (s *Server) GetFlightInfoCatalogs(_ context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return s.flightInfo(desc, desc.Cmd, schema_ref.Catalogs), nil
}

func (s *Server) DoGetCatalogs(ctx context.Context) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	if _, err := principal(ctx); err != nil {
		return nil, nil, err
	}
	b := array.NewRecordBuilder(s.Alloc, schema_ref.Catalogs)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append(catalogName)
	return one(schema_ref.Catalogs, b.NewRecordBatch())
}

func (s *Server) GetFlightInfoSchemas(_ context.Context, _ arrowflightsql.GetDBSchemas, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return s.flightInfo(desc, desc.Cmd, schema_ref.DBSchemas), nil
}

func (s *Server) DoGetDBSchemas(ctx context.Context, cmd arrowflightsql.GetDBSchemas) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	if _, err := principal(ctx); err != nil {
		return nil, nil, err
	}
	b := array.NewRecordBuilder(s.Alloc, schema_ref.DBSchemas)
	defer b.Release()
	if matchCatalog(cmd.GetCatalog()) && like(cmd.GetDBSchemaFilterPattern(), schemaName) {
		b.Field(0).(*array.StringBuilder).Append(catalogName)
		b.Field(1).(*array.StringBuilder).Append(schemaName)
	}
	return one(schema_ref.DBSchemas, b.NewRecordBatch())
}

func (s *Server) GetFlightInfoTables(_ context.Context, cmd arrowflightsql.GetTables, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	schema := schema_ref.Tables
	if cmd.GetIncludeSchema() {
		schema = schema_ref.TablesWithIncludedSchema
	}
	return s.flightInfo(desc, desc.Cmd, schema), nil
}

func (s *Server) DoGetTables(ctx context.Context, cmd arrowflightsql.GetTables) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, nil, err
	}
	schema := schema_ref.Tables
	if cmd.GetIncludeSchema() {
		schema = schema_ref.TablesWithIncludedSchema
	}
	b := array.NewRecordBuilder(s.Alloc, schema)
	defer b.Release()
	wantTables := len(cmd.GetTableTypes()) == 0
	for _, t := range cmd.GetTableTypes() {
		wantTables = wantTables || strings.EqualFold(t, "TABLE")
	}
	if !wantTables || !matchCatalog(cmd.GetCatalog()) || !like(cmd.GetDBSchemaFilterPattern(), schemaName) {
		return one(schema, b.NewRecordBatch())
	}
	var sess *engine.Session
	if cmd.GetIncludeSchema() {
		if sess, err = s.sessions.Session(ctx, p); err != nil {
			return nil, nil, statusOf(err)
		}
		defer sess.Close()
	}
	for _, name := range s.sessions.Tables() {
		if !like(cmd.GetTableNameFilterPattern(), name) {
			continue
		}
		b.Field(0).(*array.StringBuilder).Append(catalogName)
		b.Field(1).(*array.StringBuilder).Append(schemaName)
		b.Field(2).(*array.StringBuilder).Append(name)
		b.Field(3).(*array.StringBuilder).Append("TABLE")
		if sess != nil {
			st, err := sess.Prepare(ctx, "SELECT * FROM "+quoteIdent(name)+" LIMIT 0")
			if err != nil {
				return nil, nil, statusOf(err)
			}
			b.Field(4).(*array.BinaryBuilder).Append(flight.SerializeSchema(st.ArrowSchema(), s.Alloc))
			st.Close()
		}
	}
	return one(schema, b.NewRecordBatch())
}

func (s *Server) GetFlightInfoTableTypes(_ context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return s.flightInfo(desc, desc.Cmd, schema_ref.TableTypes), nil
}

func (s *Server) DoGetTableTypes(ctx context.Context) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	if _, err := principal(ctx); err != nil {
		return nil, nil, err
	}
	b := array.NewRecordBuilder(s.Alloc, schema_ref.TableTypes)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append("TABLE")
	return one(schema_ref.TableTypes, b.NewRecordBatch())
}

const (
	catalogName = "medlake"
	schemaName  = "medlake"
)

func matchCatalog(c *string) bool { return c == nil || *c == "" || *c == catalogName }

// like matches a Flight SQL filter pattern (SQL LIKE: % any run, _ one
// character); nil matches everything.
func like(pattern *string, s string) bool {
	if pattern == nil {
		return true
	}
	p := []rune(*pattern)
	r := []rune(s)
	var match func(i, j int) bool
	match = func(i, j int) bool {
		for i < len(p) {
			switch p[i] {
			case '%':
				for k := j; k <= len(r); k++ {
					if match(i+1, k) {
						return true
					}
				}
				return false
			case '_':
				if j >= len(r) {
					return false
				}
			default:
				if j >= len(r) || r[j] != p[i] {
					return false
				}
			}
			i++
			j++
		}
		return j == len(r)
	}
	return match(0, 0)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func one(schema *arrow.Schema, rec arrow.RecordBatch) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	ch := make(chan flight.StreamChunk, 1)
	ch <- flight.StreamChunk{Data: rec}
	close(ch)
	return schema, ch, nil
}
