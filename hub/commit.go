package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	icecatalog "github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// Snapshot summary properties the hub writes on every append. PropBatchIDs lets a hub
// find batches whose snapshot committed but whose ledger entries were never written
// (a crash between the two), see reconcile.
const (
	PropBatchIDs = "medlake.batch_ids" // comma-separated batch ids in this snapshot
	// PropBatchRows holds each batch's row count, comma-separated in PropBatchIDs'
	// order, so a ledger entry recorded from the summary has its rows.
	PropBatchRows = "medlake.batch_rows"
	PropHub       = "medlake.hub" // client id of the committing hub
	// PropSourceMtimeMin is the oldest source file mtime among the snapshot's batches,
	// Unix milliseconds (created_at for batches of 1.0 agents): the query role measures
	// freshness to queryable from it when the snapshot becomes visible.
	PropSourceMtimeMin = "medlake.source_mtime_min"
)

const (
	// conflictRetries bounds immediate retries after another hub moved the table.
	conflictRetries = 10
	// maxBackoff caps the wait between attempts of a failing commit (object store or
	// catalog down): once they are back, the hub commits within this time.
	maxBackoff = 5 * time.Second
	// maxReconnectInterval caps the broker reconnect backoff.
	maxReconnectInterval = 5 * time.Second
	// finalFlushTimeout bounds the last commit when the hub stops.
	finalFlushTimeout = 30 * time.Second
)

// ackOut is an ack to publish once its commit is durable.
type ackOut struct {
	topic string
	ack   protocol.Ack
}

// committer owns one table: it buffers validated batches and commits them as one
// snapshot per flush. One committer per table per hub keeps Iceberg commits from this
// hub serial; other hubs are handled by the catalog's compare-and-swap and reconcile.
type committer struct {
	table   string
	def     *feed.Definition
	cat     *catalog.Catalog
	hubID   string
	cfg     Config
	log     *slog.Logger
	m       *metrics
	mem     memory.Allocator
	publish func(context.Context, []ackOut) // publishes acks; called from run only
	notice  func(table string)              // publishes a commit notice (notice.go); nil: none
	now     func() time.Time

	in chan *batch // fed by the message handler

	// writeDef is the definition new batches are checked against and the next flush
	// writes with; the message handler advances it to a newer version of the table's
	// feed that older batches can be written into. c.def is run's copy.
	writeDef atomic.Pointer[feed.Definition]

	// pendingSince is the receipt time (Unix ns) of the oldest buffered batch, 0 when
	// the buffer is empty; written by run, read by metrics.
	pendingSince atomic.Int64

	// Owned by run.
	buf          []*batch
	repeats      []*batch // copies of a buffered batch id, acked with the first copy
	bufRows      int64
	bufBytes     int64
	lastRecorded int64 // newest snapshot known to be in the ledger; 0 = unknown
	// written holds the data files of an append that lost the race to another commit,
	// for the retry to re-apply; nil otherwise.
	written *writtenFiles

	// crashAfterLakeCommit, when set, is called after a keyed table's Iceberg commit;
	// true stops the commit there as a hub dying at that point would (fault injection
	// for tests; nil in production).
	crashAfterLakeCommit func() bool
}

func newCommitter(def *feed.Definition, cat *catalog.Catalog, hubID string, cfg Config, log *slog.Logger, m *metrics, publish func(context.Context, []ackOut)) *committer {
	c := &committer{
		table: def.Table, def: def, cat: cat, hubID: hubID, cfg: cfg,
		log: log.With("table", def.Table), m: m, mem: memory.DefaultAllocator,
		publish: publish, now: time.Now, in: make(chan *batch, 64),
	}
	c.writeDef.Store(def)
	return c
}

// accepts advances the committer to newest when rows of its current definition can be
// written into it, and reports whether a batch of def can be written with the result.
// Called by the message handler.
func (c *committer) accepts(def, newest *feed.Definition) (*feed.Definition, error) {
	cur := c.writeDef.Load()
	if newest != nil && newest != cur && checkWritable(cur.TableSchema(), newest.TableSchema()) == nil {
		if c.writeDef.CompareAndSwap(cur, newest) {
			c.log.Info("table definition advanced", "feed", newest.Name, "version", newest.Version, "from_version", cur.Version)
		}
		cur = c.writeDef.Load()
	}
	return cur, checkWritable(def.TableSchema(), cur.TableSchema())
}

