package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A lease is a named row that at most one node holds at a time, until its expiry. The
// table maintenance runner takes one so that a single node compacts and expires tables
// while every node may run the runner. Claiming is one INSERT ... ON CONFLICT DO
// NOTHING or one conditional UPDATE, each atomic on SQLite, PostgreSQL and
// CockroachDB alike.

var leaseMigrations = []string{
	`CREATE TABLE IF NOT EXISTS medlake_leases (
	name TEXT NOT NULL PRIMARY KEY,
	holder TEXT NOT NULL,
	lease_until BIGINT NOT NULL,
	acquired_at BIGINT NOT NULL
)`,
}

// Lease is the current state of a named lease.
type Lease struct {
	Name       string
	Holder     string
	Until      time.Time
	AcquiredAt time.Time
}

// ClaimLease takes or renews the named lease for holder until until and reports
// whether holder now holds it. It succeeds when nobody held the lease, when the last
// holder's lease lapsed before now, or when holder already holds it.
func (c *Catalog) ClaimLease(ctx context.Context, name, holder string, now, until time.Time) (bool, error) {
	p := c.placeholder
	nowUS, untilUS := now.UnixMicro(), until.UnixMicro()
	res, err := c.db.ExecContext(ctx, `INSERT INTO medlake_leases (name, holder, lease_until, acquired_at) VALUES (`+
		p(1)+`, `+p(2)+`, `+p(3)+`, `+p(4)+`) ON CONFLICT DO NOTHING`, name, holder, untilUS, nowUS)
	if err != nil {
		return false, fmt.Errorf("claiming lease %s for %s: %w", name, holder, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	res, err = c.db.ExecContext(ctx, `UPDATE medlake_leases
		SET acquired_at = CASE WHEN holder = `+p(1)+` THEN acquired_at ELSE `+p(2)+` END, holder = `+p(3)+`, lease_until = `+p(4)+`
		WHERE name = `+p(5)+` AND (holder = `+p(6)+` OR lease_until < `+p(7)+`)`,
		holder, nowUS, holder, untilUS, name, holder, nowUS)
	if err != nil {
		return false, fmt.Errorf("claiming lease %s for %s: %w", name, holder, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReleaseLease gives up holder's lease on name so another node may take it at once.
// Releasing a lease held by someone else does nothing.
func (c *Catalog) ReleaseLease(ctx context.Context, name, holder string) error {
	p := c.placeholder
	if _, err := c.db.ExecContext(ctx, `UPDATE medlake_leases SET lease_until = 0 WHERE name = `+p(1)+` AND holder = `+p(2),
		name, holder); err != nil {
		return fmt.Errorf("releasing lease %s of %s: %w", name, holder, err)
	}
	return nil
}

// LeaseState returns the named lease; ok is false when nobody ever claimed it.
func (c *Catalog) LeaseState(ctx context.Context, name string) (l Lease, ok bool, err error) {
	var until, acquired int64
	err = c.db.QueryRowContext(ctx, `SELECT name, holder, lease_until, acquired_at FROM medlake_leases WHERE name = `+c.placeholder(1), name).
		Scan(&l.Name, &l.Holder, &until, &acquired)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Lease{}, false, nil
		}
		return Lease{}, false, fmt.Errorf("reading lease %s: %w", name, err)
	}
	l.Until, l.AcquiredAt = time.UnixMicro(until).UTC(), time.UnixMicro(acquired).UTC()
	return l, true, nil
}
