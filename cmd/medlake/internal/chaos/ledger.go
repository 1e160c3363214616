package chaos

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ledgerWatch polls the catalog's batch ledger (medlake_batches) and keeps every
// committed batch of the generated tables with its commit time: the run's record of
// when ingestion made progress. While PostgreSQL is down it simply sees nothing.
type ledgerWatch struct {
	dsn    string
	tables map[string]bool
	logger *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	seen    map[string]bool // guarded by mu; batch ids
	commits []Commit        // guarded by mu; in the order seen
	seenIn  map[string]bool // guarded by mu; tables with a commit
	rows    int64           // guarded by mu
}

func startLedgerWatch(dsn string, tables map[string]bool, logger *slog.Logger) *ledgerWatch {
	ctx, cancel := context.WithCancel(context.Background())
	l := &ledgerWatch{dsn: dsn, tables: tables, logger: logger, cancel: cancel, seen: map[string]bool{}, seenIn: map[string]bool{}}
	l.wg.Go(func() { l.loop(ctx) })
	return l
}

func (l *ledgerWatch) loop(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	// Commit times come from the hubs' clocks (this machine's); rows appear in the
	// ledger a moment after their committed_at, so each poll looks back a minute.
	var watermark int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if conn == nil {
			c, err := pgConnect(ctx, l.dsn)
			if err != nil {
				continue
			}
			conn = c
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.poll(qctx, conn, watermark-int64(time.Minute/time.Microsecond), &watermark)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
		}
	}
}

func (l *ledgerWatch) poll(ctx context.Context, conn *pgx.Conn, since int64, watermark *int64) error {
	rows, err := conn.Query(ctx, `SELECT batch_id, table_name, row_count, committed_at, agent, source_sha256 FROM medlake_batches WHERE committed_at >= $1`, since)
	if err != nil {
		return err
	}
	defer rows.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for rows.Next() {
		var (
			id, table, agent, sha string
			n, at                 int64
		)
		if err := rows.Scan(&id, &table, &n, &at, &agent, &sha); err != nil {
			return err
		}
		*watermark = max(*watermark, at)
		if l.seen[id] || !l.tables[table] {
			continue
		}
		if n < 0 {
			// A reconcile's placeholder: the committing hub fills in its rows a moment
			// later (one that died before doing so leaves it, and the drain waits).
			continue
		}
		l.seen[id] = true
		l.seenIn[table] = true
		l.commits = append(l.commits, Commit{At: time.UnixMicro(at), Agent: agent, Rows: n, Source: sha})
		l.rows += n
	}
	return rows.Err()
}

// committedTables are the generated tables with at least one commit, sorted.
func (l *ledgerWatch) committedTables() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(maps.Keys(l.seenIn))
}

// totals are the records and batches committed so far.
func (l *ledgerWatch) totals() (rows int64, batches int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rows, len(l.commits)
}

// snapshot returns the commits seen so far, sorted by time.
func (l *ledgerWatch) snapshot() []Commit {
	l.mu.Lock()
	c := slices.Clone(l.commits)
	l.mu.Unlock()
	slices.SortFunc(c, func(a, b Commit) int { return a.At.Compare(b.At) })
	return c
}

// stop ends the polling and waits for it. Safe to call twice.
func (l *ledgerWatch) stop() {
	l.cancel()
	l.wg.Wait()
}
