package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/agent/internal/durable"
	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/quarantine"
	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/agent/watch"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// part is one encoded batch payload waiting, in a file of the parse's scratch folder, to
// be framed once its feed's part count is known. Payloads wait on disk, not in memory,
// so a 1 GB export costs the agent one batch of memory, not the whole file's.
type part struct {
	def *feed.Definition
	// The encoded payload: in memory (reject and retry batches, small), or in a file of
	// the parse's scratch folder (path).
	payload []byte
	path    string
	rows    int64
	// rejects marks a batch of rows def refused, for the rejects table (see rejects.go).
	rejects bool
	// retry marks a batch of a rejects retry (see rejects_retry.go): its own ids.
	retry bool
	// archive marks a chunk of the source file itself, kept in the warehouse; def is
	// nil, feeds names the feeds the file's entries matched, size the file's size.
	archive bool
	feeds   []string
	size    int64
}

// feedName is the feed named in the part's batch header.
func (p part) feedName() string {
	if p.archive {
		return protocol.ArchiveFeed
	}
	return p.def.Name
}

// version is the feed version in the part's batch id and header.
func (p part) version() int {
	if p.archive {
		return protocol.ArchiveFeedVersion
	}
	return p.def.Version
}

// load returns the part's payload.
func (p part) load() ([]byte, error) {
	if p.path == "" {
		return p.payload, nil
	}
	return os.ReadFile(p.path)
}

// key stands for the feed name in the part's batch id and part count.
func (p part) key() string {
	if p.archive {
		return protocol.ArchiveFeed
	}
	k := p.def.Name
	if p.rejects {
		k = feed.RejectsKey(p.def.Name)
	}
	if p.retry {
		k += retryKeySuffix
	}
	return k
}

// table is where the part goes.
func (p part) table() string {
	if p.archive {
		return protocol.ArchiveTable
	}
	if p.rejects {
		return feed.RejectsTable
	}
	return p.def.Table
}

// parsed is what parse made of one source file.
type parsed struct {
	parts   []part
	rows    int64 // accepted
	rejects int64
	scratch string // folder holding the parts' payloads; removed by cleanup
}

func (p *parsed) cleanup() {
	if p != nil && p.scratch != "" {
		os.RemoveAll(p.scratch)
	}
}

// fileError is a property of the source file: it goes to quarantine with this reason.
type fileError struct{ reason string }

func (e *fileError) Error() string { return e.reason }

// processFile takes one complete file through hash → state check → unpack → normalize →
// spool. It returns an error only when the agent cannot go on (state database failure);
// problems with the file itself end in quarantine, transient ones in a retry later.
func (a *Agent) processFile(ctx context.Context, wf watch.File) error {
	log := a.logger.With("path", wf.Path)
	sha, size, err := unpack.HashFile(wf.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			log.Debug("file gone before hashing")
			return nil
		}
		log.Warn("hashing file failed, will retry", "err", err)
		a.setError(err)
		a.watcher.Forget(wf.Path)
		return nil
	}
	log = log.With("sha256", sha)
	rec, known, err := a.state.Get(sha)
	if err != nil {
		return err
	}
	if known {
		switch rec.Status {
		case state.StatusDone:
			log.Info("skipping file whose content is already ingested")
			a.moveDuplicate(wf, rec)
			return nil
		case state.StatusQuarantined:
			log.Debug("skipping quarantined content")
			return nil
		case state.StatusInProgress:
			if a.rejectsRetryPending(sha) {
				log.Debug("file is being re-run for its rejects")
				return nil
			}
			if rec.Complete() {
				a.finalizeQ.push(sha)
				return nil
			}
			if a.allSpooled(rec) {
				log.Debug("file spooled, awaiting acks")
				return nil
			}
		}
	}
	if known {
		ctx = a.pinFeeds(ctx, rec) // a file already started keeps its feed versions
	}
	ident := state.File{SHA256: sha, Path: wf.Path, Root: wf.Root, Size: size, ModTime: wf.ModTime}
	res, err := a.parse(ctx, wf.Path, relDir(wf.Root, wf.Path), sha)
	defer res.cleanup()
	var fe *fileError
	switch {
	case errors.As(err, &fe):
		return a.quarantine(ident, fe.reason)
	case err != nil:
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("reading file failed, will retry", "err", err)
		a.setError(err)
		a.watcher.Forget(wf.Path)
		return nil
	}
	// The file must still be what was hashed: a file rewritten in place after its quiet
	// period would otherwise be sent under the wrong identity.
	if st, err := os.Stat(wf.Path); err != nil || st.Size() != size || !st.ModTime().Equal(wf.ModTime) && !wf.ModTime.IsZero() {
		log.Warn("file changed while being read, will retry")
		a.watcher.Forget(wf.Path)
		return nil
	}
	return a.spoolFile(ctx, ident, res)
}

