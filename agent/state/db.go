package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketFiles   = []byte("files")   // sha256 → File JSON
	bucketBatches = []byte("batches") // batch id → sha256 of its file
	bucketCounts  = []byte("counts")  // status → uint64 count of files
)

// Errors; test with errors.Is.
var (
	// ErrUnknownFile: no record for that content hash.
	ErrUnknownFile = errors.New("unknown file")
	// ErrWouldDuplicate: a new parse of a file lacks batches the hub already committed
	// (the feed's version changed in between), so sending it would put rows in the lake
	// twice under new batch ids.
	ErrWouldDuplicate = errors.New("batches already committed would be written again under new ids")
	// ErrNotQuarantined: the file is not quarantined, so there is nothing to release.
	ErrNotQuarantined = errors.New("file is not quarantined")
	// ErrNotDone: the file is not done, so it cannot be reopened.
	ErrNotDone = errors.New("file is not done")
)

// Counts is how many files are in each status.
type Counts struct {
	InProgress, Done, Quarantined int64
}

// DB is the agent's file state. Safe for concurrent use (bbolt serializes writers).
type DB struct {
	db  *bolt.DB
	now func() time.Time
}

// Open opens or creates the state database at path.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("opening state db %s: %w", path, err)
	}
	// The timeout turns a second agent on the same state dir into an error instead of a hang.
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening state db %s (is another agent using it?): %w", path, err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketFiles, bucketBatches, bucketCounts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("initializing state db %s: %w", path, err)
	}
	return &DB{db: bdb, now: func() time.Time { return time.Now().UTC() }}, nil
}

// Close closes the database. Safe to call twice.
func (d *DB) Close() error {
	return d.db.Close()
}

func getFile(tx *bolt.Tx, sha string) (File, bool, error) {
	v := tx.Bucket(bucketFiles).Get([]byte(sha))
	if v == nil {
		return File{}, false, nil
	}
	f, err := decodeFile(v)
	if err != nil {
		return File{}, false, fmt.Errorf("file %s: %w", sha, err)
	}
	return f, true, nil
}

// putFile stores f and keeps the per-status counters in step with the old record.
func (d *DB) putFile(tx *bolt.Tx, old *File, f File) error {
	f.Updated = d.now()
	v, err := encodeFile(f)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketFiles).Put([]byte(f.SHA256), v); err != nil {
		return err
	}
	if old != nil && old.Status == f.Status {
		return nil
	}
	c := tx.Bucket(bucketCounts)
	add := func(s Status, delta int64) error {
		n := int64(0)
		if b := c.Get([]byte(s)); len(b) == 8 {
			n = int64(binary.BigEndian.Uint64(b))
		}
		return c.Put([]byte(s), binary.BigEndian.AppendUint64(nil, uint64(max(n+delta, 0))))
	}
	if old != nil {
		if err := add(old.Status, -1); err != nil {
			return err
		}
	}
	return add(f.Status, 1)
}

// Get returns the record for a content hash.
func (d *DB) Get(sha string) (File, bool, error) {
	var f File
	var ok bool
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		f, ok, err = getFile(tx, sha)
		return err
	})
	if err != nil {
		return File{}, false, fmt.Errorf("reading state: %w", err)
	}
	return f, ok, nil
}

