package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"

	"github.com/medlake/medlake/query/cache"
)

// seqColumn and partColumn carry each data row's file's data sequence number and
// partition through the view's joins; no table column starts with "_medlake_".
const (
	seqColumn  = "_medlake_seq"
	partColumn = "_medlake_part"
)

// mergeOnRead applies a snapshot's equality deletes in the view, as the Iceberg spec
// says: an equality-delete file removes the rows of a data file whose equality columns
// equal (NULL equal to NULL) a row of the delete file, when the data file's data
// sequence number is lower than the delete file's and both are in the same partition
// (or the delete file is unpartitioned). In DuckDB that is one hash join per set of
// equality columns: the delete files' rows are grouped by partition and key with their
// highest sequence number, and a data row survives when that number is missing or not
// above its file's. Position deletes and deletion vectors are still refused.
type mergeOnRead struct {
	meta table.Metadata
	snap *table.Snapshot     // whose files these are
	data map[string]fileInfo // by Iceberg path
	dels map[string]fileInfo // equality-delete files, by Iceberg path

	dataObjs []dataObject // set by setData
	delObjs  []cache.Object
}

type fileInfo struct {
	size int64
	seq  int64
	part string // spec id and partition values
	// Equality-delete files only.
	eqIDs  []int
	global bool // unpartitioned spec: applies to every partition
	local  string
}

type dataObject struct {
	local string
	info  fileInfo
}

func newMergeOnRead(meta table.Metadata, snap *table.Snapshot) *mergeOnRead {
	return &mergeOnRead{meta: meta, snap: snap, data: map[string]fileInfo{}, dels: map[string]fileInfo{}}
}

// addTask records a scan task's data file and its equality-delete files.
func (m *mergeOnRead) addTask(t table.FileScanTask) error {
	if len(t.DeleteFiles)+len(t.DeletionVectorFiles) > 0 {
		// Serving the data file without applying its deletes would show rows that no
		// longer exist: refuse until position deletes are supported.
		return fmt.Errorf("data file %s has position delete files, which the query engine does not apply yet", t.File.FilePath())
	}
	var seq int64
	if t.DataSequenceNumber != nil {
		seq = *t.DataSequenceNumber
	} else if len(t.EqualityDeleteFiles) > 0 {
		return fmt.Errorf("data file %s has equality deletes but no data sequence number", t.File.FilePath())
	}
	m.data[t.File.FilePath()] = fileInfo{size: t.File.FileSizeBytes(), seq: seq, part: partitionKey(t.File)}
	for _, d := range t.EqualityDeleteFiles {
		if _, ok := m.dels[d.FilePath()]; ok {
			continue
		}
		spec := m.meta.PartitionSpecByID(int(d.SpecID()))
		m.dels[d.FilePath()] = fileInfo{size: d.FileSizeBytes(), seq: -1, part: partitionKey(d),
			eqIDs: slices.Clone(d.EqualityFieldIDs()), global: spec == nil || spec.IsUnpartitioned()}
	}
	return nil
}

// active reports whether the snapshot has equality deletes to apply.
func (m *mergeOnRead) active() bool { return len(m.dels) > 0 }

// partitionKey identifies a file's partition: its spec and partition values.
func partitionKey(f iceberg.DataFile) string {
	p := f.Partition()
	ids := make([]int, 0, len(p))
	for id := range p {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(f.SpecID())))
	for _, id := range ids {
		fmt.Fprintf(&b, "|%d=%v", id, p[id])
	}
	return b.String()
}

