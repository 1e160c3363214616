// Package audit records every statement a query client sends, whichever
// protocol it came by: who, from where, what, the tables it read, how it
// ended. The log itself is the catalog's.
package audit

import (
	"context"
	"log/slog"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
)

// Log stores audit entries; *catalog.Catalog implements it. It must be safe
// for concurrent use.
type Log interface {
	// BeginAudit durably records a statement about to run and returns its
	// id. On an error the statement must not run.
	BeginAudit(ctx context.Context, e catalog.AuditEntry) (string, error)
	// FinishAudit records how the statement ended.
	FinishAudit(ctx context.Context, id string, r catalog.AuditResult) error
}

// ErrUnavailable is returned by Begin when the log cannot record the
// statement; the statement must not run.
var ErrUnavailable = &engine.Error{Code: "58000", Msg: "the audit log cannot record the statement, so it was not run"}

// finishTimeout bounds recording a statement's end, which must happen even
// when the client cancelled the statement or the server is stopping.
const finishTimeout = 10 * time.Second

// Recorder writes one protocol's statements to a Log. A Recorder with a
// nil Log records nothing. It is safe for concurrent use.
type Recorder struct {
	log      Log
	protocol string
	logger   *slog.Logger
}

// NewRecorder returns a Recorder naming protocol in every entry.
func NewRecorder(log Log, protocol string, logger *slog.Logger) *Recorder {
	return &Recorder{log: log, protocol: protocol, logger: logger}
}

// Begin records a statement about to run as p from client, reading tables.
// The returned finish records its end and must be called exactly once. An
// error (ErrUnavailable) means the statement must not run.
func (r *Recorder) Begin(ctx context.Context, p auth.Principal, client, statement string, tables []string) (finish func(rows int64, err error), _ error) {
	if r == nil || r.log == nil {
		return func(int64, error) {}, nil
	}
	id, err := r.log.BeginAudit(ctx, r.entry(p, client, statement, tables))
	if err != nil {
		r.logger.Error("audit log unavailable: statement not run", "protocol", r.protocol, "err", err)
		return nil, ErrUnavailable
	}
	start := time.Now()
	return func(rows int64, err error) {
		r.finish(ctx, id, catalog.AuditResult{Outcome: Outcome(err), Rows: rows, Duration: time.Since(start), Error: errText(err)})
	}, nil
}

// Refused records a statement that failed before it could run (refused by
// the engine's scope, a syntax error, ...).
func (r *Recorder) Refused(ctx context.Context, p auth.Principal, client, statement string, err error) {
	if r == nil || r.log == nil {
		return
	}
	id, berr := r.log.BeginAudit(ctx, r.entry(p, client, statement, nil))
	if berr != nil {
		r.logger.Error("audit log unavailable: refused statement not recorded", "protocol", r.protocol, "err", berr)
		return
	}
	r.finish(ctx, id, catalog.AuditResult{Outcome: Outcome(err), Error: errText(err)})
}

func (r *Recorder) entry(p auth.Principal, client, statement string, tables []string) catalog.AuditEntry {
	return catalog.AuditEntry{
		StartedAt: time.Now(),
		User:      p.User,
		Tenant:    p.Tenant,
		Client:    client,
		Protocol:  r.protocol,
		Statement: statement,
		Tables:    tables,
	}
}

func (r *Recorder) finish(ctx context.Context, id string, res catalog.AuditResult) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if err := r.log.FinishAudit(ctx, id, res); err != nil {
		r.logger.Error("audit log: statement end not recorded", "protocol", r.protocol, "audit_id", id, "err", err)
	}
}

// Outcome classifies how a statement ended: ok, refused (not permitted) or
// error.
func Outcome(err error) string {
	if err == nil {
		return catalog.AuditOK
	}
	switch engine.SQLState(err) {
	case engine.CodeInsufficientPrivilege, "25006":
		return catalog.AuditRefused
	}
	return catalog.AuditError
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
