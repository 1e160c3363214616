package hub

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// TestIsCommitConflict: a commit that lost the race with another hub is re-planned,
// whether the catalog said so with table.ErrCommitFailed (its compare-and-swap) or with
// the requirement check's own error, which iceberg-go does not wrap. Before this, the
// second kind went the slow way (error log, backoff) instead of an immediate re-plan.
func TestIsCommitConflict(t *testing.T) {
	meta, err := table.NewMetadata(iceberg.NewSchema(0, iceberg.NestedField{ID: 1, Name: "id", Type: iceberg.PrimitiveTypes.Int64}),
		iceberg.UnpartitionedSpec, table.UnsortedSortOrder, "file:///tmp/t", nil)
	if err != nil {
		t.Fatal(err)
	}
	id := int64(42)
	// What the SQL catalog's CommitTable returns when the branch moved since the
	// table was loaded: the requirement is validated against the current metadata.
	reqErr := table.AssertRefSnapshotID(table.MainBranch, &id).Validate(meta)
	if reqErr == nil {
		t.Fatal("the requirement held against metadata without the snapshot")
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"compare-and-swap lost", fmt.Errorf("committing: %w", table.ErrCommitFailed), true},
		{"requirement failed", fmt.Errorf("committing append: %w", reqErr), true},
		{"storage down", errors.New("writing data file: connection refused"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isCommitConflict(tt.err); got != tt.want {
				t.Errorf("isCommitConflict(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestRecoveryWaitsCapped: after a broker restart or a catalog or object store outage,
// the hub is back within seconds, not after a backoff grown to half a minute.
func TestRecoveryWaitsCapped(t *testing.T) {
	in := &Ingester{cfg: Config{Broker: "tcp://127.0.0.1:1883", ClientID: "hub-test"}}
	if got := in.clientOptions().MaxReconnectInterval; got <= 0 || got > 5*time.Second {
		t.Errorf("broker reconnect backoff capped at %s, want at most 5s", got)
	}
	if maxBackoff > 5*time.Second {
		t.Errorf("commit retry backoff capped at %s, want at most 5s", maxBackoff)
	}
}
