package catalog

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The batch ledger records every batch id committed to the lake, so a re-sent batch
// is recognized and acknowledged without being written twice.
//
// migrations create every table medlake keeps in the metadata database. SQL here is the subset SQLite, PostgreSQL and CockroachDB all accept: TEXT and
// BIGINT columns, CREATE ... IF NOT EXISTS, multi-row VALUES, ON CONFLICT DO NOTHING.
// Times are unix microseconds (BIGINT) so no driver converts them.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS medlake_batches (
	batch_id TEXT NOT NULL PRIMARY KEY,
	table_name TEXT NOT NULL,
	snapshot_id BIGINT NOT NULL,
	row_count BIGINT NOT NULL,
	committed_at BIGINT NOT NULL,
	source_sha256 TEXT NOT NULL,
	agent TEXT NOT NULL
)`,
	`CREATE INDEX IF NOT EXISTS medlake_batches_snapshot ON medlake_batches (table_name, snapshot_id)`,
	// Raw archives kept in the warehouse, by feed (archive.go).
	`CREATE TABLE IF NOT EXISTS medlake_archives (
	feed TEXT NOT NULL,
	sha256 TEXT NOT NULL,
	tenant TEXT NOT NULL,
	facility TEXT NOT NULL,
	agent TEXT NOT NULL,
	source_file TEXT NOT NULL,
	source_dir TEXT NOT NULL,
	size_bytes BIGINT NOT NULL,
	source_mtime BIGINT NOT NULL,
	archived_at BIGINT NOT NULL,
	PRIMARY KEY (feed, sha256)
)`,
	`CREATE INDEX IF NOT EXISTS medlake_archives_time ON medlake_archives (feed, archived_at)`,
	// Feed definitions, every version (feeds.go).
	`CREATE TABLE IF NOT EXISTS medlake_feeds (
	name TEXT NOT NULL,
	version BIGINT NOT NULL,
	table_name TEXT NOT NULL,
	definition TEXT NOT NULL,
	sha256 TEXT NOT NULL,
	applied_at BIGINT NOT NULL,
	applied_by TEXT NOT NULL,
	PRIMARY KEY (name, version)
)`,
	// Tenants, users and facility grants (users.go). admin and disabled are 0/1:
	// BOOLEAN literals differ between SQLite and PostgreSQL.
	`CREATE TABLE IF NOT EXISTS medlake_tenants (
	name TEXT NOT NULL PRIMARY KEY,
	description TEXT NOT NULL,
	created_at BIGINT NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS medlake_users (
	name TEXT NOT NULL PRIMARY KEY,
	tenant TEXT REFERENCES medlake_tenants (name),
	admin BIGINT NOT NULL,
	verifier TEXT NOT NULL,
	disabled BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS medlake_grants (
	user_name TEXT NOT NULL REFERENCES medlake_users (name),
	facility TEXT NOT NULL,
	PRIMARY KEY (user_name, facility)
)`,
	// Scheduled reports and their runs (reports.go).
	`CREATE TABLE IF NOT EXISTS medlake_reports (
	name TEXT NOT NULL PRIMARY KEY,
	cron TEXT NOT NULL,
	sql_text TEXT NOT NULL,
	format TEXT NOT NULL,
	owner TEXT NOT NULL,
	enabled BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS medlake_report_runs (
	report TEXT NOT NULL,
	scheduled_for BIGINT NOT NULL,
	status TEXT NOT NULL,
	attempt BIGINT NOT NULL,
	node TEXT NOT NULL,
	lease_until BIGINT NOT NULL,
	started_at BIGINT NOT NULL,
	finished_at BIGINT NOT NULL,
	row_count BIGINT NOT NULL,
	location TEXT NOT NULL,
	error TEXT NOT NULL,
	PRIMARY KEY (report, scheduled_for)
)`,
	// The audit log (audit.go): one row per statement a query client sent. tables is
	// the comma-separated list of lake tables read.
	`CREATE TABLE IF NOT EXISTS medlake_audit (
	id TEXT NOT NULL PRIMARY KEY,
	started_at BIGINT NOT NULL,
	user_name TEXT NOT NULL,
	tenant TEXT NOT NULL,
	client TEXT NOT NULL,
	protocol TEXT NOT NULL,
	statement TEXT NOT NULL,
	tables TEXT NOT NULL,
	outcome TEXT NOT NULL,
	row_count BIGINT NOT NULL,
	duration_us BIGINT NOT NULL,
	error TEXT NOT NULL
)`,
	`CREATE INDEX IF NOT EXISTS medlake_audit_started ON medlake_audit (started_at)`,
	`CREATE INDEX IF NOT EXISTS medlake_audit_user ON medlake_audit (user_name, started_at)`,
}

func (c *Catalog) migrate(ctx context.Context) error {
	for _, m := range append(append(migrations[:len(migrations):len(migrations)], leaseMigrations...), cdcMigrations...) {
		if _, err := c.db.ExecContext(ctx, m); err != nil {
			return fmt.Errorf("migrating %s metadata database (%.40q...): %w", c.dialect, m, err)
		}
	}
	return nil
}

// Ledger is one committed batch.
type Ledger struct {
	BatchID      string
	Table        string
	SnapshotID   int64 // Iceberg snapshot that added the batch's rows
	Rows         int64
	CommittedAt  time.Time
	SourceSHA256 string
	Agent        string
}

// Execer is satisfied by *sql.DB and *sql.Tx, so ledger writes can join a caller's
// transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Queryer is satisfied by *sql.DB and *sql.Tx.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// chunkRows bounds bind parameters per statement (SQLite's limit is 32766, PostgreSQL's
// 65535) and keeps statements small.
const chunkRows = 500

// RecordBatches inserts ledger entries through q (the DB or a transaction). An entry
// whose batch id is already recorded is left as it was: the first commit wins. The one
// exception is a placeholder (Rows < 0: recorded by another hub's reconcile from the
// snapshot's summary, which knows only ids) of the same snapshot: the committing hub's
// own entry fills in its rows, source and agent.
func (c *Catalog) RecordBatches(ctx context.Context, q Execer, entries []Ledger) error {
	for start := 0; start < len(entries); start += chunkRows {
		part := entries[start:min(start+chunkRows, len(entries))]
		var b strings.Builder
		b.WriteString(`INSERT INTO medlake_batches (batch_id, table_name, snapshot_id, row_count, committed_at, source_sha256, agent) VALUES `)
		args := make([]any, 0, len(part)*7)
		for i, e := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('(')
			for j := range 7 {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(c.placeholder(i*7 + j + 1))
			}
			b.WriteByte(')')
			args = append(args, e.BatchID, e.Table, e.SnapshotID, e.Rows, e.CommittedAt.UTC().UnixMicro(), e.SourceSHA256, e.Agent)
		}
		b.WriteString(` ON CONFLICT (batch_id) DO UPDATE SET row_count = excluded.row_count, source_sha256 = excluded.source_sha256, agent = excluded.agent` +
			` WHERE medlake_batches.row_count < 0 AND excluded.row_count >= 0 AND medlake_batches.snapshot_id = excluded.snapshot_id`)
		if _, err := q.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("recording %d batches (first %s) in the ledger: %w", len(part), part[0].BatchID, err)
		}
	}
	return nil
}

// CommittedBatches returns the ledger entries of those ids that are committed.
func (c *Catalog) CommittedBatches(ctx context.Context, ids []string) (map[string]Ledger, error) {
	return c.CommittedBatchesIn(ctx, c.db, ids)
}

// CommittedBatchesIn is CommittedBatches through q (the DB or a transaction).
func (c *Catalog) CommittedBatchesIn(ctx context.Context, q Queryer, ids []string) (map[string]Ledger, error) {
	out := make(map[string]Ledger, len(ids))
	for start := 0; start < len(ids); start += chunkRows {
		part := ids[start:min(start+chunkRows, len(ids))]
		var b strings.Builder
		b.WriteString(`SELECT batch_id, table_name, snapshot_id, row_count, committed_at, source_sha256, agent FROM medlake_batches WHERE batch_id IN (`)
		args := make([]any, len(part))
		for i, id := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(c.placeholder(i + 1))
			args[i] = id
		}
		b.WriteByte(')')
		if err := c.scanLedger(ctx, q, b.String(), args, out); err != nil {
			return nil, fmt.Errorf("looking up %d batch ids (first %s) in the ledger: %w", len(part), part[0], err)
		}
	}
	return out, nil
}

// SnapshotRecorded reports whether any batch of the table's snapshot is in the ledger.
// The hub uses it to find snapshots committed by a hub that crashed before recording.
func (c *Catalog) SnapshotRecorded(ctx context.Context, tableName string, snapshotID int64) (bool, error) {
	q := `SELECT batch_id FROM medlake_batches WHERE table_name = ` + c.placeholder(1) +
		` AND snapshot_id = ` + c.placeholder(2) + ` LIMIT 1`
	var id string
	err := c.db.QueryRowContext(ctx, q, tableName, snapshotID).Scan(&id)
	switch {
	case err == sql.ErrNoRows:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking up snapshot %d of table %s in the ledger: %w", snapshotID, tableName, err)
	}
	return true, nil
}

func (c *Catalog) scanLedger(ctx context.Context, q Queryer, query string, args []any, out map[string]Ledger) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var e Ledger
		var at int64
		if err := rows.Scan(&e.BatchID, &e.Table, &e.SnapshotID, &e.Rows, &at, &e.SourceSHA256, &e.Agent); err != nil {
			return err
		}
		e.CommittedAt = time.UnixMicro(at).UTC()
		out[e.BatchID] = e
	}
	return rows.Err()
}

func (c *Catalog) placeholder(n int) string {
	if c.dialect == Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}
