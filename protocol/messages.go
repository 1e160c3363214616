package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// AckStatus is the hub's verdict on a batch.
type AckStatus string

const (
	// AckCommitted: the batch is durably in the lake (or already was); the agent may
	// delete its spooled copy.
	AckCommitted AckStatus = "committed"
	// AckRejected: the hub will never accept this batch as it is; the agent keeps it in
	// its dead-letter folder and reports it. Reason says why.
	AckRejected AckStatus = "rejected"
)

// Ack is the hub's application acknowledgment, sent only after the lake commit. The
// broker's PUBACK only means the broker has the message.
type Ack struct {
	Version     string    `json:"v"`
	BatchID     string    `json:"batch_id"`
	Status      AckStatus `json:"status"`
	Reason      string    `json:"reason,omitempty"`
	Table       string    `json:"table,omitempty"`
	SnapshotID  int64     `json:"snapshot_id,omitempty"`
	CommittedAt time.Time `json:"committed_at,omitzero"`
}

// EncodeAck sets the version and encodes the ack.
func EncodeAck(a Ack) ([]byte, error) {
	a.Version = Version
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("encoding ack: %w", err)
	}
	return json.Marshal(a)
}

// DecodeAck decodes and checks an ack.
func DecodeAck(b []byte) (Ack, error) {
	var a Ack
	if err := decodeJSON("ack", b, &a); err != nil {
		return Ack{}, err
	}
	if err := checkVersion("ack "+a.BatchID, a.Version); err != nil {
		return Ack{}, err
	}
	if err := a.validate(); err != nil {
		return Ack{}, fmt.Errorf("decoding ack: %w", err)
	}
	return a, nil
}

func (a *Ack) validate() error {
	switch a.Status {
	case AckCommitted:
	case AckRejected:
		if a.Reason == "" {
			return fmt.Errorf("ack %s: rejected without a reason: %w", a.BatchID, ErrMalformed)
		}
	default:
		return fmt.Errorf("ack %s: unknown status %q: %w", a.BatchID, a.Status, ErrMalformed)
	}
	if a.BatchID == "" && a.Status == AckCommitted {
		return fmt.Errorf("ack: committed without a batch_id: %w", ErrMalformed)
	}
	return nil
}

// Agent states reported in Status.State.
const (
	StateOnline  = "online"
	StateOffline = "offline" // also the agent's MQTT last will
)

// Event kinds reported in Status.Events.
const (
	EventDeadLetter = "dead_letter" // a batch the hub rejected, kept in the dead-letter folder
	EventQuarantine = "quarantine"  // a source file that could not be read, kept in quarantine
	EventFileDone   = "file_done"   // every batch of a source file was committed
	// EventConfigApplied: the agent switched to a pushed config (Reason lists the feeds).
	EventConfigApplied = "config_applied"
	// EventConfigRefused: the agent refused some or all feeds of a pushed config;
	// Reason says why, Status.Config.Errors per feed.
	EventConfigRefused = "config_refused"
	EventRetry         = "retry" // a quarantined file was taken back and re-processed
)

// Status is an agent's report of its health and backlog, published retained.
type Status struct {
	Version      string    `json:"v"`
	Agent        string    `json:"agent"`
	Tenant       string    `json:"tenant"`
	Facility     string    `json:"facility"`
	State        string    `json:"state"`
	Time         time.Time `json:"time"`
	SpoolBatches int       `json:"spool_batches"`
	SpoolBytes   int64     `json:"spool_bytes"`
	SpoolFull    bool      `json:"spool_full,omitempty"`
	// OldestUnacked is when the oldest batch still waiting for the hub's ack was
	// spooled (agent clock, like Time, so Time minus OldestUnacked is its age free of
	// clock skew); zero when nothing waits. Since 1.1.
	OldestUnacked time.Time `json:"oldest_unacked,omitzero"`
	// FilesWaiting counts source files taken and not yet done (being read, spooled, or
	// waiting for acks). Since 1.1.
	FilesWaiting int     `json:"files_waiting,omitempty"`
	InFlight     int     `json:"in_flight"`
	FilesDone    int64   `json:"files_done"`
	DeadLetters  int     `json:"dead_letters"`
	Quarantined  int     `json:"quarantined"`
	RowsRejected int64   `json:"rows_rejected"`
	LastError    string  `json:"last_error,omitempty"`
	Events       []Event `json:"events,omitempty"`
	// Config is the agent's account of pushed feed definitions; absent from agents that
	// predate config messages.
	Config *ConfigState `json:"config,omitempty"`
}

// Event is something ops should see about one batch, file or config.
type Event struct {
	Kind string `json:"kind"`
	// Revision names the config of a config_applied or config_refused event.
	Revision string    `json:"revision,omitempty"`
	BatchID  string    `json:"batch_id,omitempty"`
	File     string    `json:"file,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// EncodeStatus sets the version and encodes the status.
func EncodeStatus(s Status) ([]byte, error) {
	s.Version = Version
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("encoding status: %w", err)
	}
	return json.Marshal(s)
}

// DecodeStatus decodes and checks a status.
func DecodeStatus(b []byte) (Status, error) {
	var s Status
	if err := decodeJSON("status", b, &s); err != nil {
		return Status{}, err
	}
	if err := checkVersion("status of agent "+s.Agent, s.Version); err != nil {
		return Status{}, err
	}
	if err := s.validate(); err != nil {
		return Status{}, fmt.Errorf("decoding status: %w", err)
	}
	return s, nil
}

func (s *Status) validate() error {
	if err := ValidateID("agent", s.Agent); err != nil {
		return err
	}
	switch s.State {
	case StateOnline, StateOffline:
	default:
		return fmt.Errorf("status of agent %s: unknown state %q: %w", s.Agent, s.State, ErrMalformed)
	}
	return nil
}

func decodeJSON(what string, b []byte, v any) error {
	if len(b) == 0 {
		return fmt.Errorf("decoding %s: empty message: %w", what, ErrTruncated)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		kind := ErrMalformed
		if errors.Is(err, io.ErrUnexpectedEOF) {
			kind = ErrTruncated
		}
		return fmt.Errorf("decoding %s: %v: %w", what, err, kind)
	}
	if dec.More() {
		return fmt.Errorf("decoding %s: trailing data after the message: %w", what, ErrMalformed)
	}
	return nil
}
