package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/agent/internal/durable"
	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/quarantine"
	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// Re-running rejected rows (`medlake-agent rejects retry`). The rule, chosen so that no
// row is ever written twice and none is lost:
//
//   - Only rows listed in rejects/<sha256>.jsonl are re-run; rows accepted the first time
//     are never sent again. A row is known by its entry and record number (source_row).
//   - A feed's rows are re-run only when the agent's definition of that feed has a higher
//     version than the one that rejected them (the JSONL records it). An unchanged
//     definition would reject them again, and re-running it would reuse batch ids.
//   - Retry batches have their own ids: BatchID(sha256, feed+"/retry", new version, part),
//     and their rejects BatchID(sha256, feed.RejectsKey(feed)+"/retry", ...). Neither can
//     equal an id of the first ingest (no "/retry") nor of another retry (another
//     version), and an interrupted retry re-run from the same JSONL repeats its ids, which
//     the hub's ledger drops.
//   - The new JSONL (rows still rejected, plus lines not re-run) replaces the old one only
//     once every retry batch is spooled, so an interrupted retry re-runs the same rows.
//   - Rows a new definition rejects that it did not reject before are not touched: they
//     are in the lake already.
//
// The file's record goes back to in_progress with its committed batches and gains the
// retry batches; it is done again when they are committed. Positions must mean the same
// rows under both versions: a fix that changes how records are counted (skip_lines,
// header, the XML record path) is a new ingest of the file, done by hand.

const retryKeySuffix = "/retry"

// newRejectsName is where a rejects retry writes the file's next JSONL until it is spooled.
func (a *Agent) newRejectsName(sha string) string {
	return filepath.Join(a.dirs.rejects, sha+".jsonl.retry")
}

func (a *Agent) rejectsRetryPending(sha string) bool {
	p, err := quarantine.PendingRetries(a.dirs.rejects)
	if err != nil {
		return false
	}
	for _, s := range p {
		if s == sha {
			return true
		}
	}
	return false
}

// takeRejectRetries handles the rejects retry requests in rejects/retry/.
func (a *Agent) takeRejectRetries(ctx context.Context) error {
	shas, err := quarantine.PendingRetries(a.dirs.rejects)
	if err != nil {
		a.logger.Error("reading rejects retry requests failed", "err", err)
		a.setError(err)
		return nil
	}
	for _, sha := range shas {
		if ctx.Err() != nil {
			return nil
		}
		done, err := a.retryRejects(ctx, sha)
		if err != nil {
			return err
		}
		if done {
			if err := quarantine.DoneRetry(a.dirs.rejects, sha); err != nil {
				a.logger.Error("removing rejects retry request failed", "sha256", sha, "err", err)
			}
		}
	}
	return nil
}

// rowKey is a source position: entry name and record number.
type rowKey struct {
	source string
	row    int64
}

