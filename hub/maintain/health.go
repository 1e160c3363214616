package maintain

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Health is a table's file and snapshot statistics as of its current snapshot, and
// what maintenance would do about them.
type Health struct {
	Table          string
	DataFiles      int
	DataBytes      int64
	Records        int64 // in data files, before deletes
	DeleteFiles    int   // equality and position delete files and deletion vectors
	DeleteBytes    int64
	SmallFiles     int // data files under 75% of the target size
	Partitions     int
	Snapshots      int
	LastCommit     time.Time // zero for an empty table
	LastCompaction time.Time // zero when no retained snapshot is a compaction
	// CompactablePartitions have at least MinInputFiles small files, or a file with
	// DeleteFileThreshold delete files.
	CompactablePartitions int
	// Issues is what maintenance would fix, empty when the table is healthy.
	Issues []string
}

// Status is "ok" or the issues joined.
func (h Health) Status() string {
	if len(h.Issues) == 0 {
		return "ok"
	}
	return strings.Join(h.Issues, "; ")
}

// TableHealth reads the table's current files and snapshots and judges them by cfg's
// compaction and retention settings.
func TableHealth(ctx context.Context, tables Tables, name string, cfg Config) (Health, error) {
	h := Health{Table: name}
	tbl, err := tables.Load(ctx, name)
	if err != nil {
		return h, err
	}
	snaps := tbl.Metadata().Snapshots()
	h.Snapshots = len(snaps)
	for _, s := range snaps {
		at := time.UnixMilli(s.TimestampMs).UTC()
		if at.After(h.LastCommit) {
			h.LastCommit = at
		}
		if s.Summary != nil && s.Summary.Properties[PropMaintenance] == opCompact && at.After(h.LastCompaction) {
			h.LastCompaction = at
		}
	}
	if tbl.CurrentSnapshot() == nil {
		return h, nil
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return h, fmt.Errorf("planning files of table %s: %w", name, err)
	}
	small := cfg.TargetFileSize * 3 / 4
	type part struct{ small, heavy int }
	parts := map[string]*part{}
	seen := map[string]bool{}
	for _, t := range tasks {
		df := t.File
		key := partitionKey(df.Partition())
		p := parts[key]
		if p == nil {
			p = &part{}
			parts[key] = p
		}
		h.DataFiles++
		h.DataBytes += df.FileSizeBytes()
		h.Records += df.Count()
		if df.FileSizeBytes() < small {
			h.SmallFiles++
			p.small++
		}
		deletes := slices.Concat(t.DeleteFiles, t.EqualityDeleteFiles, t.DeletionVectorFiles)
		if len(deletes) >= cfg.DeleteFileThreshold {
			p.heavy++
		}
		for _, d := range deletes {
			if !seen[d.FilePath()] {
				seen[d.FilePath()] = true
				h.DeleteFiles++
				h.DeleteBytes += d.FileSizeBytes()
			}
		}
	}
	h.Partitions = len(parts)
	for _, p := range parts {
		if p.small >= cfg.MinInputFiles || p.heavy > 0 {
			h.CompactablePartitions++
		}
	}
	if h.CompactablePartitions > 0 {
		h.Issues = append(h.Issues, fmt.Sprintf("%d partitions to compact", h.CompactablePartitions))
	}
	if h.DeleteFiles > 0 {
		h.Issues = append(h.Issues, fmt.Sprintf("%d delete files to fold", h.DeleteFiles))
	}
	if h.Snapshots > cfg.RetainLast {
		oldest := snaps[0].TimestampMs
		for _, s := range snaps {
			oldest = min(oldest, s.TimestampMs)
		}
		if time.Since(time.UnixMilli(oldest)) > cfg.MaxSnapshotAge {
			h.Issues = append(h.Issues, "snapshots past retention")
		}
	}
	return h, nil
}

// partitionKey renders a partition tuple in field-id order.
func partitionKey(p map[int]any) string {
	ids := make([]int, 0, len(p))
	for id := range p {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "%d=%v/", id, p[id])
	}
	return b.String()
}