// spoolFile frames the file's parts, records them in state and puts them in the spool.
func (a *Agent) spoolFile(ctx context.Context, ident state.File, res *parsed) error {
	parts := res.parts
	counts := map[string]int{}
	for _, p := range parts {
		counts[p.key()]++
	}
	seq := map[string]int{}
	type framed struct {
		id string
		p  part
		n  int
	}
	var all []framed
	for _, p := range parts {
		seq[p.key()]++
		n := seq[p.key()]
		id := protocol.BatchID(ident.SHA256, p.key(), p.version(), n)
		all = append(all, framed{id: id, p: p, n: n})
		ident.Batches = append(ident.Batches, state.Batch{ID: id, Feed: p.key(), Part: n, Parts: counts[p.key()], Rows: p.rows})
	}
	rec, err := a.state.StartFile(ident)
	if errors.Is(err, state.ErrWouldDuplicate) {
		// The definitions changed since part of this file reached the lake: sending the
		// new parse would duplicate rows. Ops decide (see README, rejects and retries).
		return a.quarantine(ident, err.Error())
	}
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	byID := make(map[string]state.Batch, len(rec.Batches))
	for _, b := range rec.Batches {
		byID[b.ID] = b
	}
	for _, f := range all {
		if byID[f.id].Acked() {
			continue // answered before a restart; the hub has it
		}
		if !a.spool.Has(f.id) {
			payload, err := f.p.load()
			if err != nil {
				return fmt.Errorf("reading batch %s of %s back from scratch: %w", f.id, ident.Path, err)
			}
			hdr := protocol.BatchHeader{
				BatchID: f.id, Tenant: a.cfg.Tenant, Facility: a.cfg.Facility, Agent: a.cfg.ID,
				Feed: f.p.feedName(), FeedVersion: f.p.version(), Table: f.p.table(),
				SourceFile: filepath.Base(ident.Path), SourceSHA256: ident.SHA256,
				Part: f.n, Parts: counts[f.p.key()], Rows: f.p.rows, CreatedAt: now,
				SourceModTime: ident.ModTime.UTC(),
			}
			if f.p.archive {
				hdr.SourceSize, hdr.SourceDir, hdr.Feeds = f.p.size, relDir(ident.Root, ident.Path), f.p.feeds
			}
			frame, err := protocol.EncodeBatch(hdr, payload)
			if err != nil {
				return fmt.Errorf("framing batch %s of %s: %w", f.id, ident.Path, err)
			}
			// Put waits while the spool is full: this is where intake pauses.
			if err := a.spool.Put(ctx, f.id, frame); err != nil {
				if ctx.Err() != nil {
					return nil // resumed from state on the next start
				}
				return err
			}
		}
		if err := a.state.MarkSpooled(ident.SHA256, f.id); err != nil {
			return err
		}
	}
	rec, err = a.state.FinishSpooling(ident.SHA256, res.rows, res.rejects)
	if err != nil {
		return err
	}
	a.logger.Info("file spooled", "path", ident.Path, "sha256", ident.SHA256, "batches", len(all), "rows", res.rows, "rejects", res.rejects)
	if rec.Complete() {
		a.finalizeQ.push(ident.SHA256)
	}
	return nil
}

// relDir is the directory of path relative to the watched folder root, slash-separated,
// "" for a file directly in root: what match.folder is matched against.
func relDir(root, path string) string {
	rel, err := filepath.Rel(root, filepath.Dir(path))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return ""
	}
	return filepath.ToSlash(rel)
}