// retryRejects re-runs one file's rejected rows. done is false when the request should
// stay for the next poll.
func (a *Agent) retryRejects(ctx context.Context, sha string) (done bool, err error) {
	log := a.logger.With("sha256", sha)
	rec, known, err := a.state.Get(sha)
	if err != nil {
		return false, err
	}
	switch {
	case !known:
		log.Warn("rejects retry requested for a file unknown to state; ignored")
		return true, nil
	case rec.Status == state.StatusQuarantined:
		log.Warn("rejects retry requested for a quarantined file; use quarantine retry")
		return true, nil
	case rec.Status == state.StatusInProgress && !retryReopened(rec):
		return false, nil // still in its first ingest: wait for it to be done
	case rec.Status == state.StatusInProgress && rec.Spooled:
		// An earlier run of this retry is spooled and awaits acks: done. A first
		// ingest about to be finished: wait for it.
		for _, b := range rec.Batches {
			if strings.HasSuffix(b.Feed, retryKeySuffix) {
				return true, nil
			}
		}
		return false, nil
	}

	lines, err := readRejectLines(filepath.Join(a.dirs.rejects, sha+".jsonl"))
	if errors.Is(err, fs.ErrNotExist) {
		log.Info("rejects retry requested for a file with no rejected rows; nothing to do")
		return true, nil
	}
	if err != nil {
		log.Error("reading rejects failed", "err", err)
		a.setError(err)
		return true, nil
	}
	// Which feeds have a newer definition than the one that rejected their rows.
	rejectedAt := map[string]int{}
	for _, l := range lines {
		if l.Feed != "" {
			rejectedAt[l.Feed] = max(rejectedAt[l.Feed], l.FeedVersion)
		}
	}
	rerun := map[string]*feed.Definition{}
	for _, def := range a.feedsFor(ctx).defs {
		if v, ok := rejectedAt[def.Name]; ok && def.Version > v {
			rerun[def.Name] = def
		}
	}
	if len(rerun) == 0 {
		log.Warn("rejects retry: no feed of the rejected rows has a newer definition; fix the definition and raise its version first",
			"feeds", fmt.Sprint(rejectedAt))
		return true, nil
	}
	want := map[rowKey]bool{}
	for _, l := range lines {
		if rerun[l.Feed] != nil && l.Row > 0 {
			want[rowKey{l.Source, l.Row}] = true
		}
	}

	src := rec.Path
	if rec.MovedTo != "" {
		src = rec.MovedTo
	}
	got, _, err := unpack.HashFile(src)
	if err != nil || got != sha {
		err = fmt.Errorf("rejects retry of %s: the ingested content is no longer at %s (sha256 %q, %v); put it back to retry", sha, src, got, err)
		log.Error("rejects retry refused", "err", err)
		a.setError(err)
		return true, nil
	}
	stage, cleanup, err := a.stageCopy(src, sha, rec.Path)
	if err != nil {
		log.Warn("staging file for rejects retry failed, will retry", "err", err)
		a.setError(err)
		return false, nil
	}
	defer cleanup()

	if rec.Status == state.StatusDone {
		if rec, err = a.state.Reopen(sha); err != nil {
			return false, err
		}
	}
	log.Info("re-running rejected rows", "path", rec.Path, "rows", len(want), "feeds", len(rerun))
	parts, rows, remaining, err := a.parseRetry(ctx, stage, relDir(rec.Root, rec.Path), sha, rerun, want, lines)
	if err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		// The file's data is in the lake; only the retry failed. Back to done.
		log.Error("rejects retry failed; the file stays done with its rejects", "err", err)
		a.setError(err)
		if _, err := a.state.FinishSpooling(sha, rec.Rows, rec.Rejects); err != nil {
			// Batches of an interrupted run of this retry are still pending: keep the
			// request, so the next attempt finishes them.
			log.Error("rejects retry: file cannot return to done yet", "err", err)
			return false, nil
		}
		if _, err := a.state.MarkDone(sha, ""); err != nil {
			return false, err
		}
		return true, nil
	}
	// The record keeps every committed batch, so StartFile refuses a parse that would
	// drop one, except those this run makes again (an interrupted run of this retry).
	ident := state.File{SHA256: sha, Path: rec.Path, Root: rec.Root, Size: rec.Size, ModTime: rec.ModTime}
	again := partIDs(sha, parts)
	for _, b := range rec.Batches {
		if b.State == state.BatchCommitted && !again[b.ID] {
			ident.Batches = append(ident.Batches, b)
		}
	}
	if err := a.spoolFile(ctx, ident, &parsed{parts: parts, rows: rec.Rows + rows, rejects: remaining}); err != nil {
		return false, err
	}
	if ctx.Err() != nil {
		return false, nil
	}
	// Every retry batch is spooled: the new JSONL becomes the file's rejects.
	next, cur := a.newRejectsName(sha), filepath.Join(a.dirs.rejects, sha+".jsonl")
	if _, err := os.Stat(next); err == nil {
		err = os.Rename(next, cur)
		if err != nil {
			return false, fmt.Errorf("replacing rejects of %s: %w", sha, err)
		}
	} else if err := os.Remove(cur); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("removing resolved rejects of %s: %w", sha, err)
	}
	if err := durable.SyncDirs(a.dirs.rejects); err != nil {
		log.Warn("syncing rejects folder failed", "err", err)
	}
	log.Info("rejected rows re-run", "accepted", rows, "still_rejected", remaining)
	a.sender.Event(protocol.Event{Kind: protocol.EventRetry, File: rec.Path, Reason: fmt.Sprintf("rejected rows re-run: %d accepted, %d still rejected", rows, remaining)})
	return true, nil
}

// retryReopened tells an in-progress file reopened by a rejects retry from one in its
// first ingest: every batch it has that is not a retry batch is committed.
func retryReopened(f state.File) bool {
	for _, b := range f.Batches {
		if !strings.HasSuffix(b.Feed, retryKeySuffix) && b.State != state.BatchCommitted {
			return false
		}
	}
	return len(f.Batches) > 0
}

// partIDs are the batch ids spoolFile gives parts: numbered per key in order.
func partIDs(sha string, parts []part) map[string]bool {
	seq := map[string]int{}
	ids := make(map[string]bool, len(parts))
	for _, p := range parts {
		seq[p.key()]++
		ids[protocol.BatchID(sha, p.key(), p.version(), seq[p.key()])] = true
	}
	return ids
}

