package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/query/audit"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/results"
)

// Path is where the handler is mounted.
const Path = "/api/v1/query"

// Defaults for Config.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultBatchRows    = engine.DefaultBatchRows
)

// Config tunes the handler.
type Config struct {
	// MaxBodyBytes bounds a request body (the statement and its parameters).
	MaxBodyBytes int64
	// BatchRows is how many rows are encoded and flushed to the client at a time.
	BatchRows int
	// TrustLoopback admits clients on loopback as admins when they send no
	// credentials or a user name the store does not know (single-machine
	// setups). Known users always prove their password.
	TrustLoopback bool
}

// Sessions opens engine sessions scoped to a principal. It must be safe for
// concurrent use.
type Sessions interface {
	Session(ctx context.Context, p auth.Principal) (*engine.Session, error)
}

// Observer is told the outcome ("ok", "error", "refused") and duration of
// every statement. It must be safe for concurrent use.
type Observer func(outcome string, elapsed time.Duration)

// Handler serves POST /api/v1/query. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	store    auth.Store // nil: no logins configured
	sessions Sessions
	logger   *slog.Logger
	observe  Observer
	audit    *audit.Recorder
}

// New returns a Handler. store may be nil only with cfg.TrustLoopback;
// observe and log may be nil (log: statements are not audited).
func New(cfg Config, store auth.Store, sessions Sessions, log audit.Log, logger *slog.Logger, observe Observer) (*Handler, error) {
	if store == nil && !cfg.TrustLoopback {
		return nil, errors.New("httpapi: no login store and loopback not trusted: nobody could log in")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = DefaultBatchRows
	}
	if observe == nil {
		observe = func(string, time.Duration) {}
	}
	logger = logger.With("component", "httpapi")
	return &Handler{cfg: cfg, store: store, sessions: sessions, logger: logger, observe: observe,
		audit: audit.NewRecorder(log, "http", logger)}, nil
}

// request is the JSON body form; a body of any other content type is the
// statement itself.
type request struct {
	SQL    string `json:"sql"`
	Params []any  `json:"params"`
	Format string `json:"format"`
}

// apiError is the body of every error answered before rows were sent.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"` // SQLSTATE
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "0A000", "use POST with the statement in the body")
		return
	}
	p, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	req, err := h.readRequest(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "08P01", err.Error())
		return
	}
	enc, err := results.Negotiate(req.Format, r.Header.Get("Accept"))
	if err != nil {
		writeError(w, http.StatusNotAcceptable, "0A000", err.Error())
		return
	}
	start := time.Now()
	outcome := h.run(w, r, p, req, enc)
	elapsed := time.Since(start)
	h.observe(outcome, elapsed)
	h.logger.Info("http query", "user", p.User, "remote", r.RemoteAddr, "format", enc.Name,
		"outcome", outcome, "elapsed", elapsed)
}

// authenticate checks HTTP Basic credentials and answers 401 itself when
// they are missing or wrong; every failure looks the same to the client.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	user, password, hasBasic := r.BasicAuth()
	trusted := h.cfg.TrustLoopback && isLoopback(r.RemoteAddr)
	if trusted && user == "" {
		user = "loopback"
	}
	if h.store == nil || !hasBasic {
		if trusted {
			return auth.Principal{User: user, Admin: true}, true
		}
		if h.store == nil {
			h.logger.Warn("http login refused", "remote", r.RemoteAddr, "reason", "no logins configured and client not on loopback")
		}
		deny(w)
		return auth.Principal{}, false
	}
	login, err := h.store.Login(r.Context(), user)
	reason := ""
	switch {
	case errors.Is(err, auth.ErrUnknownUser) && trusted:
		return auth.Principal{User: user, Admin: true}, true
	case errors.Is(err, auth.ErrUnknownUser):
		reason = "unknown user"
	case err != nil:
		h.logger.Error("looking up login", "user", user, "err", err)
		writeError(w, http.StatusServiceUnavailable, "58000", "cannot check credentials now; retry")
		return auth.Principal{}, false
	case login.Disabled:
		reason = "login disabled"
	case !login.Verifier.Check(password):
		reason = "wrong password"
	}
	if reason != "" {
		h.logger.Warn("http login refused", "user", user, "remote", r.RemoteAddr, "reason", reason)
		deny(w)
		return auth.Principal{}, false
	}
	return login.Principal, true
}

