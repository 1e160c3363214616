package chaos

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// inject carries out one fault: break, hold, restore. Errors are recorded in the
// result, not returned: the run goes on and the report shows them.
func (r *run) inject(ctx context.Context, f Fault) FaultResult {
	res := FaultResult{Fault: f}
	fail := func(format string, a ...any) FaultResult {
		res.Err = fmt.Sprintf(format, a...)
		if res.Restored.IsZero() {
			res.Restored = time.Now()
		}
		return res
	}
	hold := func() {
		select {
		case <-ctx.Done():
		case <-time.After(f.Hold):
		}
	}
	restartCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	switch f.Kind {
	case KindAgentKill, KindHubKill:
		p := r.procByName(f.Target)
		if p == nil {
			return fail("no process %s", f.Target)
		}
		res.Injected = time.Now()
		if err := p.stop(syscall.SIGKILL, 10*time.Second); err != nil {
			return fail("killing %s: %v", f.Target, err)
		}
		hold()
		if err := p.start(restartCtx); err != nil {
			return fail("restarting %s: %v", f.Target, err)
		}
		res.Restored = time.Now()
		r.kick(f.Target)

	case KindPause:
		p := r.procByName(f.Target)
		if p == nil {
			return fail("no process %s", f.Target)
		}
		res.Injected = time.Now()
		if err := p.signal(syscall.SIGSTOP); err != nil {
			return fail("%v", err)
		}
		hold()
		if err := p.signal(syscall.SIGCONT); err != nil {
			return fail("%v", err)
		}
		res.Restored = time.Now()
		r.kick(f.Target)

	case KindBrokerRestart:
		port := r.broker.Get("MQTT_PORT")
		res.Injected = time.Now()
		if err := r.broker.StopKeep(); err != nil {
			return fail("stopping mosquitto: %v", err)
		}
		hold()
		if err := r.broker.StartAgain(); err != nil {
			return fail("starting mosquitto: %v", err)
		}
		res.Restored = time.Now()
		if got := r.broker.Get("MQTT_PORT"); got != port {
			return fail("mosquitto came back on port %s, not %s: clients cannot find it", got, port)
		}

	case KindPostgresRestart:
		port := r.pg.Get("PG_PORT")
		res.Injected = time.Now()
		if err := r.pg.StopKeep(); err != nil {
			return fail("stopping PostgreSQL: %v", err)
		}
		hold()
		if err := r.pg.StartAgain(); err != nil {
			return fail("starting PostgreSQL: %v", err)
		}
		res.Restored = time.Now()
		if got := r.pg.Get("PG_PORT"); got != port {
			return fail("PostgreSQL came back on port %s, not %s: clients cannot find it", got, port)
		}

	case KindMinIONodeDown:
		node, err := r.minio.node(f.Target)
		if err != nil {
			return fail("%v", err)
		}
		qctx, stopQueries := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { res.Queries, res.QueryFailures, res.QueryErr = r.queryLoop(qctx) })
		res.Injected = time.Now()
		if err := node.stop(syscall.SIGKILL, 10*time.Second); err != nil {
			stopQueries()
			wg.Wait()
			return fail("killing %s: %v", f.Target, err)
		}
		hold()
		stopQueries()
		wg.Wait()
		if err := node.start(restartCtx); err != nil {
			return fail("restarting %s: %v", f.Target, err)
		}
		if err := waitOK(restartCtx, r.minio.readyURL(node)); err != nil {
			return fail("%s not ready after its restart: %v", f.Target, err)
		}
		res.Restored = time.Now()

	default:
		return fail("unknown fault kind %q", f.Kind)
	}
	r.logger.Info("fault injected", "fault", f.String(), "down", res.Restored.Sub(res.Injected))
	return res
}

// kick gives a restored agent its facility's next file at once, so its recovery shows
// in its next commit instead of waiting for the drop schedule.
func (r *run) kick(target string) {
	if fac, ok := r.agentFacility[target]; ok {
		if err := r.dropper.next(fac); err != nil {
			r.logger.Warn("dropping a file", "err", err)
		}
	}
}

func (r *run) procByName(name string) *proc {
	for _, p := range append(append([]*proc{}, r.hubs...), r.agents...) {
		if p.name == name {
			return p
		}
	}
	return nil
}

// queryLoop runs a count over a generated table on the query node every 250 ms until
// ctx ends, and returns how many queries ran, how many failed and the first error.
func (r *run) queryLoop(ctx context.Context) (n, failed int, first string) {
	start := time.Now()
	for {
		// A table with commits: one not created yet fails for its own reason.
		tables := r.ledger.committedTables()
		if len(tables) == 0 {
			tables = []string{"medlake_rejects"}
		}
		table := tables[n%len(tables)]
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.queryOnce(qctx, "SELECT count(*) FROM "+table)
		cancel()
		if ctx.Err() != nil {
			return n, failed, first // cut short by the end of the fault, not a failure
		}
		n++
		if err != nil {
			failed++
			if first == "" {
				first = fmt.Sprintf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
			}
			r.logger.Warn("query failed with a MinIO node down", "err", err)
		}
		select {
		case <-ctx.Done():
			return n, failed, first
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *run) queryOnce(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, "postgres://medlake@"+r.queryAddr+"/medlake?sslmode=disable")
	if err != nil {
		return fmt.Errorf("connecting to the query node: %w", err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}
