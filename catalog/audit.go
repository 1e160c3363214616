package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// The audit log: every statement a query client sends, who sent it, from where, what it
// read and how it ended. A statement is recorded before it runs (BeginAudit, outcome
// "running") and completed after (FinishAudit); the query layer does not run a
// statement it could not record. Rows are only ever added and completed, never removed
// by medlake.

// Audit outcomes.
const (
	AuditRunning = "running" // recorded, not finished (or the node died while it ran)
	AuditOK      = "ok"
	AuditError   = "error"
	AuditRefused = "refused" // refused before running: permission, not a SELECT, ...
)

// AuditEntry is one statement in the audit log.
type AuditEntry struct {
	ID        string
	StartedAt time.Time
	User      string
	Tenant    string // "" for an admin
	Client    string // the client's address
	Protocol  string // pgwire, flightsql, http
	Statement string
	Tables    []string // lake tables read
	AuditResult
}

// AuditResult is how a statement ended.
type AuditResult struct {
	Outcome  string
	Rows     int64 // rows returned
	Duration time.Duration
	Error    string
}

// AuditFilter selects entries for AuditLog.
type AuditFilter struct {
	User  string    // "" for every user
	Since time.Time // zero for the beginning
	Limit int       // 0 for DefaultAuditLimit
}

// DefaultAuditLimit bounds AuditLog when the filter gives no limit.
const DefaultAuditLimit = 100

// maxAuditStatement bounds the statement text kept: a client could send megabytes.
const maxAuditStatement = 64 << 10

// BeginAudit durably records a statement about to run, with outcome "running", and
// returns its id. Safe for concurrent use.
func (c *Catalog) BeginAudit(ctx context.Context, e AuditEntry) (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("audit entry id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if e.StartedAt.IsZero() {
		e.StartedAt = time.Now()
	}
	stmt := e.Statement
	if len(stmt) > maxAuditStatement {
		stmt = stmt[:maxAuditStatement] + "…(truncated)"
	}
	p := c.placeholder
	_, err := c.db.ExecContext(ctx, `INSERT INTO medlake_audit (id, started_at, user_name, tenant, client, protocol, statement, tables, outcome, row_count, duration_us, error) VALUES (`+
		p(1)+`, `+p(2)+`, `+p(3)+`, `+p(4)+`, `+p(5)+`, `+p(6)+`, `+p(7)+`, `+p(8)+`, `+p(9)+`, 0, 0, '')`,
		id, e.StartedAt.UTC().UnixMicro(), e.User, e.Tenant, e.Client, e.Protocol, strings.ToValidUTF8(stmt, "?"),
		strings.Join(e.Tables, ","), AuditRunning)
	if err != nil {
		return "", fmt.Errorf("recording statement of %s in the audit log: %w", e.User, err)
	}
	return id, nil
}

// FinishAudit records how the statement id ended.
func (c *Catalog) FinishAudit(ctx context.Context, id string, r AuditResult) error {
	p := c.placeholder
	res, err := c.db.ExecContext(ctx, `UPDATE medlake_audit SET outcome = `+p(1)+`, row_count = `+p(2)+`, duration_us = `+p(3)+`, error = `+p(4)+` WHERE id = `+p(5),
		r.Outcome, r.Rows, r.Duration.Microseconds(), strings.ToValidUTF8(r.Error, "?"), id)
	if err != nil {
		return fmt.Errorf("completing audit entry %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("completing audit entry %s: %w", id, ErrNotFound)
	}
	return nil
}

// AuditLog returns entries, newest first.
func (c *Catalog) AuditLog(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	q := `SELECT id, started_at, user_name, tenant, client, protocol, statement, tables, outcome, row_count, duration_us, error FROM medlake_audit WHERE started_at >= ` + c.placeholder(1)
	args := []any{f.Since.UTC().UnixMicro()}
	if f.Since.IsZero() {
		args[0] = int64(0)
	}
	if f.User != "" {
		q += ` AND user_name = ` + c.placeholder(2)
		args = append(args, f.User)
	}
	q += fmt.Sprintf(` ORDER BY started_at DESC, id LIMIT %d`, limit)
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at, us int64
		var tables string
		if err := rows.Scan(&e.ID, &at, &e.User, &e.Tenant, &e.Client, &e.Protocol, &e.Statement, &tables, &e.Outcome, &e.Rows, &us, &e.Error); err != nil {
			return nil, fmt.Errorf("reading the audit log: %w", err)
		}
		e.StartedAt, e.Duration = time.UnixMicro(at).UTC(), time.Duration(us)*time.Microsecond
		if tables != "" {
			e.Tables = strings.Split(tables, ",")
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	return out, nil
}