// StartFile records that f is being parsed into the given batches (status in_progress,
// not yet spooled). When the file was already in progress (a restart re-parses it), the
// states of batches it already had are kept, so an acked batch is not spooled again.
// It returns the stored record.
func (d *DB) StartFile(f File) (File, error) {
	if !isHexSHA256(f.SHA256) {
		return File{}, fmt.Errorf("starting file %s: sha256 %q is not lowercase hex SHA-256", f.Path, f.SHA256)
	}
	var out File
	err := d.db.Update(func(tx *bolt.Tx) error {
		old, ok, err := getFile(tx, f.SHA256)
		if err != nil {
			return err
		}
		if ok && old.Status != StatusInProgress {
			return fmt.Errorf("file %s is already %s", f.SHA256, old.Status)
		}
		prev := make(map[string]Batch)
		if ok {
			for _, b := range old.Batches {
				prev[b.ID] = b
			}
			f.FirstSeen = old.FirstSeen
		} else {
			f.FirstSeen = d.now()
		}
		next := make(map[string]bool, len(f.Batches))
		for _, b := range f.Batches {
			next[b.ID] = true
		}
		for _, b := range old.Batches {
			if b.State == BatchCommitted && !next[b.ID] {
				return fmt.Errorf("batch %s (feed %s part %d/%d) is in the lake but not among the %d batches of this parse: %w",
					b.ID, b.Feed, b.Part, b.Parts, len(f.Batches), ErrWouldDuplicate)
			}
		}
		f.Status = StatusInProgress
		f.Spooled = false
		f.Reason = ""
		for i, b := range f.Batches {
			if p, ok := prev[b.ID]; ok && p.State != BatchPending {
				f.Batches[i].State, f.Batches[i].Reason = p.State, p.Reason
			} else {
				f.Batches[i].State = BatchPending
			}
		}
		ix := tx.Bucket(bucketBatches)
		for _, b := range f.Batches {
			if err := ix.Put([]byte(b.ID), []byte(f.SHA256)); err != nil {
				return err
			}
		}
		var oldp *File
		if ok {
			oldp = &old
		}
		if err := d.putFile(tx, oldp, f); err != nil {
			return err
		}
		out = f
		return nil
	})
	if err != nil {
		return File{}, fmt.Errorf("starting file %s in state: %w", f.SHA256, err)
	}
	return out, nil
}

func (d *DB) update(sha, what string, fn func(f *File) error) (File, error) {
	var out File
	err := d.db.Update(func(tx *bolt.Tx) error {
		f, ok, err := getFile(tx, sha)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("file %s: %w", sha, ErrUnknownFile)
		}
		old := f
		old.Batches = append([]Batch(nil), f.Batches...)
		if err := fn(&f); err != nil {
			return err
		}
		if err := d.putFile(tx, &old, f); err != nil {
			return err
		}
		out = f
		return nil
	})
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// MarkSpooled records that a batch of the file is durable in the spool.
func (d *DB) MarkSpooled(sha, batchID string) error {
	_, err := d.update(sha, "marking batch "+batchID+" spooled", func(f *File) error {
		for i := range f.Batches {
			if f.Batches[i].ID == batchID {
				if f.Batches[i].State == BatchPending {
					f.Batches[i].State = BatchSpooled
				}
				return nil
			}
		}
		return fmt.Errorf("file %s has no batch %s", sha, batchID)
	})
	return err
}

// FinishSpooling records that every batch of the file is spooled (or was acked before a
// restart). The caller finalizes the file when the result is Complete.
func (d *DB) FinishSpooling(sha string, rows, rejects int64) (File, error) {
	return d.update(sha, "finishing spooling of "+sha, func(f *File) error {
		for _, b := range f.Batches {
			if b.State == BatchPending {
				return fmt.Errorf("file %s: batch %s is not spooled yet", sha, b.ID)
			}
		}
		f.Spooled = true
		f.Rows, f.Rejects = rows, rejects
		return nil
	})
}

// Ack records the hub's answer for a batch and returns its file. ok is false when the
// batch id is unknown. Repeated acks are harmless: an answered batch keeps its first answer.
func (d *DB) Ack(batchID string, committed bool, reason string) (f File, ok bool, err error) {
	var sha string
	err = d.db.View(func(tx *bolt.Tx) error {
		sha = string(tx.Bucket(bucketBatches).Get([]byte(batchID)))
		return nil
	})
	if err != nil {
		return File{}, false, fmt.Errorf("acking batch %s: %w", batchID, err)
	}
	if sha == "" {
		return File{}, false, nil
	}
	found := false
	f, err = d.update(sha, "acking batch "+batchID, func(f *File) error {
		for i := range f.Batches {
			b := &f.Batches[i]
			if b.ID != batchID {
				continue
			}
			found = true
			if b.Acked() {
				return nil
			}
			if committed {
				b.State, b.Reason = BatchCommitted, ""
			} else {
				b.State, b.Reason = BatchRejected, reason
			}
			return nil
		}
		return nil
	})
	if err != nil {
		return File{}, false, err
	}
	return f, found, nil
}