// matchFeeds returns the feeds of defs an entry of a file in dir belongs to, by glob,
// folder and sniff. It returns the reader to read the entry from, br reset onto the
// entry: the sniffed head is peeked, not consumed. br is reused from entry to entry, so
// an archive of hundreds of small files does not allocate a buffer for each.
func (a *Agent) matchFeeds(defs []*feed.Definition, dir string, e unpack.Entry, br *bufio.Reader) ([]*feed.Definition, io.Reader, error) {
	br.Reset(e.Reader)
	heads := map[string]string{}
	head := func(encoding string) (string, error) {
		if h, ok := heads[encoding]; ok {
			return h, nil
		}
		// Enough bytes for SniffBytes of text in any supported encoding.
		raw, err := br.Peek(normalize.SniffPeekBytes)
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return "", fmt.Errorf("reading the start of %s: %w", e.Name, err)
		}
		h, err := normalize.SniffText(raw, encoding)
		if err != nil {
			return "", fmt.Errorf("decoding the start of %s: %w", e.Name, err)
		}
		heads[encoding] = h
		return h, nil
	}
	var matched []*feed.Definition
	for _, def := range defs {
		ok, err := def.Accepts(dir, e.BaseName(), head)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			matched = append(matched, def)
		}
	}
	return matched, br, nil
}

// parse unpacks and normalizes the file into encoded payloads. Every entry must match
// exactly one feed (by glob, folder relative to the watched folder, and sniff);
// otherwise, and on any unpack or header error, the whole file is a fileError so that no
// part of it is half ingested. The rows of all entries of one feed share batches: an
// archive of 300 one-record XML files becomes one batch, not 300. The result's cleanup
// must be called whatever the error.
func (a *Agent) parse(ctx context.Context, path, dir, sha string) (res *parsed, err error) {
	res = &parsed{}
	res.scratch, err = os.MkdirTemp(a.dirs.tmp, sha[:16]+"-*")
	if err != nil {
		return res, fmt.Errorf("creating scratch folder for %s: %w", path, err)
	}
	rj, err := newRejectsWriter(filepath.Join(a.dirs.rejects, sha+".jsonl"), sha, a.cfg.BatchRows)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := rj.close(err == nil); err == nil && cerr != nil {
			err = cerr
		}
	}()
	set := a.feedsFor(ctx)
	// One batcher per feed met in the file, flushed in order of first appearance so that
	// part numbers, and so batch ids, are the same on every parse of the same content.
	batchers := map[string]*normalize.Batcher{}
	var order []*feed.Definition
	defer func() {
		for _, b := range batchers {
			b.Release()
		}
	}()
	batcher := func(def *feed.Definition) *normalize.Batcher {
		if b, ok := batchers[def.Name]; ok {
			return b
		}
		n := set.normalizers[def.Name]
		b := n.NewBatcher(func(rec arrow.RecordBatch) error {
			// Under drift add a batch's schema may extend n.Schema().
			payload, err := protocol.EncodeRecords(rec.Schema(), []arrow.RecordBatch{rec})
			if err != nil {
				return fmt.Errorf("encoding batch of %s feed %s: %w", path, def.Name, err)
			}
			p := filepath.Join(res.scratch, fmt.Sprintf("%d.arrow", len(res.parts)))
			if err := os.WriteFile(p, payload, 0o600); err != nil {
				return fmt.Errorf("writing batch of %s feed %s to scratch: %w", path, def.Name, err)
			}
			res.parts = append(res.parts, part{def: def, path: p, rows: rec.NumRows()})
			return nil
		})
		batchers[def.Name] = b
		order = append(order, def)
		return b
	}
	lim := a.limits
	peek := bufio.NewReaderSize(nil, normalize.SniffPeekBytes)
	pw := passwordSource{dir: a.cfg.SecretsPath(), feeds: set.defs}
	lim.Passwords = pw.passwords
	walkErr := unpack.Walk(ctx, path, lim, func(e unpack.Entry) error {
		if e.Skip != "" {
			return rj.add(nil, normalize.Reject{Source: e.Name, Reason: "entry skipped: " + e.Skip})
		}
		matched, entry, err := a.matchFeeds(set.defs, dir, e, peek)
		if err != nil {
			return err
		}
		switch len(matched) {
		case 0:
			return &fileError{reason: fmt.Sprintf("entry %s matches no feed", e.Name)}
		case 1:
		default:
			names := make([]string, len(matched))
			for i, d := range matched {
				names[i] = d.Name
			}
			return &fileError{reason: fmt.Sprintf("entry %s matches several feeds: %s", e.Name, strings.Join(names, ", "))}
		}
		def := matched[0]
		st, err := set.normalizers[def.Name].RunInto(ctx, entry, e.Name, batcher(def), func(r normalize.Reject) error {
			return rj.add(def, r)
		})
		if err != nil {
			for _, fe := range normalize.EntryErrors() {
				if errors.Is(err, fe) {
					return &fileError{reason: fmt.Sprintf("entry %s (feed %s): %v", e.Name, def.Name, err)}
				}
			}
			return err
		}
		res.rows += st.Accepted
		return nil
	})
	if walkErr != nil {
		var fe *fileError
		if errors.As(walkErr, &fe) {
			return res, fe
		}
		if errors.Is(walkErr, unpack.ErrEncrypted) || errors.Is(walkErr, unpack.ErrWrongPassword) {
			return res, &fileError{reason: walkErr.Error() + "; " + pw.note()}
		}
		for _, sentinel := range unpack.Sentinels() {
			if errors.Is(walkErr, sentinel) {
				return res, &fileError{reason: walkErr.Error()}
			}
		}
		return res, walkErr
	}
	for _, def := range order {
		if err := batchers[def.Name].Flush(); err != nil {
			return res, err
		}
	}
	rparts, err := rj.batches()
	if err != nil {
		return res, err
	}
	a.rowsRejected.Add(rj.n)
	res.parts = append(res.parts, rparts...)
	res.rejects = rj.n
	if a.cfg.ArchiveRaw {
		names := make([]string, len(order))
		for i, def := range order {
			names[i] = def.Name
		}
		chunks, err := archiveChunks(path, sha, res.scratch, names)
		if err != nil {
			return res, err
		}
		res.parts = append(res.parts, chunks...)
	}
	return res, nil
}

