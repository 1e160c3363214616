package hub

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol/feed"
)

// PropCDCToken names, in the summary of a snapshot written to an upsert, cdc or
// duplicates-drop table, the catalog's intent holding the snapshot's key state change.
const PropCDCToken = "medlake.cdc_token"

// PropKeys is the table property naming, comma-separated, the columns that identify a
// row of a keyed table (EqualityColumns); the query role's table_changes joins on them.
const PropKeys = "medlake.keys"

// staleIntentAge is how old an intent of a commit that never reached Iceberg must be
// before a hub deletes it.
const staleIntentAge = time.Hour

// keyed reports whether the table's rows are applied by key: upsert, cdc, or an append
// table that drops duplicate keys.
func keyed(def *feed.Definition) bool {
	return rowLevel(def) || (len(def.Keys) > 0 && def.Duplicates == feed.DuplicatesDrop)
}

// rowLevel reports whether the table changes rows (upsert or cdc), which takes
// equality deletes.
func rowLevel(def *feed.Definition) bool {
	return def.Mode == feed.ModeUpsert || def.Mode == feed.ModeCDC
}

// EqualityColumns are the columns that identify a row of a keyed table: the tenant and
// facility, then the feed's keys. A key is always scoped to its facility, so no
// facility's rows can replace or delete another's.
func EqualityColumns(def *feed.Definition) []string {
	return append([]string{feed.ColTenant, feed.ColFacility}, def.Keys...)
}

// rowKeyer reads a keyed table's row identity, sequence, operation and content hash
// from records in the table's schema (as the hub builds them, or as a scan returns).
type rowKeyer struct {
	eq      []int // EqualityColumns
	hashed  []int // the feed's columns but the op column
	seq     int   // -1: arrival order
	op      int   // -1: not cdc
	deletes map[string]bool
	buf     []byte
}

func newRowKeyer(def *feed.Definition, sc *arrow.Schema) (*rowKeyer, error) {
	idx := func(name string) (int, error) {
		i := sc.FieldIndices(name)
		if len(i) != 1 {
			return 0, fmt.Errorf("table %s: column %s is missing from the records", def.Table, name)
		}
		return i[0], nil
	}
	k := &rowKeyer{seq: -1, op: -1}
	for _, n := range EqualityColumns(def) {
		i, err := idx(n)
		if err != nil {
			return nil, err
		}
		k.eq = append(k.eq, i)
	}
	opCol := ""
	if def.Mode == feed.ModeCDC && def.Op != nil {
		opCol = def.Op.Column
		i, err := idx(opCol)
		if err != nil {
			return nil, err
		}
		k.op = i
		_, _, del := def.Op.Values()
		k.deletes = map[string]bool{}
		for _, v := range del {
			k.deletes[strings.ToUpper(strings.TrimSpace(v))] = true
		}
	}
	for _, c := range def.Columns {
		if c.Name == opCol {
			continue
		}
		i, err := idx(c.Name)
		if err != nil {
			return nil, err
		}
		k.hashed = append(k.hashed, i)
	}
	if def.Sequence != "" && rowLevel(def) {
		i, err := idx(def.Sequence)
		if err != nil {
			return nil, err
		}
		k.seq = i
	}
	return k, nil
}

// key encodes row i's identity as a JSON array of the equality columns' values.
func (k *rowKeyer) key(rec arrow.RecordBatch, i int) string {
	vals := make([]any, len(k.eq))
	for j, c := range k.eq {
		if a := rec.Column(c); !a.IsNull(i) {
			vals[j] = a.ValueStr(i)
		}
	}
	b, _ := json.Marshal(vals) // strings and nulls always marshal
	return string(b)
}

// sequence is row i's sequence value: the sequence column's integer, days or
// microseconds; the lowest value when NULL; 0 when the table has no sequence column.
func (k *rowKeyer) sequence(rec arrow.RecordBatch, i int) int64 {
	if k.seq < 0 {
		return 0
	}
	a := rec.Column(k.seq)
	if a.IsNull(i) {
		return math.MinInt64
	}
	switch a := a.(type) {
	case *array.Int64:
		return a.Value(i)
	case *array.Date32:
		return int64(a.Value(i))
	case *array.Timestamp:
		return int64(a.Value(i))
	}
	return 0
}

// isDelete reports whether row i is a cdc delete. Any other op value, or NULL, is an
// insert or update.
func (k *rowKeyer) isDelete(rec arrow.RecordBatch, i int) bool {
	if k.op < 0 {
		return false
	}
	a := rec.Column(k.op)
	return !a.IsNull(i) && k.deletes[strings.ToUpper(strings.TrimSpace(a.ValueStr(i)))]
}

