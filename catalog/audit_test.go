package catalog

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// testAudit checks the audit log on any catalog database.
func testAudit(t *testing.T, c *Catalog) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	entries := []AuditEntry{
		{StartedAt: t0, User: "alice", Tenant: "acme", Client: "10.0.0.1:5000", Protocol: "pgwire", Statement: "SELECT * FROM encounters", Tables: []string{"encounters"}},
		{StartedAt: t0.Add(time.Minute), User: "bob", Tenant: "acme", Client: "10.0.0.2:5000", Protocol: "pgwire", Statement: "SELECT * FROM read_parquet('x')"},
		{StartedAt: t0.Add(2 * time.Minute), User: "alice", Tenant: "acme", Client: "10.0.0.1:5001", Protocol: "pgwire", Statement: "SELECT 'it''s', 'é'", Tables: []string{"encounters", "labs"}},
		{StartedAt: t0.Add(3 * time.Minute), User: "root", Client: "[::1]:6000", Protocol: "pgwire", Statement: strings.Repeat("x", maxAuditStatement+10)},
	}
	results := []AuditResult{
		{Outcome: AuditOK, Rows: 3, Duration: 1500 * time.Microsecond},
		{Outcome: AuditRefused, Error: "permission denied: table function read_parquet reads files or engine metadata"},
		{}, // never finished
		{Outcome: AuditError, Error: "boom", Duration: time.Second},
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		id, err := c.BeginAudit(ctx, e)
		if err != nil {
			t.Fatalf("BeginAudit %d: %v", i, err)
		}
		ids[i] = id
		if results[i].Outcome != "" {
			if err := c.FinishAudit(ctx, id, results[i]); err != nil {
				t.Fatalf("FinishAudit %d: %v", i, err)
			}
		}
	}
	if err := c.FinishAudit(ctx, "nope", AuditResult{Outcome: AuditOK}); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishAudit(nope) = %v, want ErrNotFound", err)
	}

	all, err := c.AuditLog(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("AuditLog = %d entries, want 4", len(all))
	}
	for i, got := range all {
		j := len(entries) - 1 - i // newest first
		want := entries[j]
		wantResult := results[j]
		if wantResult.Outcome == "" {
			wantResult.Outcome = AuditRunning
		}
		if got.ID != ids[j] || !got.StartedAt.Equal(want.StartedAt) || got.User != want.User || got.Tenant != want.Tenant ||
			got.Client != want.Client || got.Protocol != want.Protocol || !slices.Equal(got.Tables, want.Tables) || got.AuditResult != wantResult {
			t.Errorf("entry %d = %+v\nwant %+v %+v", j, got, want, wantResult)
		}
		if j != 3 && got.Statement != want.Statement {
			t.Errorf("entry %d statement = %q, want %q", j, got.Statement, want.Statement)
		}
	}
	if s := all[0].Statement; len(s) > maxAuditStatement+20 || !strings.HasSuffix(s, "(truncated)") {
		t.Errorf("long statement kept as %d bytes ending %q", len(s), s[len(s)-15:])
	}

	filters := []struct {
		f    AuditFilter
		want []string // users, newest first
	}{
		{AuditFilter{User: "alice"}, []string{"alice", "alice"}},
		{AuditFilter{Since: t0.Add(90 * time.Second)}, []string{"root", "alice"}},
		{AuditFilter{User: "alice", Since: t0.Add(time.Second)}, []string{"alice"}},
		{AuditFilter{Limit: 1}, []string{"root"}},
		{AuditFilter{User: "nobody"}, nil},
	}
	for _, tt := range filters {
		got, err := c.AuditLog(ctx, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		var users []string
		for _, e := range got {
			users = append(users, e.User)
		}
		if !slices.Equal(users, tt.want) {
			t.Errorf("AuditLog(%+v) users = %v, want %v", tt.f, users, tt.want)
		}
	}
}

func TestAuditSQLite(t *testing.T) {
	c, err := Open(context.Background(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testAudit(t, c)
}
