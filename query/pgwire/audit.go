package pgwire

import (
	"context"
	"errors"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/engine"
)

// Auditor records every statement clients send: who, from where, what, the tables it
// read, and how it ended. *catalog.Catalog implements it. It must be safe for
// concurrent use.
type Auditor interface {
	// BeginAudit durably records a statement about to run and returns its id. On an
	// error the statement is not run.
	BeginAudit(ctx context.Context, e catalog.AuditEntry) (string, error)
	// FinishAudit records how the statement ended.
	FinishAudit(ctx context.Context, id string, r catalog.AuditResult) error
}

// WithAuditor records every statement in a. Without it nothing is recorded.
func WithAuditor(a Auditor) Option { return func(s *Server) { s.auditor = a } }

// auditProtocol names this protocol in the audit log.
const auditProtocol = "pgwire"

// auditFinishTimeout bounds recording a statement's end, which must happen even when
// the client cancelled the statement or the server is stopping.
const auditFinishTimeout = 10 * time.Second

// auditBegin records p as about to run. The returned finish records its end; it must
// be called exactly once. An error means the statement must not run.
func (c *conn) auditBegin(ctx context.Context, p *prepared) (finish func(rows int64, err error), _ error) {
	if c.s.auditor == nil {
		return func(int64, error) {}, nil
	}
	e := c.auditEntry(p.query)
	if p.st != nil {
		e.Tables = p.st.Tables
	}
	id, err := c.s.auditor.BeginAudit(ctx, e)
	if err != nil {
		c.logger.Error("audit log unavailable: statement not run", "err", err)
		return nil, errorf("58000", "the audit log cannot record the statement, so it was not run")
	}
	start := time.Now()
	return func(rows int64, err error) {
		c.auditFinish(ctx, id, catalog.AuditResult{Outcome: auditOutcome(err), Rows: rows, Duration: time.Since(start), Error: errText(err)})
	}, nil
}

// auditRefused records a statement that failed before it could run (refused by the
// engine's scope, a syntax error, ...).
func (c *conn) auditRefused(ctx context.Context, q string, err error) {
	if c.s.auditor == nil {
		return
	}
	id, berr := c.s.auditor.BeginAudit(ctx, c.auditEntry(q))
	if berr != nil {
		c.logger.Error("audit log unavailable: refused statement not recorded", "err", berr)
		return
	}
	c.auditFinish(ctx, id, catalog.AuditResult{Outcome: auditOutcome(err), Error: errText(err)})
}

func (c *conn) auditEntry(q string) catalog.AuditEntry {
	// The session's principal is the one the engine scoped the statement to.
	p := c.principal
	if c.sess != nil {
		p = c.sess.Principal()
	}
	return catalog.AuditEntry{
		StartedAt: time.Now(),
		User:      p.User,
		Tenant:    p.Tenant,
		Client:    c.nc.RemoteAddr().String(),
		Protocol:  auditProtocol,
		Statement: q,
	}
}

func (c *conn) auditFinish(ctx context.Context, id string, r catalog.AuditResult) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditFinishTimeout)
	defer cancel()
	if err := c.s.auditor.FinishAudit(ctx, id, r); err != nil {
		c.logger.Error("audit log: statement end not recorded", "audit_id", id, "err", err)
	}
}

func auditOutcome(err error) string {
	var se *engine.Error
	switch {
	case err == nil:
		return catalog.AuditOK
	case errors.Is(err, engine.ErrNotReadOnly), errors.As(err, &se) && se.Code == engine.CodeInsufficientPrivilege:
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