func readRejectLines(path string) ([]RejectLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []RejectLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for n := 1; sc.Scan(); n++ {
		var l RejectLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// parseRetry runs the entries of the feeds in rerun and keeps only the rows in want. It
// writes the file's next JSONL: lines not re-run carried over, then the rows still rejected.
func (a *Agent) parseRetry(ctx context.Context, path, dir, sha string, rerun map[string]*feed.Definition, want map[rowKey]bool, old []RejectLine) (parts []part, rows, remaining int64, err error) {
	rj, err := newRejectsWriter(a.newRejectsName(sha), sha, a.cfg.BatchRows)
	if err != nil {
		return nil, 0, 0, err
	}
	rj.retry = true
	defer func() {
		if cerr := rj.close(err == nil); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for _, l := range old {
		if rerun[l.Feed] == nil || l.Row == 0 {
			if err := rj.carry(l); err != nil {
				return nil, 0, 0, err
			}
		}
	}
	seen := map[rowKey]bool{}
	set := a.feedsFor(ctx)
	lim := a.limits
	pw := passwordSource{dir: a.cfg.SecretsPath(), feeds: set.defs}
	lim.Passwords = pw.passwords
	peek := bufio.NewReaderSize(nil, normalize.SniffPeekBytes)
	err = unpack.Walk(ctx, path, lim, func(e unpack.Entry) error {
		if e.Skip != "" {
			return nil
		}
		matched, entry, err := a.matchFeeds(set.defs, dir, e, peek)
		if err != nil {
			return err
		}
		if len(matched) > 1 {
			return fmt.Errorf("entry %s matches several feeds under the current definitions", e.Name)
		}
		if len(matched) == 0 || rerun[matched[0].Name] == nil {
			return nil // not re-run: its lines were carried over
		}
		def := matched[0]
		n := set.normalizers[def.Name]
		_, err = n.Run(ctx, entry, e.Name, func(rec arrow.RecordBatch) error {
			kept := filterRows(rec, e.Name, want)
			if kept == nil {
				return nil
			}
			defer kept.Release()
			rc := kept.Column(int(kept.NumCols()) - 1).(*array.Int64)
			for i := 0; i < rc.Len(); i++ {
				seen[rowKey{e.Name, rc.Value(i)}] = true
			}
			payload, err := protocol.EncodeRecords(kept.Schema(), []arrow.RecordBatch{kept})
			if err != nil {
				return fmt.Errorf("encoding batch of %s: %w", e.Name, err)
			}
			parts = append(parts, part{def: def, payload: payload, rows: kept.NumRows(), retry: true})
			rows += kept.NumRows()
			return nil
		}, func(r normalize.Reject) error {
			k := rowKey{r.Source, r.Row}
			if !want[k] {
				return nil // accepted the first time; now refused, but already in the lake
			}
			seen[k] = true
			return rj.add(def, r)
		})
		return err
	})
	if err != nil {
		return nil, 0, 0, err
	}
	// A row the new parse did not reach (its entry now matches another feed, or the
	// entry ends earlier) keeps its old line: it stays rejected, not lost.
	for _, l := range old {
		if rerun[l.Feed] != nil && l.Row > 0 && !seen[rowKey{l.Source, l.Row}] {
			if err := rj.carry(l); err != nil {
				return nil, 0, 0, err
			}
		}
	}
	rparts, err := rj.batches()
	if err != nil {
		return nil, 0, 0, err
	}
	a.rowsRejected.Add(rj.n)
	return append(parts, rparts...), rows, rj.n + rj.kept, nil
}

// filterRows returns the rows of rec whose (source, _row) is in want, or nil for none.
func filterRows(rec arrow.RecordBatch, source string, want map[rowKey]bool) arrow.RecordBatch {
	rowCol, ok := rec.Column(int(rec.NumCols()) - 1).(*array.Int64)
	if !ok {
		return nil
	}
	type run struct{ from, to int64 }
	var runs []run
	var n int64
	for i := 0; i < rowCol.Len(); i++ {
		if !want[rowKey{source, rowCol.Value(i)}] {
			continue
		}
		n++
		if k := len(runs) - 1; k >= 0 && runs[k].to == int64(i) {
			runs[k].to++
		} else {
			runs = append(runs, run{int64(i), int64(i) + 1})
		}
	}
	if n == 0 {
		return nil
	}
	cols := make([]arrow.Array, rec.NumCols())
	for c := range cols {
		slices := make([]arrow.Array, len(runs))
		for i, r := range runs {
			slices[i] = array.NewSlice(rec.Column(c), r.from, r.to)
		}
		out, err := array.Concatenate(slices, memory.DefaultAllocator)
		for _, s := range slices {
			s.Release()
		}
		if err != nil {
			for _, c := range cols {
				if c != nil {
					c.Release()
				}
			}
			return nil
		}
		cols[c] = out
	}
	kept := array.NewRecordBatch(rec.Schema(), cols, n)
	for _, c := range cols {
		c.Release()
	}
	return kept
}