// run buffers and commits until ctx is done, then makes one bounded last attempt.
// Batches it could not commit are not acked; their agents re-send them.
func (c *committer) run(ctx context.Context) {
	var (
		timer    *time.Timer
		timerC   <-chan time.Time
		backoff  time.Duration
		retrying bool
	)
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
		}
		timer, timerC = nil, nil
	}
	arm := func(d time.Duration) {
		stopTimer()
		timer = time.NewTimer(d)
		timerC = timer.C
	}
	flush := func(ctx context.Context) {
		stopTimer()
		if err := c.flush(ctx); err != nil {
			c.m.failures.WithLabelValues(c.table).Inc()
			backoff = min(max(2*backoff, c.cfg.CommitInterval, 100*time.Millisecond), maxBackoff)
			retrying = true
			c.log.Error("commit failed, will retry", "batches", len(c.buf), "rows", c.bufRows, "retry_in", backoff, "err", err)
			arm(backoff)
			return
		}
		backoff, retrying = 0, false
	}
	defer func() {
		stopTimer()
		if len(c.buf) > 0 {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			if err := c.flush(fctx); err != nil {
				c.log.Warn("final commit failed, agents will re-send", "batches", len(c.buf), "err", err)
			}
			cancel()
		}
		for _, b := range c.buf {
			b.release()
		}
		c.buf = nil
	}()
	for {
		c.notePending()
		in := c.in
		if c.full() {
			in = nil // backpressure: the message handler blocks until we commit
		}
		select {
		case <-ctx.Done():
			return
		case b := <-in:
			c.buf = append(c.buf, b)
			c.bufRows += b.rows
			c.bufBytes += b.bytes
			switch {
			case retrying:
				// wait for the backoff timer
			case c.full():
				flush(ctx)
			case timerC == nil:
				arm(c.cfg.CommitInterval)
			}
		case <-timerC:
			timer, timerC = nil, nil
			flush(ctx)
		}
	}
}

// notePending publishes the receipt time of the oldest buffered batch.
func (c *committer) notePending() {
	var oldest int64
	for _, b := range c.buf {
		if ns := b.received.UnixNano(); !b.received.IsZero() && (oldest == 0 || ns < oldest) {
			oldest = ns
		}
	}
	c.pendingSince.Store(oldest)
}

func (c *committer) full() bool {
	return c.bufRows >= c.cfg.CommitMaxRows || c.bufBytes >= c.cfg.CommitMaxBytes
}

// flush commits the buffer as one snapshot, records it in the ledger and publishes the
// acks. On error the buffer is kept for the next attempt.
//
// Exactly once: a batch id is written to the lake only if neither the ledger nor an
// unreconciled snapshot summary names it, checked after loading the table version the
// commit is based on. The catalog's commit is a compare-and-swap on that version, so a
// concurrent commit by another hub (or a commit of ours whose outcome was unknown) makes
// ours fail, and the retry reconciles that snapshot first. What remains: snapshots
// expired before any hub reconciled them would lose their ids (expiry must reconcile
// first), and data files written by failed attempts are orphans for orphan cleanup.
func (c *committer) flush(ctx context.Context) error {
	if len(c.buf) == 0 {
		return nil
	}
	start := c.now()
	// A newer definition the handler accepted (checkWritable) takes effect here, where
	// the run goroutine, which owns c.def, writes the buffer with it.
	c.def = c.writeDef.Load()
	var acks []ackOut
	conflicted := false // the last attempt lost the race to another commit
	for attempt := 0; ; attempt++ {
		tbl, err := c.loadOrCreate(ctx)
		if err != nil {
			return err
		}
		if err := c.reconcile(ctx, tbl); err != nil {
			return err
		}
		dupAcks, err := c.dropCommitted(ctx)
		if err != nil {
			return err
		}
		acks = append(acks, dupAcks...)
		if len(c.buf) == 0 {
			c.written = nil
			break
		}
		if conflicted {
			outcome := "rewritten"
			if c.written.fits(c.buf, tbl, c.now()) {
				outcome = "reused"
			}
			c.m.conflicts.WithLabelValues(c.table, outcome).Inc()
			conflicted = false
		}
		newAcks, err := c.commit(ctx, tbl)
		if isCommitConflict(err) && attempt < conflictRetries {
			c.log.Info("table moved by another commit, retrying", "attempt", attempt+1, "err", err)
			conflicted = true
			continue
		}
		if err != nil {
			// The commit may have landed if the error came after the catalog's write
			// (state unknown). The next attempt's reconcile finds it in that case.
			c.publish(ctx, acks)
			return err
		}
		acks = append(acks, newAcks...)
		c.m.duration.WithLabelValues(c.table).Observe(c.now().Sub(start).Seconds())
		c.noticeCommitted()
		break
	}
	c.publish(ctx, acks)
	return nil
}

