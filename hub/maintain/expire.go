package maintain

import (
	"context"
	"fmt"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/hub"
)

// Retention says which snapshots a table keeps: a snapshot is kept while it is one of
// the newest RetainLast of the main branch or younger than MaxAge, so time travel
// reaches back at least MaxAge.
type Retention struct {
	RetainLast int
	MaxAge     time.Duration
}

// ExpireResult says what one expiry did.
type ExpireResult struct {
	Table            string
	SnapshotsBefore  int
	SnapshotsExpired int
	// BatchesRecorded counts batch ids of expired snapshots that the ledger lacked
	// (their hub died between commit and ledger write) and expiry recorded first.
	BatchesRecorded int
}

// Expire removes the table's snapshots that r no longer keeps, and deletes the
// manifests and data files only they referenced (the files compaction replaced).
//
// Before a snapshot goes, the batch ids in its summary are made sure to be in the
// ledger: the hub finds batches whose ledger write was lost in snapshot summaries, so
// expiring an unrecorded snapshot would let a re-sent batch be written twice.
func Expire(ctx context.Context, tables Tables, ledger *catalog.Catalog, name string, r Retention, retries int) (ExpireResult, error) {
	res := ExpireResult{Table: name}
	if r.RetainLast < 1 {
		return res, fmt.Errorf("expiring table %s: retain_last %d must be at least 1", name, r.RetainLast)
	}
	for attempt := 0; ; attempt++ {
		tbl, err := tables.Load(ctx, name)
		if err != nil {
			return res, err
		}
		before := tbl.Metadata().Snapshots()
		res.SnapshotsBefore = len(before)
		n, err := recordBeforeExpiry(ctx, ledger, name, before, time.Now().Add(-r.MaxAge))
		res.BatchesRecorded += n
		if err != nil {
			return res, err
		}
		txn := tbl.NewTransaction()
		if err := txn.ExpireSnapshots(table.WithRetainLast(r.RetainLast), table.WithOlderThan(r.MaxAge)); err != nil {
			return res, fmt.Errorf("expiring snapshots of table %s: %w", name, err)
		}
		done, err := txn.Commit(ctx)
		if IsCommitConflict(err) && attempt < retries {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("committing snapshot expiry of table %s: %w", name, err)
		}
		res.SnapshotsExpired = len(before) - len(done.Metadata().Snapshots())
		return res, nil
	}
}

// recordBeforeExpiry records in the ledger the batch ids of snapshots older than
// cutoff (every snapshot expiry may remove) that it lacks.
func recordBeforeExpiry(ctx context.Context, ledger *catalog.Catalog, name string, snaps []table.Snapshot, cutoff time.Time) (int, error) {
	type origin struct {
		snapshot int64
		at       time.Time
		rows     int64
	}
	from := map[string]origin{}
	var ids []string
	for _, s := range snaps {
		if s.Summary == nil || !time.UnixMilli(s.TimestampMs).Before(cutoff) {
			continue
		}
		for _, b := range hub.SummaryBatches(s.Summary.Properties) {
			if _, ok := from[b.ID]; !ok {
				from[b.ID] = origin{s.SnapshotID, time.UnixMilli(s.TimestampMs).UTC(), b.Rows}
				ids = append(ids, b.ID)
			}
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	have, err := ledger.CommittedBatches(ctx, ids)
	if err != nil {
		return 0, fmt.Errorf("checking ledger before expiring table %s: %w", name, err)
	}
	var missing []catalog.Ledger
	for _, id := range ids {
		if _, ok := have[id]; !ok {
			o := from[id]
			missing = append(missing, catalog.Ledger{BatchID: id, Table: name, SnapshotID: o.snapshot, Rows: o.rows, CommittedAt: o.at})
		}
	}
	if len(missing) == 0 {
		return 0, nil
	}
	if err := ledger.RecordBatches(ctx, ledger.DB(), missing); err != nil {
		return 0, fmt.Errorf("recording batches of table %s before expiry: %w", name, err)
	}
	return len(missing), nil
}

// OrphanResult says what orphan cleanup found and removed.
type OrphanResult struct {
	Table   string
	Files   int   // orphan files found
	Bytes   int64 // their total size
	Deleted int   // removed (0 on a dry run)
}

// CleanOrphans deletes files under the table's location that no snapshot or metadata
// file references and that were last modified more than minAge ago. minAge must
// exceed the longest a writer takes between writing a file and committing it (the
// hub's commit, a compaction), or an in-flight file would be removed; the runner's
// configuration keeps it at an hour or more. dryRun only reports.
func CleanOrphans(ctx context.Context, tables Tables, name string, minAge time.Duration, dryRun bool) (OrphanResult, error) {
	res := OrphanResult{Table: name}
	tbl, err := tables.Load(ctx, name)
	if err != nil {
		return res, err
	}
	out, err := tbl.DeleteOrphanFiles(ctx, table.WithFilesOlderThan(minAge), table.WithDryRun(dryRun))
	if err != nil {
		return res, fmt.Errorf("removing orphan files of table %s: %w", name, err)
	}
	res.Files, res.Bytes, res.Deleted = len(out.OrphanFiles), out.TotalSizeBytes, len(out.DeletedFiles)
	return res, nil
}
