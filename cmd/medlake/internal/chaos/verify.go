package chaos

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
)

// verify reads every generated table back through the query node (pgwire, DuckDB over
// the lake's current snapshot) and compares it with the manifest: row count, distinct
// keys, key checksum and whole-row checksum.
func (r *run) verify(ctx context.Context, rep *Report) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://medlake@"+r.queryAddr+"/medlake?sslmode=disable")
	if err != nil {
		return fmt.Errorf("verifying: connecting to the query node %s: %w", r.queryAddr, err)
	}
	defer conn.Close(context.Background())
	if err := r.waitVisible(ctx, conn); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	for _, name := range slices.Sorted(maps.Keys(r.manifest.Tables)) {
		want := r.manifest.Tables[name]
		if want.Ready.Rows == 0 {
			continue
		}
		tr := readTable(ctx, conn, name, want)
		tr.Settle()
		rep.Tables = append(rep.Tables, tr)
		rep.RecordsOut += tr.Rows
		rep.Lost += tr.Lost
		rep.Duplicated += tr.Duplicated
	}
	return nil
}

// visibleWait bounds how long committed records may take to show on the query node,
// which polls the catalog for new snapshots (query.refresh_interval, 2 s by default).
const visibleWait = time.Minute

// waitVisible waits until the query node's count of every generated table reaches the
// manifest's, so the check reads the lake's final state and not a view a refresh
// behind. A table that never gets there is read anyway and shows what is missing.
func (r *run) waitVisible(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(visibleWait)
	for {
		behind := []string{}
		for _, name := range slices.Sorted(maps.Keys(r.manifest.Tables)) {
			want := r.manifest.Tables[name].Ready.Rows
			if want == 0 {
				continue
			}
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+name).Scan(&n); err != nil || n < want {
				behind = append(behind, fmt.Sprintf("%s %d/%d (err %v)", name, n, want, err))
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("query node still behind the ledger %s after every record was committed: %s", visibleWait, strings.Join(behind, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// readTable reads one table's generated columns and sums them.
func readTable(ctx context.Context, conn *pgx.Conn, name string, want *gen.Table) TableResult {
	tr := TableResult{Table: name, Expected: want.Ready.Rows, WantKey: want.Ready.KeyChecksum, WantRow: want.Ready.RowChecksum}
	keyIdx := make([]int, len(want.Keys))
	for i, k := range want.Keys {
		keyIdx[i] = slices.Index(want.Columns, k)
		if keyIdx[i] < 0 {
			tr.ReadErr = fmt.Sprintf("key %s is not among the manifest's columns", k)
			return tr
		}
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT %s FROM %s", strings.Join(want.Columns, ", "), name))
	if err != nil {
		tr.ReadErr = err.Error()
		return tr
	}
	defer rows.Close()
	var keySum, rowSum gen.KeyChecksum
	seen := make(map[string]struct{}, want.Ready.Rows)
	keyVals := make([]string, len(keyIdx))
	fields := make([]string, len(want.Columns))
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			tr.ReadErr = err.Error()
			return tr
		}
		for i, v := range vals {
			fields[i] = gen.CanonicalField(v)
		}
		for i, k := range keyIdx {
			keyVals[i] = fields[k]
		}
		keySum.Add(keyVals...)
		rowSum.Add(strings.Join(fields, gen.RowFieldSep))
		seen[strings.Join(keyVals, "|")] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		tr.ReadErr = err.Error()
		return tr
	}
	tr.Rows, tr.Distinct = keySum.Count(), int64(len(seen))
	tr.KeySum, tr.RowSum = keySum.String(), rowSum.String()
	tr.KeyChecksumOK = tr.KeySum == want.Ready.KeyChecksum
	tr.RowChecksumOK = tr.RowSum == want.Ready.RowChecksum
	return tr
}
