package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
)

// CDC state: what the hub needs to apply upsert, cdc and duplicates-drop tables
// without reading the lake on every commit.
//
//   - medlake_cdc_tables: per table, the Iceberg snapshot the key state reflects
//     (0 = the empty table). A hub decides winners only against state applied for the
//     snapshot its commit is based on; the Iceberg commit is a compare-and-swap on that
//     snapshot and the state update a compare-and-swap on this row, so two hubs never
//     decide against the same state and commit both.
//   - medlake_cdc_keys: per table and key, the high-water sequence, a hash of the
//     winning row and whether the key is live (a cdc delete leaves a tombstone with its
//     sequence, so a late insert cannot bring the key back).
//   - medlake_cdc_intents: the state change of a commit, written before its Iceberg
//     commit and named in the snapshot's summary (medlake.cdc_token). A hub that dies
//     between the Iceberg commit and the state update leaves the intent; the next
//     commit of any hub finds the token in the snapshot and applies it.
//
// Every transaction goes through crdb.ExecuteTx, which retries CockroachDB's
// serialization failures (SQLSTATE 40001) and works unchanged on PostgreSQL and SQLite.
var cdcMigrations = []string{
	`CREATE TABLE IF NOT EXISTS medlake_cdc_tables (
	table_name TEXT NOT NULL PRIMARY KEY,
	snapshot_id BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS medlake_cdc_keys (
	table_name TEXT NOT NULL,
	key_text TEXT NOT NULL,
	seq BIGINT NOT NULL,
	row_hash TEXT NOT NULL,
	live BIGINT NOT NULL,
	PRIMARY KEY (table_name, key_text)
)`,
	`CREATE TABLE IF NOT EXISTS medlake_cdc_intents (
	table_name TEXT NOT NULL,
	token TEXT NOT NULL,
	part BIGINT NOT NULL,
	base_snapshot BIGINT NOT NULL,
	payload TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (table_name, token, part)
)`,
}

// ErrCDCStateMoved says the table's key state was applied for another snapshot than
// the one a change was planned against: reload the table and plan again.
var ErrCDCStateMoved = errors.New("cdc state of the table moved")

// keyChunk bounds the keys per statement reading or writing key state: 5 bind
// parameters a key stays under SQLite's 32766 and PostgreSQL's 65535.
const keyChunk = 2000

// intentPartKeys bounds the keys in one intent row (CockroachDB prefers rows well under
// a few MB).
const intentPartKeys = 5000

// KeyState is the state of one key of a CDC table.
type KeyState struct {
	Key  string // the encoded key (tenant, facility and key columns)
	Seq  int64  // high-water sequence
	Hash string // hash of the winning row's columns; empty for a tombstone
	Live bool   // false after a delete
}

// CDCApplied returns the snapshot the table's key state was last applied for, and
// false when the table has no state yet.
func (c *Catalog) CDCApplied(ctx context.Context, tableName string) (int64, bool, error) {
	var snap int64
	err := c.db.QueryRowContext(ctx, `SELECT snapshot_id FROM medlake_cdc_tables WHERE table_name = `+c.placeholder(1), tableName).Scan(&snap)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("reading cdc state of table %s: %w", tableName, err)
	}
	return snap, true, nil
}

// CDCKeys returns the state of those keys that have one.
func (c *Catalog) CDCKeys(ctx context.Context, tableName string, keys []string) (map[string]KeyState, error) {
	out := make(map[string]KeyState, len(keys))
	for start := 0; start < len(keys); start += keyChunk {
		part := keys[start:min(start+keyChunk, len(keys))]
		var b strings.Builder
		b.WriteString(`SELECT key_text, seq, row_hash, live FROM medlake_cdc_keys WHERE table_name = ` + c.placeholder(1) + ` AND key_text IN (`)
		args := make([]any, 0, len(part)+1)
		args = append(args, tableName)
		for i, k := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(c.placeholder(i + 2))
			args = append(args, k)
		}
		b.WriteByte(')')
		if err := c.scanKeys(ctx, c.db, b.String(), args, out); err != nil {
			return nil, fmt.Errorf("reading cdc state of %d keys of table %s: %w", len(part), tableName, err)
		}
	}
	return out, nil
}

func (c *Catalog) scanKeys(ctx context.Context, q Queryer, query string, args []any, out map[string]KeyState) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k KeyState
		var live int64
		if err := rows.Scan(&k.Key, &k.Seq, &k.Hash, &live); err != nil {
			return err
		}
		k.Live = live != 0
		out[k.Key] = k
	}
	return rows.Err()
}

