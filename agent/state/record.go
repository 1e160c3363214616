package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// recordVersion is written into every stored record; a newer agent's record is refused
// rather than half understood.
const recordVersion = 1

// Status is where a source file stands.
type Status string

const (
	// StatusInProgress: the file is being parsed or its batches await acks.
	StatusInProgress Status = "in_progress"
	// StatusDone: every batch of the file was committed by the hub.
	StatusDone Status = "done"
	// StatusQuarantined: the file could not be read, or the hub rejected a batch of it;
	// a copy and the reason are in quarantine.
	StatusQuarantined Status = "quarantined"
)

// BatchState is where one batch of a file stands.
type BatchState string

const (
	// BatchPending: known from parsing but not yet durable in the spool.
	BatchPending BatchState = "pending"
	// BatchSpooled: in the spool, awaiting the hub's ack.
	BatchSpooled BatchState = "spooled"
	// BatchCommitted: the hub committed it to the lake.
	BatchCommitted BatchState = "committed"
	// BatchRejected: the hub rejected it; the frame is in dead-letter.
	BatchRejected BatchState = "rejected"
)

// Batch is one batch produced from a file.
type Batch struct {
	ID     string     `json:"id"`
	Feed   string     `json:"feed"`
	Part   int        `json:"part"`
	Parts  int        `json:"parts"`
	Rows   int64      `json:"rows"`
	State  BatchState `json:"state"`
	Reason string     `json:"reason,omitempty"`
}

// Acked reports whether the hub has answered for the batch.
func (b Batch) Acked() bool { return b.State == BatchCommitted || b.State == BatchRejected }

// File is the stored record of one source file, keyed by SHA256.
type File struct {
	Version int    `json:"v"`
	SHA256  string `json:"sha256"`
	Status  Status `json:"status"`
	// Path is where the file was found; Root is the watched folder it was found under,
	// so `done: move` can keep its relative path.
	Path    string    `json:"path"`
	Root    string    `json:"root,omitempty"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	// Spooled is set once every batch of the file is durable in the spool: a restart
	// then waits for acks instead of parsing the file again.
	Spooled   bool      `json:"spooled"`
	Batches   []Batch   `json:"batches,omitempty"`
	Rows      int64     `json:"rows"`
	Rejects   int64     `json:"rejects"`
	Reason    string    `json:"reason,omitempty"`
	MovedTo   string    `json:"moved_to,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	Updated   time.Time `json:"updated"`
	DoneAt    time.Time `json:"done_at,omitzero"`
}

// Unacked returns the ids of the file's batches the hub has not answered for yet.
func (f *File) Unacked() []string {
	var ids []string
	for _, b := range f.Batches {
		if !b.Acked() {
			ids = append(ids, b.ID)
		}
	}
	return ids
}

// Complete reports whether every batch of an in-progress file is spooled and answered.
func (f *File) Complete() bool {
	return f.Status == StatusInProgress && f.Spooled && len(f.Unacked()) == 0
}

// Rejected returns the batches the hub rejected.
func (f *File) Rejected() []Batch {
	var out []Batch
	for _, b := range f.Batches {
		if b.State == BatchRejected {
			out = append(out, b)
		}
	}
	return out
}

// ErrCorrupt: a stored record does not decode; the database needs attention.
var ErrCorrupt = errors.New("corrupt state record")

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (f *File) validate() error {
	if f.Version != recordVersion {
		return fmt.Errorf("record version %d, this agent reads %d", f.Version, recordVersion)
	}
	if !isHexSHA256(f.SHA256) {
		return fmt.Errorf("sha256 %q is not lowercase hex SHA-256", f.SHA256)
	}
	switch f.Status {
	case StatusInProgress, StatusDone, StatusQuarantined:
	default:
		return fmt.Errorf("file %s: unknown status %q", f.SHA256, f.Status)
	}
	seen := make(map[string]bool, len(f.Batches))
	for i, b := range f.Batches {
		if b.ID == "" {
			return fmt.Errorf("file %s: batch %d has no id", f.SHA256, i)
		}
		if seen[b.ID] {
			return fmt.Errorf("file %s: batch %s listed twice", f.SHA256, b.ID)
		}
		seen[b.ID] = true
		switch b.State {
		case BatchPending, BatchSpooled, BatchCommitted, BatchRejected:
		default:
			return fmt.Errorf("file %s: batch %s: unknown state %q", f.SHA256, b.ID, b.State)
		}
	}
	return nil
}

func encodeFile(f File) ([]byte, error) {
	f.Version = recordVersion
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("encoding state record: %w", err)
	}
	return json.Marshal(f)
}

// decodeFile parses a stored record strictly: unknown fields, trailing data and invalid
// values are errors wrapping ErrCorrupt.
func decodeFile(b []byte) (File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return File{}, fmt.Errorf("decoding state record: %v: %w", err, ErrCorrupt)
	}
	if dec.More() {
		return File{}, fmt.Errorf("decoding state record: trailing data: %w", ErrCorrupt)
	}
	if err := f.validate(); err != nil {
		return File{}, fmt.Errorf("decoding state record: %v: %w", err, ErrCorrupt)
	}
	return f, nil
}
