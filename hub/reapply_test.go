package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol/feed"
)

// TestConflictReappliesDataFiles: an append that lost the race to another hub's commit
// is re-applied to the table's new version with the data files it already wrote, unless
// the other hub committed one of its batches meanwhile (a re-send that reached both
// hubs): then the retry drops that batch and writes the rest again. Either way every
// batch is in the table once.
func TestConflictReappliesDataFiles(t *testing.T) {
	def, err := feed.Parse([]byte(`
name: notes_csv
version: 1
table: notes
match: {glob: "*.csv"}
format: {type: csv}
partition_time: noted_at
columns:
  - {name: note, type: string}
  - {name: noted_at, type: timestamp}
`))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	newBatch := func(id string, rows int) *batch {
		return rowsBatch(def, id, id+".csv", rows, &n, func(f arrow.Field, r int, b array.Builder) bool {
			switch f.Name {
			case "note":
				b.(*array.StringBuilder).Append(fmt.Sprintf("%s row %d", id, r))
			case "noted_at":
				b.(*array.TimestampBuilder).Append(arrow.Timestamp(1_790_000_000_000_000))
			default:
				return false
			}
			return true
		})
	}

	for _, tc := range []struct {
		name string
		// other is what the other hub commits between this hub's load and its commit.
		other []string
		// reused: the retry appends the files of the attempt that lost the race.
		reused bool
	}{
		{"other batches", []string{"b-other"}, true},
		{"one of ours re-sent to the other hub", []string{"b-2"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer cat.Close()
			newHub := func(id string) *committer {
				m, err := newMetrics(prometheus.NewRegistry())
				if err != nil {
					t.Fatal(err)
				}
				return newCommitter(def, cat, id, Config{}.WithDefaults(), slog.New(slog.NewTextHandler(io.Discard, nil)), m,
					func(context.Context, []ackOut) {})
			}
			a, b := newHub("hub-a"), newHub("hub-b")
			a.buf = []*batch{newBatch("b-0", 3)}
			if err := a.flush(ctx); err != nil {
				t.Fatal(err)
			}

			// a loads the table, b commits, then a's commit on the old version loses.
			stale, err := a.loadOrCreate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range tc.other {
				b.buf = append(b.buf, newBatch(id, 2))
			}
			if err := b.flush(ctx); err != nil {
				t.Fatal(err)
			}
			a.buf = []*batch{newBatch("b-1", 4), newBatch("b-2", 5)}
			a.bufRows = 9
			if _, err := a.commit(ctx, stale); !isCommitConflict(err) {
				t.Fatalf("commit on a version another hub moved: %v, want a conflict", err)
			}
			if a.written == nil || len(a.written.files) == 0 {
				t.Fatal("the attempt that lost kept no data files for the retry")
			}
			lost := map[string]bool{}
			for _, f := range a.written.files {
				lost[f.FilePath()] = true
			}

			if err := a.flush(ctx); err != nil {
				t.Fatal(err)
			}
			tbl, err := a.loadOrCreate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tasks, err := tbl.Scan().PlanFiles(ctx)
			if err != nil {
				t.Fatal(err)
			}
			inTable := 0
			for _, task := range tasks {
				if lost[task.File.FilePath()] {
					inTable++
				}
			}
			switch {
			case tc.reused && inTable != len(lost):
				t.Errorf("%d of the %d data files written by the attempt that lost are in the table, want all", inTable, len(lost))
			case !tc.reused && inTable != 0:
				t.Errorf("%d data files holding a batch the other hub committed are in the table, want none", inTable)
			}
			_, perBatch, _ := scanTable(t, cat, "notes")
			want := map[string]int64{"b-0": 3, "b-1": 4, "b-2": 5}
			for _, id := range tc.other {
				want[id] = 2 // the other hub's copy, for b-2 too
			}
			for id, rows := range want {
				if perBatch[id] != rows {
					t.Errorf("batch %s has %d rows in the table, want %d", id, perBatch[id], rows)
				}
			}
			if len(perBatch) != len(want) {
				t.Errorf("batches in the table %v, want %v", perBatch, want)
			}
		})
	}
}