// hash is a hash of row i's feed columns (not lineage, position or op): two rows with
// the same hash are the same record.
func (k *rowKeyer) hash(rec arrow.RecordBatch, i int) string {
	b := k.buf[:0]
	for _, c := range k.hashed {
		a := rec.Column(c)
		if a.IsNull(i) {
			b = append(b, 0)
			continue
		}
		v := a.ValueStr(i)
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	k.buf = b
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// rowRef is one row of the buffer.
type rowRef struct {
	rec, row int
	seq      int64
	hash     string
	del      bool
}

// keyedPlan is what one commit of a keyed table writes.
type keyedPlan struct {
	data  [][]bool // per record: rows written to the data file
	dels  [][]bool // per record: rows whose key columns go to the equality-delete file
	nData int
	nDels int
	delta []catalog.KeyState
}

// plan decides, for every key in recs, the winning row (highest sequence, then the
// latest arrival) and what it does to the table given the key's state.
func (c *committer) plan(ctx context.Context, recs []arrow.RecordBatch, kr *rowKeyer) (*keyedPlan, error) {
	drop := !rowLevel(c.def) // duplicates: drop
	winners := map[string]rowRef{}
	var order []string
	outcome := map[string]int{}
	p := &keyedPlan{}
	for ri, rec := range recs {
		n := int(rec.NumRows())
		p.data = append(p.data, make([]bool, n))
		p.dels = append(p.dels, make([]bool, n))
		for i := range n {
			k := kr.key(rec, i)
			r := rowRef{rec: ri, row: i, seq: kr.sequence(rec, i), del: kr.isDelete(rec, i)}
			w, seen := winners[k]
			switch {
			case !seen:
				order = append(order, k)
			case drop:
				outcome["duplicate"]++
				continue
			case r.seq < w.seq:
				outcome["superseded"]++
				continue
			default:
				outcome["superseded"]++
			}
			if !r.del {
				r.hash = kr.hash(rec, i)
			}
			winners[k] = r
		}
	}
	state, err := c.cat.CDCKeys(ctx, c.table, order)
	if err != nil {
		return nil, err
	}
	for _, k := range order {
		w := winners[k]
		st, has := state[k]
		if drop {
			if has {
				outcome["duplicate"]++
				continue
			}
			p.data[w.rec][w.row] = true
			p.nData++
			p.delta = append(p.delta, catalog.KeyState{Key: k, Hash: w.hash, Live: true})
			outcome["appended"]++
			continue
		}
		if has {
			switch {
			case w.seq < st.Seq:
				outcome["stale"]++
				continue
			case w.del && !st.Live:
				if w.seq > st.Seq {
					p.delta = append(p.delta, catalog.KeyState{Key: k, Seq: w.seq})
				}
				outcome["deleted"]++
				continue
			case !w.del && st.Live && w.hash == st.Hash:
				outcome["unchanged"]++
				continue
			}
		}
		if has && st.Live {
			p.dels[w.rec][w.row] = true
			p.nDels++
		}
		if w.del {
			p.delta = append(p.delta, catalog.KeyState{Key: k, Seq: w.seq})
			outcome["deleted"]++
			continue
		}
		p.data[w.rec][w.row] = true
		p.nData++
		p.delta = append(p.delta, catalog.KeyState{Key: k, Seq: w.seq, Hash: w.hash, Live: true})
		outcome["upserted"]++
	}
	for o, n := range outcome {
		c.m.keyedRows.WithLabelValues(c.table, o).Add(float64(n))
	}
	return p, nil
}

// keyedCommit is the outcome of commitKeyed.
type keyedCommit struct {
	snapshotID  int64
	committedAt time.Time
	rows        int64 // data rows written
	recorded    bool  // the ledger entries were written with the key state
}

// commitKeyed writes the buffer of an upsert, cdc or duplicates-drop table as one row
// delta: a data file of the winning rows and, for upsert and cdc, an equality-delete
// file of the keys they replace or delete (merge-on-read). Deletes apply to data files
// of lower sequence numbers only, so the delta's own rows survive its deletes. The
// key state change is stored as an intent before the Iceberg commit and applied after
// it, with the ledger entries, in one catalog transaction (see catalog/cdc.go).
func (c *committer) commitKeyed(ctx context.Context, tbl *table.Table, at arrow.Table, props iceberg.Properties,
	ledger func(snapshotID int64, at time.Time) []catalog.Ledger) (keyedCommit, error) {
	var base int64
	if s := tbl.CurrentSnapshot(); s != nil {
		base = s.SnapshotID
	}
	t0 := c.now()
	if err := c.syncState(ctx, tbl); err != nil {
		return keyedCommit{}, err
	}
	eqIDs, err := equalityFieldIDs(c.def, tbl)
	if err != nil {
		return keyedCommit{}, err
	}
	recs := tableBatches(at)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	kr, err := newRowKeyer(c.def, at.Schema())
	if err != nil {
		return keyedCommit{}, err
	}
	p, err := c.plan(ctx, recs, kr)
	if err != nil {
		return keyedCommit{}, err
	}
	tPlan := c.now()
	token := uuid.NewString()
	if p.nData == 0 && p.nDels == 0 {
		// Nothing reaches the lake (re-sent or stale rows, deletes of absent keys):
		// the state and ledger change alone, against the unchanged snapshot.
		now := c.now().UTC()
		if p.delta == nil {
			p.delta = []catalog.KeyState{}
		}
		if err := c.cat.ApplyCDCIntent(ctx, c.table, token, base, base, p.delta, ledger(base, now)); err != nil {
			return keyedCommit{}, err
		}
		return keyedCommit{snapshotID: base, committedAt: now, recorded: true}, nil
	}
	if err := c.cat.WriteCDCIntent(ctx, c.table, token, base, p.delta); err != nil {
		return keyedCommit{}, err
	}
	tIntent := c.now()
	committed := false
	defer func() {
		if !committed {
			if err := c.cat.DropCDCIntent(context.WithoutCancel(ctx), c.table, token); err != nil {
				c.log.Warn("dropping the intent of a failed commit; it expires later", "err", err)
			}
		}
	}()
	props[PropCDCToken] = token
	txn := tbl.NewTransaction()
	if want := strings.Join(EqualityColumns(c.def), ","); tbl.Properties()[PropKeys] != want {
		if err := txn.SetProperties(iceberg.Properties{PropKeys: want}); err != nil {
			return keyedCommit{}, fmt.Errorf("naming the key columns of table %s: %w", c.table, err)
		}
	}
	rd := txn.NewRowDelta(props)
	if p.nData > 0 {
		for df, err := range table.WriteRecords(ctx, tbl, at.Schema(), filtered(ctx, recs, p.data, nil), table.WithTargetFileSize(512<<20)) {
			if err != nil {
				return keyedCommit{}, fmt.Errorf("writing %d rows to table %s: %w", p.nData, c.table, err)
			}
			rd.AddRows(df)
		}
	}
	if p.nDels > 0 {
		dsc, cols, err := deleteSchema(tbl, eqIDs, at.Schema())
		if err != nil {
			return keyedCommit{}, err
		}
		dfs, err := txn.WriteEqualityDeletes(ctx, eqIDs, filtered(ctx, recs, p.dels, func(r arrow.RecordBatch) arrow.RecordBatch {
			arrs := make([]arrow.Array, len(cols))
			for i, ci := range cols {
				arrs[i] = r.Column(ci)
			}
			return array.NewRecordBatch(dsc, arrs, r.NumRows())
		}))
		if err != nil {
			return keyedCommit{}, fmt.Errorf("writing %d equality deletes to table %s: %w", p.nDels, c.table, err)
		}
		rd.AddDeletes(dfs...)
	}
	tWrite := c.now()
	if err := rd.Commit(ctx); err != nil {
		return keyedCommit{}, fmt.Errorf("staging row delta of table %s: %w", c.table, err)
	}
	out, err := txn.Commit(ctx)
	tLake := c.now()
	if err != nil {
		if !isCommitConflict(err) {
			// The outcome is unknown: the snapshot may have landed and name the intent,
			// so it stays for the next commit's syncState.
			committed = true
		}
		return keyedCommit{}, fmt.Errorf("committing %d rows and %d deletes to table %s: %w", p.nData, p.nDels, c.table, err)
	}
	committed = true
	snap := out.CurrentSnapshot()
	if snap == nil {
		return keyedCommit{}, fmt.Errorf("table %s has no current snapshot after commit", c.table)
	}
	res := keyedCommit{snapshotID: snap.SnapshotID, committedAt: time.UnixMilli(snap.TimestampMs).UTC(), rows: int64(p.nData)}
	if c.crashAfterLakeCommit != nil && c.crashAfterLakeCommit() {
		return keyedCommit{}, errors.New("stopped after the lake commit (fault injection)")
	}
	// The snapshot is durable: a failed state update is repaired from the intent by the
	// next commit (syncState), and the ledger from the snapshot summary (reconcile).
	if err := c.cat.ApplyCDCIntent(ctx, c.table, token, base, snap.SnapshotID, p.delta, ledger(res.snapshotID, res.committedAt)); err != nil {
		c.log.Error("applying committed key state failed; next commit repairs it", "snapshot_id", snap.SnapshotID, "err", err)
		return res, nil
	}
	res.recorded = true
	tApply := c.now()
	c.log.Debug("keyed commit", "rows", p.nData, "deletes", p.nDels, "keys", len(p.delta),
		"plan", tPlan.Sub(t0), "intent", tIntent.Sub(tPlan), "write", tWrite.Sub(tIntent), "commit", tLake.Sub(tWrite), "apply", tApply.Sub(tLake))
	return res, nil
}

// syncState brings the table's key state to its current snapshot: it applies the
// intents named by snapshots committed by hubs that died before applying them,
// advances over snapshots that changed no rows (compaction, schema changes), and
// rebuilds the state from the lake when neither works (no state yet for a table with
// data, an intent missing, snapshots of the state expired, rows written without state).
func (c *committer) syncState(ctx context.Context, tbl *table.Table) error {
	cur := tbl.CurrentSnapshot()
	applied, ok, err := c.cat.CDCApplied(ctx, c.table)
	if err != nil {
		return err
	}
	if cur == nil && ok && applied != 0 {
		// The table was dropped and created again: its old keys are gone.
		c.log.Warn("clearing the key state of a table that has no snapshot", "state_snapshot_id", applied)
		return c.cat.ResetCDC(ctx, c.table, 0, nil)
	}
	if cur == nil || (ok && applied == cur.SnapshotID) {
		return nil
	}
	var chain []*table.Snapshot
	found := false
	if ok {
		for s := cur; s != nil; {
			if s.SnapshotID == applied {
				found = true
				break
			}
			chain = append(chain, s)
			if s.ParentSnapshotID == nil {
				found = applied == 0
				break
			}
			s = tbl.SnapshotByID(*s.ParentSnapshotID)
		}
	}
	if !found {
		return c.rebuildState(ctx, tbl, "the state's snapshot is not an ancestor of the current one")
	}
	prev := applied
	for i := len(chain) - 1; i >= 0; i-- {
		s := chain[i]
		var sp iceberg.Properties
		if s.Summary != nil {
			sp = s.Summary.Properties
		}
		switch {
		case sp[PropCDCToken] != "":
			err := c.cat.ApplyCDCIntent(ctx, c.table, sp[PropCDCToken], prev, s.SnapshotID, nil, nil)
			if errors.Is(err, catalog.ErrNoCDCIntent) {
				return c.rebuildState(ctx, tbl, fmt.Sprintf("snapshot %d names an intent the catalog lacks", s.SnapshotID))
			}
			if err != nil {
				return err
			}
			c.log.Warn("applied the key state of a snapshot whose hub did not", "snapshot_id", s.SnapshotID)
		case sp[PropBatchIDs] != "":
			return c.rebuildState(ctx, tbl, fmt.Sprintf("snapshot %d wrote rows without key state", s.SnapshotID))
		default:
			if err := c.cat.AdvanceCDC(ctx, c.table, prev, s.SnapshotID); err != nil {
				return err
			}
		}
		prev = s.SnapshotID
	}
	if n, err := c.cat.DropStaleCDCIntents(ctx, c.table, staleIntentAge); err != nil {
		c.log.Warn("dropping stale intents failed", "err", err)
	} else if n > 0 {
		c.log.Info("dropped intents of commits that never reached the lake", "intents", n)
	}
	return nil
}

// rebuildState replaces the key state with the live rows of the current snapshot, read
// through iceberg-go's scan (deletes applied). Tombstones of deleted keys are lost: a
// late row older than a delete rebuilt this way is applied.
func (c *committer) rebuildState(ctx context.Context, tbl *table.Table, why string) error {
	cur := tbl.CurrentSnapshot()
	c.log.Warn("rebuilding key state from the lake", "reason", why, "snapshot_id", cur.SnapshotID)
	start := c.now()
	sc, itr, err := tbl.Scan().ToArrowRecords(ctx)
	if err != nil {
		return fmt.Errorf("scanning table %s to rebuild its key state: %w", c.table, err)
	}
	kr, err := newRowKeyer(c.def, sc)
	if err != nil {
		return err
	}
	keys := map[string]catalog.KeyState{}
	for rec, err := range itr {
		if err != nil {
			return fmt.Errorf("scanning table %s to rebuild its key state: %w", c.table, err)
		}
		for i := range int(rec.NumRows()) {
			k := kr.key(rec, i)
			s := catalog.KeyState{Key: k, Seq: kr.sequence(rec, i), Hash: kr.hash(rec, i), Live: true}
			if prev, ok := keys[k]; !ok || s.Seq >= prev.Seq {
				keys[k] = s
			}
		}
		rec.Release()
	}
	list := make([]catalog.KeyState, 0, len(keys))
	for _, k := range keys {
		list = append(list, k)
	}
	if err := c.cat.ResetCDC(ctx, c.table, cur.SnapshotID, list); err != nil {
		return err
	}
	c.log.Info("rebuilt key state from the lake", "keys", len(list), "took", c.now().Sub(start))
	return nil
}

// equalityFieldIDs returns the Iceberg field ids of EqualityColumns, checking that the
// table's partitioning keeps each key in one partition (an equality delete applies only
// within its partition).
func equalityFieldIDs(def *feed.Definition, tbl *table.Table) ([]int, error) {
	sc := tbl.Schema()
	var ids []int
	in := map[int]bool{}
	for _, n := range EqualityColumns(def) {
		f, ok := sc.FindFieldByName(n)
		if !ok {
			return nil, fmt.Errorf("table %s has no key column %s", def.Table, n)
		}
		ids = append(ids, f.ID)
		in[f.ID] = true
	}
	if rowLevel(def) {
		spec := tbl.Spec()
		for _, f := range spec.Fields() {
			if !in[f.SourceID()] {
				return nil, fmt.Errorf("table %s is partitioned by %s, which is not a key column: a key could move between partitions, "+
					"and equality deletes apply within a partition only; recreate it as mode %s, partitioned by %s", def.Table, f.Name, def.Mode, feed.ColFacility)
			}
		}
	}
	return ids, nil
}

// deleteSchema returns the Arrow schema of the table's equality-delete files and the
// indices of its columns in a record of schema rec.
func deleteSchema(tbl *table.Table, eqIDs []int, rec *arrow.Schema) (*arrow.Schema, []int, error) {
	var names []string
	for _, id := range eqIDs {
		n, _ := tbl.Schema().FindColumnName(id)
		names = append(names, n)
	}
	sel, err := tbl.Schema().Select(true, names...)
	if err != nil {
		return nil, nil, fmt.Errorf("selecting key columns %v: %w", names, err)
	}
	asc, err := table.SchemaToArrowSchema(sel, nil, true, false)
	if err != nil {
		return nil, nil, fmt.Errorf("converting key columns %v: %w", names, err)
	}
	cols := make([]int, asc.NumFields())
	for i, f := range asc.Fields() {
		idx := rec.FieldIndices(f.Name)
		if len(idx) != 1 {
			return nil, nil, fmt.Errorf("key column %s is missing from the records", f.Name)
		}
		cols[i] = idx[0]
	}
	return asc, cols, nil
}

// tableBatches returns at's record batches, one per chunk; the caller releases them.
func tableBatches(at arrow.Table) []arrow.RecordBatch {
	rd := array.NewTableReader(at, -1)
	defer rd.Release()
	var out []arrow.RecordBatch
	for rd.Next() {
		r := rd.RecordBatch()
		r.Retain()
		out = append(out, r)
	}
	return out
}

// filtered yields the rows of recs their masks select, mapped by project when given.
// Each yielded batch is new; the consumer releases it.
func filtered(ctx context.Context, recs []arrow.RecordBatch, masks [][]bool, project func(arrow.RecordBatch) arrow.RecordBatch) iter.Seq2[arrow.RecordBatch, error] {
	return func(yield func(arrow.RecordBatch, error) bool) {
		for i, rec := range recs {
			b := array.NewBooleanBuilder(memory.DefaultAllocator)
			b.Reserve(len(masks[i]))
			some := false
			for _, v := range masks[i] {
				b.UnsafeAppend(v)
				some = some || v
			}
			mask := b.NewBooleanArray()
			b.Release()
			if !some {
				mask.Release()
				continue
			}
			out, err := compute.FilterRecordBatch(ctx, rec, mask, compute.DefaultFilterOptions())
			mask.Release()
			if err != nil {
				yield(nil, fmt.Errorf("selecting rows: %w", err))
				return
			}
			if project != nil {
				p := project(out)
				out.Release()
				out = p
			}
			if !yield(out, nil) {
				return
			}
		}
	}
}