// isCommitConflict says whether a commit failed because the table moved underneath it
// (another hub committed first), so re-planning against the new version will do. The
// SQL catalog's compare-and-swap reports table.ErrCommitFailed, but when the move is
// already visible as the catalog checks the transaction's requirements (the branch's
// snapshot id), iceberg-go returns a bare "requirement failed: ..." error instead.
func isCommitConflict(err error) bool {
	return err != nil && (errors.Is(err, table.ErrCommitFailed) || errors.Is(err, catalog.ErrCDCStateMoved) || strings.Contains(err.Error(), "requirement failed: "))
}

// commit appends the buffer as one snapshot and records it in the ledger. It clears the
// buffer once the snapshot is committed.
func (c *committer) commit(ctx context.Context, tbl *table.Table) ([]ackOut, error) {
	ingestedAt := c.now().UTC()
	ids := make([]string, len(c.buf))
	for i, b := range c.buf {
		ids[i] = b.hdr.BatchID
	}
	sc := c.tableSchema()
	tbl, err := c.evolve(ctx, tbl, sc)
	if err != nil {
		return nil, err
	}
	at, err := c.tableRecords(sc, ingestedAt)
	if err != nil {
		return nil, err
	}
	defer at.Release()

	counts := make([]string, len(c.buf))
	for i, b := range c.buf {
		counts[i] = strconv.FormatInt(b.rows, 10)
	}
	props := iceberg.Properties{PropBatchIDs: strings.Join(ids, ","), PropBatchRows: strings.Join(counts, ","), PropHub: c.hubID}
	var mtimeMin time.Time
	for _, b := range c.buf {
		if t := sourceTime(b.hdr); mtimeMin.IsZero() || t.Before(mtimeMin) {
			mtimeMin = t
		}
	}
	if !mtimeMin.IsZero() {
		props[PropSourceMtimeMin] = strconv.FormatInt(mtimeMin.UnixMilli(), 10)
	}
	entriesFor := func(snapshotID int64, committedAt time.Time) []catalog.Ledger {
		entries := make([]catalog.Ledger, len(c.buf))
		for i, b := range c.buf {
			entries[i] = catalog.Ledger{BatchID: b.hdr.BatchID, Table: c.table, SnapshotID: snapshotID,
				Rows: b.rows, CommittedAt: committedAt, SourceSHA256: b.hdr.SourceSHA256, Agent: b.hdr.Agent}
		}
		return entries
	}
	var (
		snapshotID  int64
		committedAt time.Time
		recorded    bool
		rows        = c.bufRows
		committed   *table.Table // the appended table, for its rollup; nil for keyed tables
	)
	if keyed(c.def) {
		kc, err := c.commitKeyed(ctx, tbl, at, props, entriesFor)
		if err != nil {
			return nil, err
		}
		snapshotID, committedAt, recorded, rows = kc.snapshotID, kc.committedAt, kc.recorded, kc.rows
	} else {
		files, err := c.dataFiles(ctx, tbl, at)
		if err != nil {
			return nil, err
		}
		txn := tbl.NewTransaction()
		// The files are new (written for this buffer, named by a fresh write id):
		// no need to read every manifest to check they are not in the table yet.
		if err := txn.AddDataFiles(ctx, files, props, table.WithoutDuplicateCheck(), table.WithoutAutoNameMapping()); err != nil {
			return nil, fmt.Errorf("appending %d data files of %d batches to table %s: %w", len(files), len(ids), c.table, err)
		}
		committed, err = txn.Commit(ctx)
		if err != nil {
			return nil, fmt.Errorf("committing %d batches to table %s: %w", len(ids), c.table, err)
		}
		c.written = nil
		snap := committed.CurrentSnapshot()
		if snap == nil {
			return nil, fmt.Errorf("table %s has no current snapshot after commit", c.table)
		}
		snapshotID, committedAt = snap.SnapshotID, time.UnixMilli(snap.TimestampMs).UTC()
	}

	entries := entriesFor(snapshotID, committedAt)
	acks := make([]ackOut, len(c.buf))
	for i, b := range c.buf {
		acks[i] = ackOut{topic: protocol.AckTopic(b.topic.Tenant, b.topic.Facility, b.topic.Agent),
			ack: protocol.Ack{BatchID: b.hdr.BatchID, Status: protocol.AckCommitted, Table: c.table,
				SnapshotID: snapshotID, CommittedAt: committedAt}}
	}
	for _, b := range c.repeats {
		acks = append(acks, ackOut{topic: protocol.AckTopic(b.topic.Tenant, b.topic.Facility, b.topic.Agent),
			ack: protocol.Ack{BatchID: b.hdr.BatchID, Status: protocol.AckCommitted, Table: c.table,
				SnapshotID: snapshotID, CommittedAt: committedAt}})
		c.m.duplicates.WithLabelValues(c.table).Inc()
	}
	for _, b := range c.buf {
		if !b.hdr.CreatedAt.IsZero() {
			c.m.commitLag.WithLabelValues(c.table).Observe(max(committedAt.Sub(b.hdr.CreatedAt), 0).Seconds())
		}
		if t := sourceTime(b.hdr); !t.IsZero() {
			c.m.freshness.WithLabelValues(c.table).Observe(max(committedAt.Sub(t), 0).Seconds())
		}
	}
	c.m.lastCommit.WithLabelValues(c.table).Set(float64(committedAt.UnixMilli()) / 1e3)
	c.clearBuffer()
	c.m.committed.WithLabelValues(c.table).Add(float64(len(entries)))
	c.m.rows.WithLabelValues(c.table).Add(float64(rows))
	c.m.commitRows.WithLabelValues(c.table).Observe(float64(rows))

	// The snapshot is durable, so the acks are true whatever happens to the ledger
	// write: if it fails, the next flush's reconcile records this snapshot from its
	// summary before any re-sent batch could be written again.
	switch {
	case recorded:
		c.lastRecorded = snapshotID
	default:
		if err := c.record(ctx, entries); err != nil {
			c.log.Error("recording committed batches in the ledger failed; next commit reconciles", "snapshot_id", snapshotID, "err", err)
		} else {
			c.lastRecorded = snapshotID
		}
	}
	c.log.Debug("committed", "snapshot_id", snapshotID, "batches", len(entries), "rows", rows)
	if committed != nil {
		if err := UpdateRollups(ctx, c.cat, committed, at); err != nil {
			c.log.Error("updating the rollup failed; queries read the table itself until the rollup is rebuilt", "snapshot_id", snapshotID, "err", err)
		}
	}
	return acks, nil
}