// WriteCDCIntent stores the key state change of a commit planned against snapshot
// base, under token, before the commit reaches Iceberg.
func (c *Catalog) WriteCDCIntent(ctx context.Context, tableName, token string, base int64, delta []KeyState) error {
	now := time.Now().UnixMicro()
	return crdb.ExecuteTx(ctx, c.db, nil, func(tx *sql.Tx) error {
		for part, start := 0, 0; start < len(delta) || part == 0; part, start = part+1, start+intentPartKeys {
			chunk := delta[start:min(start+intentPartKeys, len(delta))]
			payload, err := encodeKeys(chunk)
			if err != nil {
				return err
			}
			q := `INSERT INTO medlake_cdc_intents (table_name, token, part, base_snapshot, payload, created_at) VALUES (` +
				c.placeholders(1, 6) + `)`
			if _, err := tx.ExecContext(ctx, q, tableName, token, part, base, payload, now); err != nil {
				return fmt.Errorf("writing cdc intent %s part %d of table %s: %w", token, part, tableName, err)
			}
		}
		return nil
	})
}

// DropCDCIntent deletes an intent whose commit did not reach Iceberg.
func (c *Catalog) DropCDCIntent(ctx context.Context, tableName, token string) error {
	_, err := c.db.ExecContext(ctx, `DELETE FROM medlake_cdc_intents WHERE table_name = `+c.placeholder(1)+` AND token = `+c.placeholder(2), tableName, token)
	if err != nil {
		return fmt.Errorf("dropping cdc intent %s of table %s: %w", token, tableName, err)
	}
	return nil
}