func deny(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="medlake", charset="UTF-8"`)
	writeError(w, http.StatusUnauthorized, "28P01", "authentication failed")
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (h *Handler) readRequest(r *http.Request) (request, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBodyBytes+1))
	if err != nil {
		return request{}, fmt.Errorf("reading request body: %w", err)
	}
	if int64(len(body)) > h.cfg.MaxBodyBytes {
		return request{}, fmt.Errorf("request body is over %d bytes", h.cfg.MaxBodyBytes)
	}
	var req request
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/json" {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return request{}, fmt.Errorf("request body is not {\"sql\": ..., \"params\": [...], \"format\": ...}: %w", err)
		}
	} else {
		req.SQL = string(body)
	}
	if f := r.URL.Query().Get("format"); f != "" {
		req.Format = f
	}
	if strings.TrimSpace(req.SQL) == "" {
		return request{}, errors.New("no SQL statement in the request body")
	}
	return req, nil
}

// run executes the statement and streams its rows; it returns the outcome
// for metrics.
func (h *Handler) run(w http.ResponseWriter, r *http.Request, p auth.Principal, req request, enc results.Encoding) string {
	var runErr error // the statement's own outcome, for the audit log
	ctx := r.Context()
	sess, err := h.sessions.Session(ctx, p)
	if err != nil {
		return h.fail(w, err)
	}
	defer sess.Close()
	st, err := sess.Prepare(ctx, req.SQL)
	if err != nil {
		h.audit.Refused(ctx, p, r.RemoteAddr, req.SQL, err)
		return h.fail(w, err)
	}
	defer st.Close()
	finish, err := h.audit.Begin(ctx, p, r.RemoteAddr, req.SQL, st.Tables)
	if err != nil {
		return h.fail(w, err)
	}
	var rows int64
	defer func() { finish(rows, runErr) }()
	args, err := bindParams(st.Params, req.Params)
	if err != nil {
		runErr = err
		writeError(w, http.StatusBadRequest, "22023", err.Error())
		return "error"
	}

	w.Header().Set("Content-Type", enc.ContentType)
	w.Header().Set("Trailer", errorTrailer)
	w.Header().Set("Cache-Control", "no-store")
	schema := st.ArrowSchema()
	var out results.Writer
	flusher, _ := w.(http.Flusher)
	err = st.QueryRecords(ctx, args, h.cfg.BatchRows, func(rec arrow.RecordBatch) error {
		if out == nil {
			var err error
			if out, err = enc.Open(w, schema); err != nil {
				return err
			}
		}
		if err := out.Write(rec); err != nil {
			return err
		}
		rows += rec.NumRows()
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	runErr = err
	if err != nil && out == nil {
		// Nothing sent yet: the status can still say what went wrong.
		w.Header().Del("Trailer")
		return h.fail(w, err)
	}
	if out == nil {
		if out, err = enc.Open(w, schema); err != nil {
			return h.failStream(w, err)
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	runErr = err
	if err != nil {
		return h.failStream(w, err)
	}
	return "ok"
}

// errorTrailer carries an error that happened after rows were sent, when the
// status line is long gone.
const errorTrailer = "Medlake-Error"

func (h *Handler) failStream(w http.ResponseWriter, err error) string {
	h.logger.Warn("http query failed while streaming", "err", err)
	w.Header().Set(errorTrailer, engine.SQLState(err)+" "+oneLine(err.Error()))
	return outcome(err)
}

func (h *Handler) fail(w http.ResponseWriter, err error) string {
	code := engine.SQLState(err)
	status := http.StatusBadRequest
	switch {
	case code == "42501" || code == "25006":
		status = http.StatusForbidden
	case code == "57014":
		status = http.StatusRequestTimeout
	case code == "58000", strings.HasPrefix(code, "53"):
		status = http.StatusServiceUnavailable
	case code == "XX000":
		status = http.StatusInternalServerError
		h.logger.Error("http query failed", "err", err)
	}
	writeError(w, status, code, err.Error())
	return outcome(err)
}

func outcome(err error) string { return audit.Outcome(err) }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Error: msg, Code: code})
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// bindParams converts JSON parameter values to what the statement's
// parameter types bind: JSON numbers become integers for integer
// parameters, other values pass as DuckDB casts them.
func bindParams(types []engine.Type, values []any) ([]any, error) {
	if len(values) != len(types) {
		return nil, fmt.Errorf("statement has %d parameters, request gives %d", len(types), len(values))
	}
	args := make([]any, len(values))
	for i, v := range values {
		switch v := v.(type) {
		case json.Number:
			if isInteger(types[i].ID) {
				n, err := v.Int64()
				if err != nil {
					return nil, fmt.Errorf("parameter $%d: %s is not an integer", i+1, v)
				}
				args[i] = n
				continue
			}
			if types[i].ID == duckdb.TYPE_DECIMAL || types[i].ID == duckdb.TYPE_VARCHAR {
				args[i] = v.String() // exact: DuckDB casts the text
				continue
			}
			f, err := v.Float64()
			if err != nil {
				return nil, fmt.Errorf("parameter $%d: %s is not a number", i+1, v)
			}
			args[i] = f
		case nil, string, bool:
			args[i] = v
		default:
			return nil, fmt.Errorf("parameter $%d: %T values are not supported; send a string", i+1, v)
		}
	}
	return args, nil
}

func isInteger(t duckdb.Type) bool {
	switch t {
	case duckdb.TYPE_TINYINT, duckdb.TYPE_SMALLINT, duckdb.TYPE_INTEGER, duckdb.TYPE_BIGINT,
		duckdb.TYPE_UTINYINT, duckdb.TYPE_USMALLINT, duckdb.TYPE_UINTEGER, duckdb.TYPE_UBIGINT:
		return true
	}
	return false
}