// archiveChunks copies the file at path into chunk files of scratch, for the hub to
// keep it whole in the warehouse. The copy must hash to sha: a file changed since it
// was hashed is read again later (an error, not a fileError).
func archiveChunks(path, sha, scratch string, feeds []string) ([]part, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s to archive it: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	r := io.TeeReader(f, h)
	var parts []part
	var size int64
	for {
		buf := make([]byte, protocol.ArchiveChunkBytes)
		n, err := io.ReadFull(r, buf)
		if n > 0 || len(parts) == 0 {
			p := filepath.Join(scratch, fmt.Sprintf("archive-%d", len(parts)))
			if werr := os.WriteFile(p, buf[:n], 0o600); werr != nil {
				return nil, fmt.Errorf("writing archive chunk of %s to scratch: %w", path, werr)
			}
			parts = append(parts, part{archive: true, path: p, feeds: feeds})
			size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s to archive it: %w", path, err)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return nil, fmt.Errorf("%s changed while being read (sha256 %s, then %s)", path, sha, got)
	}
	for i := range parts {
		parts[i].size = size
	}
	return parts, nil
}

// quarantine copies the file (the original is never modified) with a reason file and
// records it, so the same content is not tried again.
func (a *Agent) quarantine(f state.File, reason string) error {
	dst := filepath.Join(a.dirs.quarantine, quarantine.CopyName(f.SHA256, f.Path))
	if _, err := os.Lstat(dst); err == nil {
		// Copied by a run that stopped before recording the quarantine.
	} else if err := copyFile(f.Path, dst); err != nil {
		// Without the copy the file stays where it is and is retried; nothing is lost.
		a.logger.Error("copying file to quarantine failed", "path", f.Path, "err", err)
		a.setError(err)
		a.watcher.Forget(f.Path)
		return nil
	}
	if err := quarantine.Write(a.dirs.quarantine, quarantine.Record{SHA256: f.SHA256, Path: f.Path, Time: time.Now().UTC(), Reason: reason}); err != nil {
		a.logger.Error("writing quarantine reason failed", "path", f.Path, "err", err)
	}
	if err := durable.SyncDirs(a.dirs.quarantine); err != nil {
		a.logger.Error("syncing quarantine folder failed", "err", err)
	}
	if _, err := a.state.Quarantine(f, reason); err != nil {
		return err
	}
	a.logger.Warn("file quarantined", "path", f.Path, "sha256", f.SHA256, "reason", reason, "copy", dst)
	a.sender.Event(protocol.Event{Kind: protocol.EventQuarantine, File: f.Path, Reason: reason})
	return nil
}

func (a *Agent) runFinisher(ctx context.Context) error {
	for {
		for {
			sha, ok := a.finalizeQ.pop()
			if !ok {
				break
			}
			if err := a.finish(sha); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.finalizeQ.wake:
		}
	}
}

// finish ends a file whose batches were all answered: done (moved or kept) when all were
// committed, quarantined when the hub rejected any.
func (a *Agent) finish(sha string) error {
	f, ok, err := a.state.Get(sha)
	if err != nil || !ok || !f.Complete() {
		return err
	}
	if rej := f.Rejected(); len(rej) > 0 {
		var b strings.Builder
		for _, r := range rej {
			fmt.Fprintf(&b, "batch %s (feed %s part %d/%d) rejected by the hub: %s; ", r.ID, r.Feed, r.Part, r.Parts, r.Reason)
		}
		reason := strings.TrimSuffix(b.String(), "; ")
		if _, err := os.Stat(f.Path); err == nil || quarantine.CopyOf(a.dirs.quarantine, sha) != "" {
			return a.quarantine(f, reason)
		}
		_, err := a.state.Quarantine(f, reason)
		return err
	}
	movedTo := ""
	if w, ok := a.roots[filepath.Clean(f.Root)]; ok && w.Done == DoneMove {
		movedTo, err = a.moveDone(f, w)
		if err != nil {
			// Stays in progress and complete: retried at the next sighting or restart.
			a.logger.Error("moving finished file failed", "path", f.Path, "err", err)
			a.setError(err)
			return nil
		}
	}
	if _, err := a.state.MarkDone(sha, movedTo); err != nil {
		return err
	}
	if err := quarantine.Remove(a.dirs.quarantine, sha); err != nil {
		// A retried file left its copy behind; list shows it until removed by hand.
		a.logger.Warn("removing quarantined copy of a file now done failed", "sha256", sha, "err", err)
	}
	a.filesDone.Add(1)
	a.logger.Info("file done", "path", f.Path, "sha256", sha, "batches", len(f.Batches), "rows", f.Rows, "moved_to", movedTo)
	a.sender.Event(protocol.Event{Kind: protocol.EventFileDone, File: f.Path})
	return nil
}

// moveDone moves the finished file to done_dir under its path relative to the watched
// folder, never overwriting. It moves only the content that was ingested: a file that
// was replaced since is left alone.
func (a *Agent) moveDone(f state.File, w WatchConfig) (string, error) {
	sha, _, err := unpack.HashFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // moved by a previous run that stopped before recording it, or by someone else
	}
	if err != nil {
		return "", err
	}
	if sha != f.SHA256 {
		a.logger.Warn("finished file was replaced; leaving the new content in place", "path", f.Path)
		return "", nil
	}
	rel, err := filepath.Rel(f.Root, f.Path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		rel = filepath.Base(f.Path)
	}
	dst := filepath.Join(w.DoneDir, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("creating done dir for %s: %w", f.Path, err)
	}
	dst, err = freeName(dst)
	if err != nil {
		return "", err
	}
	if err := os.Rename(f.Path, dst); err != nil {
		// Another volume: copy, then remove the original only once the copy is durable.
		if err := copyFile(f.Path, dst); err != nil {
			return "", fmt.Errorf("moving %s to %s: %w", f.Path, dst, err)
		}
		if err := os.Remove(f.Path); err != nil {
			return "", fmt.Errorf("removing %s after copying it to %s: %w", f.Path, dst, err)
		}
	}
	return dst, nil
}

