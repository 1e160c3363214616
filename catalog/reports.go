package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Scheduled reports live in the catalog, and so does every run: a run row is
// the lease that lets exactly one query node run an occurrence. Claiming is a
// single INSERT ... ON CONFLICT DO NOTHING or a conditional UPDATE, each
// atomic on SQLite, PostgreSQL and CockroachDB alike, so no node can take an
// occurrence another holds.

// Run states.
const (
	RunRunning = "running"
	RunDone    = "done"
	RunFailed  = "failed"
)

// ErrNoReport means no report has that name.
var ErrNoReport = errors.New("no such report")

// Report is a scheduled query.
type Report struct {
	Name    string
	Cron    string // standard five-field cron expression, or a descriptor such as @daily
	SQL     string
	Format  string // an encoding of query/results: csv, parquet, ...
	Owner   string // the login whose rows the report reads
	Enabled bool
	Updated time.Time
}

// ReportRun is one occurrence of a report.
type ReportRun struct {
	Report       string
	ScheduledFor time.Time
	Status       string
	Attempt      int
	Node         string
	LeaseUntil   time.Time
	StartedAt    time.Time
	FinishedAt   time.Time // zero while running
	Rows         int64
	Location     string // where the result was written
	Error        string
}

// PutReport adds a report or replaces the one of that name.
func (c *Catalog) PutReport(ctx context.Context, r Report) error {
	p := c.placeholder
	enabled := 0
	if r.Enabled {
		enabled = 1
	}
	now := time.Now().UnixMicro()
	_, err := c.db.ExecContext(ctx, `INSERT INTO medlake_reports (name, cron, sql_text, format, owner, enabled, updated_at) VALUES (`+
		p(1)+`, `+p(2)+`, `+p(3)+`, `+p(4)+`, `+p(5)+`, `+p(6)+`, `+p(7)+`)
		ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, sql_text = excluded.sql_text, format = excluded.format,
		owner = excluded.owner, enabled = excluded.enabled, updated_at = excluded.updated_at`,
		r.Name, r.Cron, r.SQL, r.Format, r.Owner, enabled, now)
	if err != nil {
		return fmt.Errorf("saving report %s: %w", r.Name, err)
	}
	return nil
}

// Reports lists every report, by name.
func (c *Catalog) Reports(ctx context.Context) ([]Report, error) {
	return c.queryReports(ctx, `SELECT name, cron, sql_text, format, owner, enabled, updated_at FROM medlake_reports ORDER BY name`)
}

// Report returns the named report, or an error wrapping ErrNoReport.
func (c *Catalog) Report(ctx context.Context, name string) (Report, error) {
	rs, err := c.queryReports(ctx, `SELECT name, cron, sql_text, format, owner, enabled, updated_at FROM medlake_reports WHERE name = `+c.placeholder(1), name)
	if err != nil {
		return Report{}, err
	}
	if len(rs) == 0 {
		return Report{}, fmt.Errorf("report %s: %w", name, ErrNoReport)
	}
	return rs[0], nil
}