// fetch reads the delete files' data sequence numbers from the snapshot's delete
// manifests (scan tasks carry only the data file's) and brings the files into the
// cache. The caller releases the objects (deleteObjects) with the view.
func (m *mergeOnRead) fetch(ctx context.Context, c *cache.Cache, fsys iceio.IO) error {
	if !m.active() {
		return nil
	}
	snap := m.snap
	if snap == nil {
		return errors.New("equality deletes without a current snapshot")
	}
	mans, err := snap.Manifests(fsys)
	if err != nil {
		return fmt.Errorf("reading manifests of snapshot %d: %w", snap.SnapshotID, err)
	}
	for _, mf := range mans {
		if mf.ManifestContent() != iceberg.ManifestContentDeletes {
			continue
		}
		entries, err := mf.FetchEntries(fsys, true)
		if err != nil {
			return fmt.Errorf("reading delete manifest %s: %w", mf.FilePath(), err)
		}
		for _, e := range entries {
			if d, ok := m.dels[e.DataFile().FilePath()]; ok {
				d.seq = e.SequenceNum()
				m.dels[e.DataFile().FilePath()] = d
			}
		}
	}
	paths := make([]string, 0, len(m.dels))
	for p, d := range m.dels {
		if d.seq < 0 {
			return fmt.Errorf("equality delete file %s is in no delete manifest of snapshot %d", p, snap.SnapshotID)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	files := make([]cache.File, len(paths))
	for i, p := range paths {
		files[i] = cache.File{Location: p, Size: m.dels[p].size}
	}
	objs, err := c.FetchAll(ctx, fsys, files, fetchParallel)
	if err != nil {
		return err
	}
	for i, p := range paths {
		d := m.dels[p]
		d.local = objs[i].Path
		m.dels[p] = d
	}
	m.delObjs = objs
	return nil
}

// setData pairs the data files' Iceberg paths with their cached objects.
func (m *mergeOnRead) setData(paths []string, objs []cache.Object) {
	m.dataObjs = make([]dataObject, len(paths))
	for i, p := range paths {
		m.dataObjs[i] = dataObject{local: objs[i].Path, info: m.data[p]}
	}
}

// body is the view's SELECT over the data files with the equality deletes applied.
func (m *mergeOnRead) body(s *iceberg.Schema) (string, error) {
	paths := make([]string, len(m.dataObjs))
	seqs := make([]string, len(m.dataObjs))
	parts := make([]string, len(m.dataObjs))
	for i, d := range m.dataObjs {
		paths[i] = quoteString(d.local)
		seqs[i] = strconv.FormatInt(d.info.seq, 10)
		parts[i] = quoteString(d.info.part)
	}
	// Each row's file's sequence number and partition, by the file's position in the
	// list (read_parquet's file_index): a list lookup per row, no join.
	var b strings.Builder
	b.WriteString("SELECT d.* EXCLUDE (" + seqColumn + ", " + partColumn + ") FROM (SELECT *, [" + strings.Join(seqs, ", ") +
		"][CAST(file_index AS BIGINT) + 1] AS " + seqColumn + ", [" + strings.Join(parts, ", ") + "][CAST(file_index AS BIGINT) + 1] AS " + partColumn +
		" FROM read_parquet([" + strings.Join(paths, ", ") + "], union_by_name = true, hive_partitioning = false)) AS d")

	// One anti-join per set of equality columns (and partitioned or not).
	type group struct {
		cols   []string
		global bool
		files  []fileInfo
	}
	groups := map[string]*group{}
	var order []string
	for _, p := range slices.Sorted(maps.Keys(m.dels)) {
		d := m.dels[p]
		var cols []string
		for _, id := range d.eqIDs {
			n, ok := s.FindColumnName(id)
			if !ok {
				return "", fmt.Errorf("equality delete file %s deletes by field %d, which the table schema lacks", p, id)
			}
			cols = append(cols, n)
		}
		k := fmt.Sprint(d.global, cols)
		g := groups[k]
		if g == nil {
			g = &group{cols: cols, global: d.global}
			groups[k] = g
			order = append(order, k)
		}
		g.files = append(g.files, d)
	}
	var where []string
	for i, k := range order {
		g := groups[k]
		alias := "x" + strconv.Itoa(i)
		paths := make([]string, len(g.files))
		seqs := make([]string, len(g.files))
		parts := make([]string, len(g.files))
		for j, d := range g.files {
			paths[j] = quoteString(d.local)
			seqs[j] = strconv.FormatInt(d.seq, 10)
			parts[j] = quoteString(d.part)
		}
		keys := make([]string, len(g.cols))
		on := make([]string, 0, len(g.cols)+1)
		for j, c := range g.cols {
			keys[j] = "x." + quoteIdent(c)
			on = append(on, "d."+quoteIdent(c)+" IS NOT DISTINCT FROM "+alias+"."+quoteIdent(c))
		}
		groupBy := strings.Join(keys, ", ")
		if !g.global {
			groupBy += ", x.part"
			on = append(on, "d."+partColumn+" = "+alias+".part")
		}
		fmt.Fprintf(&b, " LEFT JOIN (SELECT %s, max(x.seq) AS seq FROM (SELECT *, [%s][CAST(file_index AS BIGINT) + 1] AS seq, [%s][CAST(file_index AS BIGINT) + 1] AS part"+
			" FROM read_parquet([%s], union_by_name = true, hive_partitioning = false)) AS x GROUP BY %s) AS %s ON %s",
			groupBy, strings.Join(seqs, ", "), strings.Join(parts, ", "), strings.Join(paths, ", "), groupBy, alias, strings.Join(on, " AND "))
		where = append(where, "("+alias+".seq IS NULL OR "+alias+".seq <= d."+seqColumn+")")
	}
	b.WriteString(" WHERE " + strings.Join(where, " AND "))
	return b.String(), nil
}