// sourceTime is where a batch's freshness is measured from: its source file's mtime,
// or for a 1.0 agent, which does not send one, when the batch was spooled.
func sourceTime(h protocol.BatchHeader) time.Time {
	if !h.SourceModTime.IsZero() {
		return h.SourceModTime
	}
	return h.CreatedAt
}

func (c *committer) record(ctx context.Context, entries []catalog.Ledger) error {
	tx, err := c.cat.DB().BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("starting ledger transaction: %w", err)
	}
	if err := c.cat.RecordBatches(ctx, tx, entries); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing ledger transaction: %w", err)
	}
	return nil
}

// SummaryBatch is a batch a snapshot's summary names.
type SummaryBatch struct {
	ID   string
	Rows int64 // -1 when the summary does not say (snapshots of older hubs)
}

// SummaryBatches returns the batches a hub's snapshot summary names (PropBatchIDs),
// with their row counts (PropBatchRows) when it has them.
func SummaryBatches(props map[string]string) []SummaryBatch {
	list := props[PropBatchIDs]
	if list == "" {
		return nil
	}
	ids := strings.Split(list, ",")
	rows := strings.Split(props[PropBatchRows], ",")
	out := make([]SummaryBatch, len(ids))
	for i, id := range ids {
		out[i] = SummaryBatch{ID: id, Rows: -1}
		if len(rows) == len(ids) {
			if n, err := strconv.ParseInt(rows[i], 10, 64); err == nil && n >= 0 {
				out[i].Rows = n
			}
		}
	}
	return out
}

