package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/protocol/feed"
)

// ReparseConfig says how Reparse reads a file again.
type ReparseConfig struct {
	// Def is the feed definition to read the file with.
	Def *feed.Definition
	// Dir is the file's folder relative to the watched folder it was found in, what
	// match.folder is matched against ("" at its root).
	Dir string
	// SecretsDir holds the secrets Def names (zip passwords, hash keys), laid out as an
	// agent's secrets folder.
	SecretsDir string
	// TempDir is where unpack may spill entries.
	TempDir string
	// BatchRows is the most rows in one emitted batch (default normalize's).
	BatchRows int
	// Limits guard unpacking as the agent's limits do; zero means the defaults.
	Limits Limits
}

// ReparseStats counts what Reparse read.
type ReparseStats struct {
	Entries  int   // entries Def accepted
	Skipped  int   // entries Def does not accept (other feeds' entries)
	Accepted int64 // rows emitted
	Rejected int64 // rows passed to reject
}

// Reparse reads the file at path as the agent does for one feed: it unpacks it under
// the same guards and normalizes every entry Def accepts (by glob, folder and sniff)
// with Def, emitting batches in Def.BatchSchema (the position fields _source_file and
// _row last) and passing rejected rows to reject. Entries Def does not accept belong to
// other feeds and are skipped. Used to re-read archived files with a newer definition.
func Reparse(ctx context.Context, path string, cfg ReparseConfig, emit func(arrow.RecordBatch) error, reject func(normalize.Reject) error) (ReparseStats, error) {
	var st ReparseStats
	lim := cfg.Limits
	n, err := normalize.New(cfg.Def, normalize.Options{BatchRows: cfg.BatchRows, MaxRecordBytes: lim.MaxRecordBytes, Secret: secretStore(cfg.SecretsDir)})
	if err != nil {
		return st, err
	}
	b := n.NewBatcher(emit)
	defer b.Release()
	pw := passwordSource{dir: cfg.SecretsDir, feeds: []*feed.Definition{cfg.Def}}
	ul := unpack.Limits{
		TempDir: cfg.TempDir, MaxRatio: lim.MaxRatio, MaxEntrySize: lim.MaxEntryBytes,
		MaxArchiveSize: lim.MaxFileBytes, MaxEntries: lim.MaxEntries, MaxDepth: lim.MaxDepth,
		Passwords: pw.passwords,
	}
	a := &Agent{}
	peek := bufio.NewReaderSize(nil, normalize.SniffPeekBytes)
	err = unpack.Walk(ctx, path, ul, func(e unpack.Entry) error {
		if e.Skip != "" {
			st.Skipped++
			return nil
		}
		matched, entry, err := a.matchFeeds([]*feed.Definition{cfg.Def}, cfg.Dir, e, peek)
		if err != nil {
			return err
		}
		if len(matched) == 0 {
			st.Skipped++
			return nil
		}
		st.Entries++
		s, err := n.RunInto(ctx, entry, e.Name, b, reject)
		st.Accepted += s.Accepted
		st.Rejected += s.Rejected
		if err != nil {
			return fmt.Errorf("entry %s (feed %s): %w", e.Name, cfg.Def.Name, err)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, unpack.ErrEncrypted) || errors.Is(err, unpack.ErrWrongPassword) {
			return st, fmt.Errorf("%w; %s", err, pw.note())
		}
		return st, err
	}
	return st, b.Flush()
}
