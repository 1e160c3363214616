package pgwire

import (
	"context"

	"github.com/medlake/medlake/query/audit"
	"github.com/medlake/medlake/query/auth"
)

// WithAuditor records every statement in log (the catalog's audit log).
// Without it nothing is recorded.
func WithAuditor(log audit.Log) Option { return func(s *Server) { s.auditLog = log } }

// auditProtocol names this protocol in the audit log.
const auditProtocol = "pgwire"

// auditBegin records p as about to run. The returned finish records its end; it must
// be called exactly once. An error means the statement must not run.
func (c *conn) auditBegin(ctx context.Context, p *prepared) (finish func(rows int64, err error), _ error) {
	var tables []string
	if p.st != nil {
		tables = p.st.Tables
	}
	return c.s.audit.Begin(ctx, c.auditPrincipal(), c.nc.RemoteAddr().String(), p.query, tables)
}

// auditPrincipal is the session's principal: the one the engine scoped the
// statement to.
func (c *conn) auditPrincipal() auth.Principal {
	if c.sess != nil {
		return c.sess.Principal()
	}
	return c.principal
}

// auditRefused records a statement that failed before it could run (refused by the
// engine's scope, a syntax error, ...).
func (c *conn) auditRefused(ctx context.Context, q string, err error) {
	c.s.audit.Refused(ctx, c.auditPrincipal(), c.nc.RemoteAddr().String(), q, err)
}