// MarkDone records that every batch of the file was committed. movedTo is where
// `done: move` put it ("" when kept in place).
func (d *DB) MarkDone(sha, movedTo string) (File, error) {
	return d.update(sha, "marking "+sha+" done", func(f *File) error {
		if f.Status == StatusDone {
			return nil
		}
		if f.Status != StatusInProgress || !f.Spooled || len(f.Unacked()) > 0 {
			return fmt.Errorf("file %s is %s with %d unacked batches, cannot be done", sha, f.Status, len(f.Unacked()))
		}
		f.Status = StatusDone
		if movedTo != "" {
			// A file reopened for a retry of its rejects keeps where it was moved.
			f.MovedTo = movedTo
		}
		f.DoneAt = d.now()
		return nil
	})
}

// Quarantine records that the file was quarantined with reason. f carries the identity
// (SHA256, Path, Root, Size, ModTime) for a file not seen before.
func (d *DB) Quarantine(f File, reason string) (File, error) {
	if !isHexSHA256(f.SHA256) {
		return File{}, fmt.Errorf("quarantining %s: sha256 %q is not lowercase hex SHA-256", f.Path, f.SHA256)
	}
	var out File
	err := d.db.Update(func(tx *bolt.Tx) error {
		old, ok, err := getFile(tx, f.SHA256)
		if err != nil {
			return err
		}
		var oldp *File
		if ok {
			oldp = &old
			f = old
		} else {
			f.FirstSeen = d.now()
		}
		f.Status = StatusQuarantined
		f.Reason = reason
		if err := d.putFile(tx, oldp, f); err != nil {
			return err
		}
		out = f
		return nil
	})
	if err != nil {
		return File{}, fmt.Errorf("quarantining %s in state: %w", f.SHA256, err)
	}
	return out, nil
}

// Release takes a quarantined file back for another attempt, after ops fixed its feed
// definition or password: the record returns to in_progress, not spooled, keeping only
// the batches the hub committed (StartFile then refuses a parse that would write those
// rows again under new ids), and is parsed afresh.
func (d *DB) Release(sha string) (File, error) {
	return d.update(sha, "releasing "+sha+" from quarantine", func(f *File) error {
		if f.Status != StatusQuarantined {
			return fmt.Errorf("file %s is %s: %w", sha, f.Status, ErrNotQuarantined)
		}
		var kept []Batch
		for _, b := range f.Batches {
			if b.State == BatchCommitted {
				kept = append(kept, b)
			}
		}
		f.Status, f.Spooled, f.Batches, f.Reason = StatusInProgress, false, kept, ""
		return nil
	})
}

// Reopen takes a done file back to in_progress, not spooled, keeping its (committed)
// batches and where it was moved, so that more batches of it can be sent: the rows its
// definition once rejected, re-run under a fixed definition. The caller passes the kept
// batches along with the new ones to StartFile.
func (d *DB) Reopen(sha string) (File, error) {
	return d.update(sha, "reopening "+sha, func(f *File) error {
		if f.Status != StatusDone {
			return fmt.Errorf("file %s is %s: %w", sha, f.Status, ErrNotDone)
		}
		f.Status, f.Spooled, f.DoneAt = StatusInProgress, false, time.Time{}
		return nil
	})
}

// InProgress returns every file still in progress, for resuming after a restart.
func (d *DB) InProgress() ([]File, error) {
	var out []File
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFiles).ForEach(func(k, v []byte) error {
			f, err := decodeFile(v)
			if err != nil {
				return fmt.Errorf("file %s: %w", k, err)
			}
			if f.Status == StatusInProgress {
				out = append(out, f)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing files in progress: %w", err)
	}
	return out, nil
}

// Counts returns how many files are in each status.
func (d *DB) Counts() (Counts, error) {
	var c Counts
	err := d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounts)
		get := func(s Status) int64 {
			if v := b.Get([]byte(s)); len(v) == 8 {
				return int64(binary.BigEndian.Uint64(v))
			}
			return 0
		}
		c = Counts{InProgress: get(StatusInProgress), Done: get(StatusDone), Quarantined: get(StatusQuarantined)}
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("reading state counts: %w", err)
	}
	return c, nil
}
