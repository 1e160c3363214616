package engine

import (
	"context"
	"fmt"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"golang.org/x/sync/errgroup"
)

// DefaultManifestEntries bounds the parsed manifest entries kept between refreshes
// (one per data file of a manifest, a few KB each with its column statistics).
const DefaultManifestEntries = 50_000

// manifestEntries keeps the parsed entries of manifests by manifest location.
type manifestEntries = lruCache[[]iceberg.ManifestEntry]

func newManifestEntries(max int64) *manifestEntries {
	if max <= 0 {
		max = DefaultManifestEntries
	}
	return newLRU(max, func(es []iceberg.ManifestEntry) int64 { return int64(len(es)) + 1 })
}

// planSnapshot returns the scan tasks of snap as tbl.Scan(WithSnapshotID).PlanFiles
// does without a filter: one task per live data file, with its data sequence number.
// Manifests are immutable (a commit writes new ones under new names), so their parsed
// entries are kept by location and a plan reads and parses only the manifests that are
// new since the last one; between compactions a table has one manifest per commit.
// A snapshot with delete manifests is planned by iceberg-go, which matches delete
// files to the data files they apply to.
func (e *Engine) planSnapshot(ctx context.Context, tbl *table.Table, snap *table.Snapshot) ([]table.FileScanTask, error) {
	fsys, err := tbl.FS(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening table file IO: %w", err)
	}
	mans, err := snap.Manifests(fsys)
	if err != nil {
		return nil, fmt.Errorf("reading manifest list of snapshot %d: %w", snap.SnapshotID, err)
	}
	for _, m := range mans {
		if m.ManifestContent() != iceberg.ManifestContentData {
			return tbl.Scan(table.WithSnapshotID(snap.SnapshotID)).PlanFiles(ctx)
		}
	}
	per := make([][]iceberg.ManifestEntry, len(mans))
	var g errgroup.Group
	g.SetLimit(8)
	for i, m := range mans {
		if es, ok := e.files.entries.get(m.FilePath()); ok {
			per[i] = es
			continue
		}
		g.Go(func() error {
			es, err := m.FetchEntries(fsys, true)
			if err != nil {
				return fmt.Errorf("reading manifest %s: %w", m.FilePath(), err)
			}
			per[i] = es
			e.files.entries.put(m.FilePath(), es)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var tasks []table.FileScanTask
	for _, es := range per {
		for _, ent := range es {
			if ent.Status() == iceberg.EntryStatusDELETED {
				continue
			}
			df := ent.DataFile()
			if df.ContentType() != iceberg.EntryContentData {
				return nil, fmt.Errorf("data manifest lists %s file %s", df.ContentType(), df.FilePath())
			}
			seq := ent.SequenceNum()
			tasks = append(tasks, table.FileScanTask{File: df, Length: df.FileSizeBytes(), DataSequenceNumber: &seq})
		}
	}
	return tasks, nil
}
