package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/medlake/medlake/agent/quarantine"
	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/protocol"
)

// maxRetryPoll bounds how long a retry request waits for the agent to see it when the
// rescan interval is long: ops who ran `quarantine retry` are watching.
const maxRetryPoll = 5 * time.Second

func (a *Agent) retryPoll() time.Duration { return min(a.cfg.RescanInterval, maxRetryPoll) }

// takeRetries handles the retry requests left in the quarantine folder: each file is
// re-processed from its quarantine copy under the current feed definitions. It runs on
// the processor's goroutine, so it never races processFile. It returns an error only when
// the agent cannot go on.
func (a *Agent) takeRetries(ctx context.Context) error {
	shas, err := quarantine.PendingRetries(a.dirs.quarantine)
	if err != nil {
		a.logger.Error("reading retry requests failed", "err", err)
		a.setError(err)
		return nil
	}
	for _, sha := range shas {
		if ctx.Err() != nil {
			return nil
		}
		done, err := a.retry(ctx, sha)
		if err != nil {
			return err
		}
		if done {
			if err := quarantine.DoneRetry(a.dirs.quarantine, sha); err != nil {
				a.logger.Error("removing retry request failed", "sha256", sha, "err", err)
			}
		}
	}
	return nil
}

// retry re-processes one quarantined file. done is false when the request should stay
// for the next poll (a transient failure).
func (a *Agent) retry(ctx context.Context, sha string) (done bool, err error) {
	log := a.logger.With("sha256", sha)
	copyPath := quarantine.CopyOf(a.dirs.quarantine, sha)
	if copyPath == "" {
		log.Warn("retry requested for a file with no quarantine copy; ignored")
		return true, nil
	}
	rec, known, err := a.state.Get(sha)
	if err != nil {
		return false, err
	}
	var ident state.File
	switch {
	case !known:
		// The state was lost or reset; the reason file still says where the file was.
		e, err := quarantine.Find(a.dirs.quarantine, sha)
		if err != nil {
			log.Warn("retry requested for a file unknown to state with no readable reason; ignored", "err", err)
			return true, nil
		}
		ident = state.File{SHA256: sha, Path: e.Path}
	case rec.Status == state.StatusQuarantined:
		if rec, err = a.state.Release(sha); err != nil {
			return false, err
		}
		ident = state.File{SHA256: sha, Path: rec.Path, Root: rec.Root, Size: rec.Size, ModTime: rec.ModTime}
	case rec.Status == state.StatusInProgress && !rec.Spooled:
		// Released by an earlier attempt that did not finish (a restart, a read error).
		ident = state.File{SHA256: sha, Path: rec.Path, Root: rec.Root, Size: rec.Size, ModTime: rec.ModTime}
	default:
		log.Info("retry requested for a file that is not quarantined; nothing to do", "status", rec.Status)
		return true, nil
	}
	got, size, err := unpack.HashFile(copyPath)
	if err != nil {
		log.Warn("reading quarantine copy failed, will retry", "copy", copyPath, "err", err)
		a.setError(err)
		return false, nil
	}
	if got != sha {
		// Not the content that was quarantined: refuse rather than ingest it under
		// another file's identity.
		err := fmt.Errorf("quarantine copy %s has sha256 %s, not %s", copyPath, got, sha)
		log.Error("retry refused", "err", err)
		a.setError(err)
		if _, qerr := a.state.Quarantine(ident, err.Error()); qerr != nil {
			return false, qerr
		}
		return true, nil
	}
	if ident.Size == 0 {
		ident.Size = size
	}
	log.Info("retrying quarantined file", "path", ident.Path, "copy", copyPath)
	// Feeds match by base name and entries are named after the file, so the copy is
	// read under its original name.
	stage, cleanup, err := a.stageCopy(copyPath, sha, ident.Path)
	if err != nil {
		log.Warn("staging quarantine copy failed, will retry", "err", err)
		a.setError(err)
		return false, nil
	}
	defer cleanup()
	res, err := a.parse(ctx, stage, relDir(ident.Root, ident.Path), sha)
	defer res.cleanup()
	var fe *fileError
	switch {
	case errors.As(err, &fe):
		// Still bad: back to quarantine with today's reason.
		return true, a.quarantine(ident, fe.reason)
	case err != nil:
		if ctx.Err() != nil {
			return false, nil
		}
		log.Warn("reading quarantine copy failed, will retry", "err", err)
		a.setError(err)
		return false, nil
	}
	if err := a.spoolFile(ctx, ident, res); err != nil {
		return false, err
	}
	if ctx.Err() != nil {
		return false, nil
	}
	a.sender.Event(protocol.Event{Kind: protocol.EventRetry, File: ident.Path})
	return true, nil
}

// resumeFromCopy asks for a retry of an in-progress file whose original is gone but whose
// quarantine copy remains (a retry interrupted by a restart), so it is parsed from the copy.
func (a *Agent) resumeFromCopy(f state.File) bool {
	if _, err := os.Stat(f.Path); err == nil {
		return false
	}
	if quarantine.CopyOf(a.dirs.quarantine, f.SHA256) == "" {
		return false
	}
	if err := quarantine.RequestRetry(a.dirs.quarantine, f.SHA256); err != nil {
		a.logger.Error("requesting retry of interrupted file failed", "sha256", f.SHA256, "err", err)
		return false
	}
	return true
}

// stageCopy makes the quarantine copy readable under the original file's base name, in
// the agent's staging folder (cleared at start): a hard link, or a copy across volumes.
func (a *Agent) stageCopy(copyPath, sha, origPath string) (string, func(), error) {
	dir := filepath.Join(a.dirs.tmp, "retry-"+sha[:16])
	if err := os.RemoveAll(dir); err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	dst := filepath.Join(dir, filepath.Base(origPath))
	if err := os.Link(copyPath, dst); err != nil {
		if err := copyFile(copyPath, dst); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("staging %s: %w", copyPath, err)
		}
	}
	return dst, cleanup, nil
}