// moveDuplicate moves a second copy of already ingested content out of a `done: move`
// folder, so it is not hashed again at every rescan.
func (a *Agent) moveDuplicate(wf watch.File, rec state.File) {
	w, ok := a.roots[filepath.Clean(wf.Root)]
	if !ok || w.Done != DoneMove || wf.Path == rec.MovedTo {
		return
	}
	dup := rec
	dup.Path, dup.Root = wf.Path, wf.Root
	dst, err := a.moveDone(dup, w)
	if err != nil {
		a.logger.Warn("moving duplicate file failed", "path", wf.Path, "err", err)
		return
	}
	a.logger.Info("moved duplicate of ingested content", "path", wf.Path, "moved_to", dst)
}

// freeName returns p, or p with a numeric suffix before its extension when p exists.
func freeName(p string) (string, error) {
	ext := filepath.Ext(p)
	base := strings.TrimSuffix(p, ext)
	for i := 0; i < 10000; i++ {
		cand := p
		if i > 0 {
			cand = fmt.Sprintf("%s.%d%s", base, i, ext)
		}
		if _, err := os.Lstat(cand); errors.Is(err, fs.ErrNotExist) {
			return cand, nil
		} else if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("no free name for %s", p)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".partial"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		os.Remove(tmp)
		return fmt.Errorf("%s already exists", dst)
	}
	return os.Rename(tmp, dst)
}