// reconcile records in the ledger the batches of snapshots committed by a hub that died
// (or failed) before recording them. It walks back from the current snapshot to the
// newest one known to be recorded.
func (c *committer) reconcile(ctx context.Context, tbl *table.Table) error {
	var entries []catalog.Ledger
	for s := tbl.CurrentSnapshot(); s != nil; {
		if s.SnapshotID == c.lastRecorded {
			break
		}
		var batches []SummaryBatch
		if s.Summary != nil {
			batches = SummaryBatches(s.Summary.Properties)
		}
		if len(batches) > 0 {
			ok, err := c.cat.SnapshotRecorded(ctx, c.table, s.SnapshotID)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			at := time.UnixMilli(s.TimestampMs).UTC()
			for _, b := range batches {
				// Sources are in the data (_source_sha256); the ledger needs the id and
				// snapshot to deduplicate, and the rows to count what was committed.
				entries = append(entries, catalog.Ledger{BatchID: b.ID, Table: c.table, SnapshotID: s.SnapshotID, Rows: b.Rows, CommittedAt: at})
			}
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = tbl.SnapshotByID(*s.ParentSnapshotID)
	}
	if len(entries) > 0 {
		c.log.Warn("recording batches of unrecorded snapshots", "batches", len(entries))
		if err := c.record(ctx, entries); err != nil {
			return fmt.Errorf("reconciling ledger of table %s: %w", c.table, err)
		}
	}
	if s := tbl.CurrentSnapshot(); s != nil {
		c.lastRecorded = s.SnapshotID
	}
	return nil
}

// dropCommitted removes from the buffer batches the ledger already has (re-sends) and
// repeats within the buffer, returning their committed acks.
func (c *committer) dropCommitted(ctx context.Context) ([]ackOut, error) {
	ids := make([]string, len(c.buf))
	for i, b := range c.buf {
		ids[i] = b.hdr.BatchID
	}
	done, err := c.cat.CommittedBatches(ctx, ids)
	if err != nil {
		return nil, err
	}
	var acks []ackOut
	seen := make(map[string]bool, len(c.buf))
	kept := c.buf[:0]
	c.bufRows, c.bufBytes = 0, 0
	for _, b := range c.buf {
		id := b.hdr.BatchID
		if e, ok := done[id]; ok {
			acks = append(acks, ackOut{topic: protocol.AckTopic(b.topic.Tenant, b.topic.Facility, b.topic.Agent),
				ack: protocol.Ack{BatchID: id, Status: protocol.AckCommitted, Table: e.Table, SnapshotID: e.SnapshotID, CommittedAt: e.CommittedAt}})
			c.m.duplicates.WithLabelValues(c.table).Inc()
			b.release()
			continue
		}
		if seen[id] {
			b.release()
			b.bytes, b.rows = 0, 0
			c.repeats = append(c.repeats, b)
			continue
		}
		seen[id] = true
		kept = append(kept, b)
		c.bufRows += b.rows
		c.bufBytes += b.bytes
	}
	clear(c.buf[len(kept):])
	c.buf = kept
	return acks, nil
}

func (c *committer) clearBuffer() {
	for _, b := range c.buf {
		b.release()
	}
	clear(c.buf)
	c.buf = c.buf[:0]
	c.repeats = nil
	c.bufRows, c.bufBytes = 0, 0
	c.written = nil
}

// writtenFiles are the data files an append wrote for a buffer: the rows of exactly
// the batches ids, in the schema and partition spec they were written with.
type writtenFiles struct {
	ids      []string
	schemaID int
	specID   int
	files    []iceberg.DataFile
	at       time.Time // when they were written
}

// writtenMaxAge bounds how long written data files wait for a retry to commit them:
// orphan cleanup may remove unreferenced files once they are an hour old
// (maintain.MinOrphanMinAge, the least it can be set to), so files far younger than
// that are re-applied and older ones written again.
const writtenMaxAge = 10 * time.Minute

// fits reports whether w holds exactly buf's rows, written as tbl's current schema
// and partition spec would write them, so that appending w to tbl appends buf. After
// a conflict, the retry's dropCommitted may have removed batches another hub
// committed meanwhile, or the table may have evolved: then w does not fit.
func (w *writtenFiles) fits(buf []*batch, tbl *table.Table, now time.Time) bool {
	if w == nil || now.Sub(w.at) > writtenMaxAge || len(w.ids) != len(buf) ||
		w.schemaID != tbl.Schema().ID || w.specID != tbl.Metadata().DefaultPartitionSpec() {
		return false
	}
	for i, b := range buf {
		if w.ids[i] != b.hdr.BatchID {
			return false
		}
	}
	return true
}

// dataFiles returns the data files of the buffer's rows at, for an append to tbl:
// those an earlier attempt wrote when they still fit (a commit that lost the race to
// another hub is re-applied to the table's new version without writing its data
// again), else newly written ones. Files of an attempt that never committed are
// orphans for orphan cleanup, as before.
func (c *committer) dataFiles(ctx context.Context, tbl *table.Table, at arrow.Table) ([]iceberg.DataFile, error) {
	if c.written.fits(c.buf, tbl, c.now()) {
		return c.written.files, nil
	}
	c.written = nil
	// Sorted by facility and time, so a file's row groups and column bounds prune by facility.
	sorted, err := SortForAppend(ctx, c.def, at)
	if err != nil {
		return nil, err
	}
	defer sorted.Release()
	rdr := array.NewTableReader(sorted, 1<<20)
	defer rdr.Release()
	records := func(yield func(arrow.RecordBatch, error) bool) {
		for rec, err := range array.IterFromReader(rdr) {
			if rec != nil {
				rec.Retain() // WriteRecords releases each record it takes
			}
			if !yield(rec, err) {
				return
			}
		}
	}
	var files []iceberg.DataFile
	for df, err := range table.WriteRecords(ctx, tbl, at.Schema(), records) {
		if err != nil {
			return nil, fmt.Errorf("writing %d rows of %d batches to table %s: %w", at.NumRows(), len(c.buf), c.table, err)
		}
		files = append(files, df)
	}
	w := &writtenFiles{ids: make([]string, len(c.buf)), schemaID: tbl.Schema().ID, specID: tbl.Metadata().DefaultPartitionSpec(), files: files, at: c.now()}
	for i, b := range c.buf {
		w.ids[i] = b.hdr.BatchID
	}
	c.written = w
	return files, nil
}

func (c *committer) loadOrCreate(ctx context.Context) (*table.Table, error) {
	return loadOrCreateTable(ctx, c.cat, c.def, c.log)
}

// loadOrCreateTable loads def's table, creating it when absent.
func loadOrCreateTable(ctx context.Context, cat *catalog.Catalog, def *feed.Definition, log *slog.Logger) (*table.Table, error) {
	name := def.Table
	ident := cat.TableIdent(name)
	tbl, err := cat.Iceberg().LoadTable(ctx, ident)
	if err == nil {
		return tbl, nil
	}
	if !errors.Is(err, icecatalog.ErrNoSuchTable) {
		return nil, fmt.Errorf("loading table %s: %w", name, err)
	}
	sc, spec, order, err := icebergSchema(def)
	if err != nil {
		return nil, err
	}
	tbl, err = cat.Iceberg().CreateTable(ctx, ident, sc,
		icecatalog.WithPartitionSpec(spec),
		icecatalog.WithSortOrder(order),
		icecatalog.WithProperties(iceberg.Properties{
			// The hub re-plans a conflicting commit itself (dedup against the new
			// snapshot); iceberg-go must not replay the append on its own.
			table.CommitNumRetriesKey:         "0",
			"format-version":                  "2",
			"write.parquet.compression-codec": "zstd",
		}))
	if errors.Is(err, icecatalog.ErrTableAlreadyExists) {
		// Another hub created it first.
		if tbl, err = cat.Iceberg().LoadTable(ctx, ident); err != nil {
			return nil, fmt.Errorf("loading table %s created by another hub: %w", name, err)
		}
		return tbl, nil
	}
	if err != nil {
		return nil, fmt.Errorf("creating table %s: %w", name, err)
	}
	log.Info("created table", "table", name, "location", tbl.Location())
	return tbl, nil
}

// icebergSchema converts the feed's table schema and builds the partition spec and
// sort order of a new table (see hub/README.md, "Table layout"):
//
//   - append tables: day(partition time) alone, rows sorted by _facility then the
//     partition time inside each file. One commit writes one file per day it holds
//     (usually one), not one per facility and day, so a table has tens of files per
//     day at most, which compaction merges; facility filters prune by the files'
//     _facility bounds and by Parquet row-group statistics instead of by partition.
//   - append tables that drop duplicate keys: identity(_facility), day(partition
//     time), as before: their key lookups read one facility's partitions.
//   - upsert and cdc tables: identity(_facility) alone, so that every version of a key
//     is in one partition, where its equality deletes apply.
//
// Tables created before keep their spec; everything reading them handles both.
func icebergSchema(def *feed.Definition) (*iceberg.Schema, *iceberg.PartitionSpec, table.SortOrder, error) {
	sc, err := table.ArrowSchemaToIcebergWithFreshIDs(def.TableSchema(), false)
	if err != nil {
		return nil, nil, table.UnsortedSortOrder, fmt.Errorf("converting schema of table %s: %w", def.Table, err)
	}
	pcol := def.PartitionColumn()
	var fields []iceberg.PartitionOption
	switch {
	case rowLevel(def):
		fields = append(fields, iceberg.AddPartitionFieldByName(feed.ColFacility, feed.ColFacility, iceberg.IdentityTransform{}, sc, nil))
	case keyed(def):
		fields = append(fields, iceberg.AddPartitionFieldByName(feed.ColFacility, feed.ColFacility, iceberg.IdentityTransform{}, sc, nil),
			iceberg.AddPartitionFieldByName(pcol, pcol+"_day", iceberg.DayTransform{}, sc, nil))
	default:
		fields = append(fields, iceberg.AddPartitionFieldByName(pcol, pcol+"_day", iceberg.DayTransform{}, sc, nil))
	}
	spec, err := iceberg.NewPartitionSpecOpts(fields...)
	if err != nil {
		return nil, nil, table.UnsortedSortOrder, fmt.Errorf("partition spec of table %s: %w", def.Table, err)
	}
	var sortFields []table.SortField
	for _, n := range sortColumns(def) {
		f, ok := sc.FindFieldByName(n)
		if !ok {
			return nil, nil, table.UnsortedSortOrder, fmt.Errorf("sort order of table %s: no column %s", def.Table, n)
		}
		sortFields = append(sortFields, table.SortField{SourceIDs: []int{f.ID}, Transform: iceberg.IdentityTransform{},
			Direction: table.SortASC, NullOrder: table.NullsFirst})
	}
	order, err := table.NewSortOrder(1, sortFields)
	if err != nil {
		return nil, nil, table.UnsortedSortOrder, fmt.Errorf("sort order of table %s: %w", def.Table, err)
	}
	return sc, &spec, order, nil
}

// tableSchema is the schema the buffer is written with: the feed's TableSchema followed
// by the columns drift add brought in any buffered batch, in order of appearance.
func (c *committer) tableSchema() *arrow.Schema {
	sc := c.def.TableSchema()
	seen := map[string]bool{}
	var extra []arrow.Field
	for _, b := range c.buf {
		for _, f := range b.extra {
			if !seen[f.Name] {
				seen[f.Name] = true
				extra = append(extra, f)
			}
		}
	}
	if len(extra) == 0 {
		return sc
	}
	md := sc.Metadata()
	return arrow.NewSchema(append(sc.Fields(), extra...), &md)
}

// evolve changes the Iceberg table's schema so sc can be written to it (see
// planEvolution): it adds the columns the table lacks (drift add's, ColRescued on a
// table created before drift policies, a new feed version's), widens the types a new
// feed version widened and relaxes required columns sc may leave null. The change is
// its own commit, before the append: none of these rewrites data, and a conflict with
// another hub's commit is retried like an append's.
func (c *committer) evolve(ctx context.Context, tbl *table.Table, sc *arrow.Schema) (*table.Table, error) {
	e, err := planEvolution(tbl.Schema(), sc, c.table)
	if err != nil || e.empty() {
		return tbl, err
	}
	txn := tbl.NewTransaction()
	if err := e.apply(txn.UpdateSchema(true, false)).Commit(); err != nil {
		return nil, fmt.Errorf("evolving schema of table %s: %w", c.table, err)
	}
	evolved, err := txn.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("committing schema change of table %s: %w", c.table, err)
	}
	names := func(fs []iceberg.NestedField) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = f.Name
		}
		return out
	}
	c.log.Info("evolved table schema", "added", names(e.add), "widened", names(e.widen), "made_optional", e.optional, "schema_id", evolved.Schema().ID)
	return evolved, nil
}