// DropStaleCDCIntents deletes the table's intents older than age: intents of commits
// that never reached Iceberg (a hub died before or during its commit).
func (c *Catalog) DropStaleCDCIntents(ctx context.Context, tableName string, age time.Duration) (int64, error) {
	res, err := c.db.ExecContext(ctx, `DELETE FROM medlake_cdc_intents WHERE table_name = `+c.placeholder(1)+` AND created_at < `+c.placeholder(2),
		tableName, time.Now().Add(-age).UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("dropping stale cdc intents of table %s: %w", tableName, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// ErrNoCDCIntent says a snapshot names a cdc intent the catalog does not hold.
var ErrNoCDCIntent = errors.New("cdc intent not found")

// ApplyCDCIntent applies the intent token, planned against base, as the key state of
// snapshot snap, and records the ledger entries, in one transaction. It is a no-op
// when the state is already at snap, and fails with ErrCDCStateMoved when the state is
// at neither base nor snap. snap may equal base for a change that wrote no files
// (deletes of keys the lake never held); the intent then need not exist beforehand:
// delta is applied directly.
func (c *Catalog) ApplyCDCIntent(ctx context.Context, tableName, token string, base, snap int64, delta []KeyState, ledger []Ledger) error {
	return crdb.ExecuteTx(ctx, c.db, nil, func(tx *sql.Tx) error {
		cur, ok, err := c.appliedIn(ctx, tx, tableName)
		if err != nil {
			return err
		}
		switch {
		case ok && cur == snap && snap != base:
			return nil
		case (ok && cur != base) || (!ok && base != 0):
			return fmt.Errorf("applying cdc intent %s of table %s planned at snapshot %d: state is at %d: %w", token, tableName, base, cur, ErrCDCStateMoved)
		}
		keys := delta
		if delta == nil {
			if keys, err = c.readIntent(ctx, tx, tableName, token); err != nil {
				return err
			}
		}
		if err := c.upsertKeys(ctx, tx, tableName, keys); err != nil {
			return err
		}
		if err := c.setApplied(ctx, tx, tableName, ok, snap); err != nil {
			return err
		}
		if err := c.RecordBatches(ctx, tx, ledger); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM medlake_cdc_intents WHERE table_name = `+c.placeholder(1)+` AND token = `+c.placeholder(2), tableName, token); err != nil {
			return fmt.Errorf("deleting applied cdc intent %s of table %s: %w", token, tableName, err)
		}
		return nil
	})
}

// AdvanceCDC moves the table's state from snapshot from to snapshot to without changing
// keys: to changed no rows (compaction, a schema change, expiry).
func (c *Catalog) AdvanceCDC(ctx context.Context, tableName string, from, to int64) error {
	return crdb.ExecuteTx(ctx, c.db, nil, func(tx *sql.Tx) error {
		cur, ok, err := c.appliedIn(ctx, tx, tableName)
		if err != nil {
			return err
		}
		if cur == to && ok {
			return nil
		}
		if (ok && cur != from) || (!ok && from != 0) {
			return fmt.Errorf("advancing cdc state of table %s from snapshot %d: state is at %d: %w", tableName, from, cur, ErrCDCStateMoved)
		}
		return c.setApplied(ctx, tx, tableName, ok, to)
	})
}

// ResetCDC replaces the table's whole key state with keys, as of snapshot snap: the
// state rebuilt from the lake.
func (c *Catalog) ResetCDC(ctx context.Context, tableName string, snap int64, keys []KeyState) error {
	return crdb.ExecuteTx(ctx, c.db, nil, func(tx *sql.Tx) error {
		_, ok, err := c.appliedIn(ctx, tx, tableName)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM medlake_cdc_keys WHERE table_name = `+c.placeholder(1), tableName); err != nil {
			return fmt.Errorf("clearing cdc state of table %s: %w", tableName, err)
		}
		if err := c.upsertKeys(ctx, tx, tableName, keys); err != nil {
			return err
		}
		return c.setApplied(ctx, tx, tableName, ok, snap)
	})
}

func (c *Catalog) appliedIn(ctx context.Context, tx *sql.Tx, tableName string) (int64, bool, error) {
	var snap int64
	// FOR UPDATE serializes the appliers of one table (CockroachDB and PostgreSQL);
	// SQLite's immediate transactions already hold the write lock.
	q := `SELECT snapshot_id FROM medlake_cdc_tables WHERE table_name = ` + c.placeholder(1)
	if c.dialect == Postgres {
		q += ` FOR UPDATE`
	}
	err := tx.QueryRowContext(ctx, q, tableName).Scan(&snap)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("reading cdc state of table %s: %w", tableName, err)
	}
	return snap, true, nil
}

func (c *Catalog) setApplied(ctx context.Context, tx *sql.Tx, tableName string, exists bool, snap int64) error {
	now := time.Now().UnixMicro()
	var err error
	if exists {
		_, err = tx.ExecContext(ctx, `UPDATE medlake_cdc_tables SET snapshot_id = `+c.placeholder(1)+`, updated_at = `+c.placeholder(2)+
			` WHERE table_name = `+c.placeholder(3), snap, now, tableName)
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO medlake_cdc_tables (table_name, snapshot_id, updated_at) VALUES (`+c.placeholders(1, 3)+`)`,
			tableName, snap, now)
	}
	if err != nil {
		return fmt.Errorf("setting cdc state of table %s to snapshot %d: %w", tableName, snap, err)
	}
	return nil
}

func (c *Catalog) upsertKeys(ctx context.Context, tx *sql.Tx, tableName string, keys []KeyState) error {
	const cols = 5
	for start := 0; start < len(keys); start += keyChunk {
		part := keys[start:min(start+keyChunk, len(keys))]
		var b strings.Builder
		b.WriteString(`INSERT INTO medlake_cdc_keys (table_name, key_text, seq, row_hash, live) VALUES `)
		args := make([]any, 0, len(part)*cols)
		for i, k := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(" + c.placeholders(i*cols+1, cols) + ")")
			live := 0
			if k.Live {
				live = 1
			}
			args = append(args, tableName, k.Key, k.Seq, k.Hash, live)
		}
		b.WriteString(` ON CONFLICT (table_name, key_text) DO UPDATE SET seq = excluded.seq, row_hash = excluded.row_hash, live = excluded.live`)
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("writing cdc state of %d keys of table %s: %w", len(part), tableName, err)
		}
	}
	return nil
}

func (c *Catalog) readIntent(ctx context.Context, tx *sql.Tx, tableName, token string) ([]KeyState, error) {
	rows, err := tx.QueryContext(ctx, `SELECT payload FROM medlake_cdc_intents WHERE table_name = `+c.placeholder(1)+
		` AND token = `+c.placeholder(2)+` ORDER BY part`, tableName, token)
	if err != nil {
		return nil, fmt.Errorf("reading cdc intent %s of table %s: %w", token, tableName, err)
	}
	defer rows.Close()
	var keys []KeyState
	n := 0
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("reading cdc intent %s of table %s: %w", token, tableName, err)
		}
		part, err := decodeKeys(p)
		if err != nil {
			return nil, fmt.Errorf("decoding cdc intent %s of table %s: %w", token, tableName, err)
		}
		keys = append(keys, part...)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading cdc intent %s of table %s: %w", token, tableName, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("table %s, token %s: %w", tableName, token, ErrNoCDCIntent)
	}
	return keys, nil
}

// encodeKeys writes keys as JSON: [[key, seq, hash, live], ...].
func encodeKeys(keys []KeyState) (string, error) {
	rows := make([][4]any, len(keys))
	for i, k := range keys {
		rows[i] = [4]any{k.Key, k.Seq, k.Hash, k.Live}
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return "", fmt.Errorf("encoding cdc intent: %w", err)
	}
	return string(b), nil
}

func decodeKeys(s string) ([]KeyState, error) {
	var raw [][]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, err
	}
	out := make([]KeyState, len(raw))
	for i, r := range raw {
		if len(r) != 4 {
			return nil, fmt.Errorf("entry %d has %d fields, want 4", i, len(r))
		}
		k := &out[i]
		for j, dst := range []any{&k.Key, &k.Seq, &k.Hash, &k.Live} {
			if err := json.Unmarshal(r[j], dst); err != nil {
				return nil, fmt.Errorf("entry %d field %d: %w", i, j, err)
			}
		}
	}
	return out, nil
}

// placeholders returns n comma-separated placeholders numbered from first.
func (c *Catalog) placeholders(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.placeholder(first + i))
	}
	return b.String()
}