func (c *Catalog) queryReports(ctx context.Context, q string, args ...any) ([]Report, error) {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading reports: %w", err)
	}
	defer rows.Close()
	var out []Report
	for rows.Next() {
		var r Report
		var enabled, updated int64
		if err := rows.Scan(&r.Name, &r.Cron, &r.SQL, &r.Format, &r.Owner, &enabled, &updated); err != nil {
			return nil, fmt.Errorf("reading reports: %w", err)
		}
		r.Enabled = enabled != 0
		r.Updated = time.UnixMicro(updated).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetReportEnabled pauses or resumes a report.
func (c *Catalog) SetReportEnabled(ctx context.Context, name string, enabled bool) error {
	v := 0
	if enabled {
		v = 1
	}
	p := c.placeholder
	res, err := c.db.ExecContext(ctx, `UPDATE medlake_reports SET enabled = `+p(1)+`, updated_at = `+p(2)+` WHERE name = `+p(3),
		v, time.Now().UnixMicro(), name)
	return oneRow(res, err, name)
}

// DeleteReport removes a report; its runs stay as history.
func (c *Catalog) DeleteReport(ctx context.Context, name string) error {
	res, err := c.db.ExecContext(ctx, `DELETE FROM medlake_reports WHERE name = `+c.placeholder(1), name)
	return oneRow(res, err, name)
}

func oneRow(res sql.Result, err error, name string) error {
	if err != nil {
		return fmt.Errorf("report %s: %w", name, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("report %s: %w", name, ErrNoReport)
	}
	return nil
}

// ClaimRun takes the occurrence of report at scheduledFor for node until
// leaseUntil, and reports whether it did. It succeeds when nobody ran the
// occurrence yet, when the node holding it let its lease lapse (it died),
// or when it failed before retryAfter and has had fewer than maxAttempts.
// The attempt number of the claimed run is returned.
func (c *Catalog) ClaimRun(ctx context.Context, report string, scheduledFor time.Time, node string, now, leaseUntil, retryBefore time.Time, maxAttempts int) (attempt int, ok bool, err error) {
	p := c.placeholder
	sched, nowUS, lease := scheduledFor.UnixMicro(), now.UnixMicro(), leaseUntil.UnixMicro()
	res, err := c.db.ExecContext(ctx, `INSERT INTO medlake_report_runs
		(report, scheduled_for, status, attempt, node, lease_until, started_at, finished_at, row_count, location, error)
		VALUES (`+p(1)+`, `+p(2)+`, '`+RunRunning+`', 1, `+p(3)+`, `+p(4)+`, `+p(5)+`, 0, 0, '', '') ON CONFLICT DO NOTHING`,
		report, sched, node, lease, nowUS)
	if err != nil {
		return 0, false, fmt.Errorf("claiming report %s at %s: %w", report, scheduledFor.Format(time.RFC3339), err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return 1, true, nil
	}
	res, err = c.db.ExecContext(ctx, `UPDATE medlake_report_runs
		SET status = '`+RunRunning+`', attempt = attempt + 1, node = `+p(1)+`, lease_until = `+p(2)+`, started_at = `+p(3)+`, finished_at = 0, error = ''
		WHERE report = `+p(4)+` AND scheduled_for = `+p(5)+` AND attempt < `+p(6)+` AND (
			(status = '`+RunRunning+`' AND lease_until < `+p(7)+`) OR
			(status = '`+RunFailed+`' AND finished_at < `+p(8)+`))`,
		node, lease, nowUS, report, sched, maxAttempts, nowUS, retryBefore.UnixMicro())
	if err != nil {
		return 0, false, fmt.Errorf("claiming report %s at %s: %w", report, scheduledFor.Format(time.RFC3339), err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return 0, false, nil
	}
	run, err := c.reportRun(ctx, report, scheduledFor)
	if err != nil {
		return 0, false, err
	}
	if run.Node != node {
		return 0, false, nil
	}
	return run.Attempt, true, nil
}

// FinishRun records the outcome of a run node holds. A node whose lease
// lapsed and whose run was taken over records nothing (false).
func (c *Catalog) FinishRun(ctx context.Context, run ReportRun) (bool, error) {
	p := c.placeholder
	res, err := c.db.ExecContext(ctx, `UPDATE medlake_report_runs
		SET status = `+p(1)+`, finished_at = `+p(2)+`, row_count = `+p(3)+`, location = `+p(4)+`, error = `+p(5)+`
		WHERE report = `+p(6)+` AND scheduled_for = `+p(7)+` AND node = `+p(8)+` AND attempt = `+p(9)+` AND status = '`+RunRunning+`'`,
		run.Status, run.FinishedAt.UnixMicro(), run.Rows, run.Location, run.Error,
		run.Report, run.ScheduledFor.UnixMicro(), run.Node, run.Attempt)
	if err != nil {
		return false, fmt.Errorf("recording run of report %s at %s: %w", run.Report, run.ScheduledFor.Format(time.RFC3339), err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReportRuns returns a report's latest runs, newest first.
func (c *Catalog) ReportRuns(ctx context.Context, report string, limit int) ([]ReportRun, error) {
	p := c.placeholder
	return c.queryRuns(ctx, `SELECT report, scheduled_for, status, attempt, node, lease_until, started_at, finished_at, row_count, location, error
		FROM medlake_report_runs WHERE report = `+p(1)+` ORDER BY scheduled_for DESC LIMIT `+p(2), report, limit)
}

func (c *Catalog) reportRun(ctx context.Context, report string, scheduledFor time.Time) (ReportRun, error) {
	p := c.placeholder
	runs, err := c.queryRuns(ctx, `SELECT report, scheduled_for, status, attempt, node, lease_until, started_at, finished_at, row_count, location, error
		FROM medlake_report_runs WHERE report = `+p(1)+` AND scheduled_for = `+p(2), report, scheduledFor.UnixMicro())
	if err != nil {
		return ReportRun{}, err
	}
	if len(runs) == 0 {
		return ReportRun{}, fmt.Errorf("run of report %s at %s vanished", report, scheduledFor.Format(time.RFC3339))
	}
	return runs[0], nil
}

func (c *Catalog) queryRuns(ctx context.Context, q string, args ...any) ([]ReportRun, error) {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading report runs: %w", err)
	}
	defer rows.Close()
	var out []ReportRun
	for rows.Next() {
		var r ReportRun
		var sched, lease, started, finished int64
		if err := rows.Scan(&r.Report, &sched, &r.Status, &r.Attempt, &r.Node, &lease, &started, &finished, &r.Rows, &r.Location, &r.Error); err != nil {
			return nil, fmt.Errorf("reading report runs: %w", err)
		}
		r.ScheduledFor = time.UnixMicro(sched).UTC()
		r.LeaseUntil = time.UnixMicro(lease).UTC()
		r.StartedAt = time.UnixMicro(started).UTC()
		if finished != 0 {
			r.FinishedAt = time.UnixMicro(finished).UTC()
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