// tableRecords builds the buffer's rows in sc (tableSchema): the batch's feed columns
// and position fields (_source_file, _row), the lineage columns, constant per batch,
// then the added columns, NULL in a batch that lacks one.
func (c *committer) tableRecords(sc *arrow.Schema, ingestedAt time.Time) (arrow.Table, error) {
	npos := len(feed.PositionFields())
	nData := c.def.BatchSchema().NumFields() - npos // before the position fields
	nTable := c.def.TableSchema().NumFields()
	var recs []arrow.RecordBatch
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	ts := arrow.Timestamp(ingestedAt.UnixMicro())
	for _, b := range c.buf {
		h := b.hdr
		for _, r := range b.recs {
			n := int(r.NumRows())
			cols := make([]arrow.Array, 0, sc.NumFields())
			var owned []arrow.Array // arrays made here, released once the record holds them
			if b.def == c.def || b.def == nil {
				cols = append(cols, r.Columns()[:nData]...)
			} else {
				// A batch of an older feed version: its columns by name, widened to the
				// newest version's types, NULL where it lacks one (checkWritable).
				for _, f := range sc.Fields()[:nData] {
					a, err := columnAs(c.mem, r, f, n)
					if err != nil {
						for _, o := range owned {
							o.Release()
						}
						return nil, fmt.Errorf("batch %s of feed %s version %d into table %s: %w", h.BatchID, h.Feed, h.FeedVersion, c.table, err)
					}
					if a != nil {
						owned = append(owned, a)
						cols = append(cols, a)
					} else {
						cols = append(cols, r.Column(r.Schema().FieldIndices(f.Name)[0]))
					}
				}
			}
			cols = append(cols, r.Columns()[int(r.NumCols())-npos:]...)
			lineage := []arrow.Array{
				constString(c.mem, h.Tenant, n), constString(c.mem, h.Facility, n), constString(c.mem, h.Agent, n),
				constString(c.mem, h.Feed, n), constInt64(c.mem, int64(h.FeedVersion), n),
				constString(c.mem, h.SourceSHA256, n),
				constString(c.mem, h.BatchID, n), constTimestamp(c.mem, ts, n),
			}
			cols = append(cols, lineage...)
			var nulls []arrow.Array
			for _, f := range sc.Fields()[nTable:] {
				if idx := r.Schema().FieldIndices(f.Name); len(idx) == 1 {
					cols = append(cols, r.Column(idx[0]))
					continue
				}
				a := array.MakeArrayOfNull(c.mem, f.Type, n)
				nulls = append(nulls, a)
				cols = append(cols, a)
			}
			recs = append(recs, array.NewRecordBatch(sc, cols, int64(n)))
			for _, a := range lineage {
				a.Release()
			}
			for _, a := range nulls {
				a.Release()
			}
			for _, a := range owned {
				a.Release()
			}
		}
	}
	return array.NewTableFromRecords(sc, recs), nil
}

func constString(mem memory.Allocator, v string, n int) arrow.Array {
	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.Reserve(n)
	b.ReserveData(n * len(v))
	for range n {
		b.Append(v)
	}
	return b.NewArray()
}

func constInt64(mem memory.Allocator, v int64, n int) arrow.Array {
	b := array.NewInt64Builder(mem)
	defer b.Release()
	b.Reserve(n)
	for range n {
		b.UnsafeAppend(v)
	}
	return b.NewArray()
}

func constTimestamp(mem memory.Allocator, v arrow.Timestamp, n int) arrow.Array {
	b := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"})
	defer b.Release()
	b.Reserve(n)
	for range n {
		b.UnsafeAppend(v)
	}
	return b.NewArray()
}
