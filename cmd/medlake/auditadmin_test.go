package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/catalog"
)

func TestAuditCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, e := range []struct {
		user, stmt string
		at         time.Time
		res        catalog.AuditResult
	}{
		{"alice", "SELECT id\n  FROM encounters", now.Add(-2 * time.Hour), catalog.AuditResult{Outcome: catalog.AuditOK, Rows: 3, Duration: 2 * time.Millisecond}},
		{"alice", "SELECT * FROM read_parquet('x')", now.Add(-time.Minute), catalog.AuditResult{Outcome: catalog.AuditRefused, Error: "permission denied: table function read_parquet"}},
		{"root", "SELECT count(*) FROM labs", now.Add(-30 * time.Second), catalog.AuditResult{Outcome: catalog.AuditOK, Rows: 1}},
	} {
		id, err := cat.BeginAudit(ctx, catalog.AuditEntry{StartedAt: e.at, User: e.user, Tenant: "acme", Client: "127.0.0.1:1", Protocol: "pgwire", Statement: e.stmt, Tables: []string{"encounters"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := cat.FinishAudit(ctx, id, e.res); err != nil {
			t.Fatal(err)
		}
	}
	cat.Close()

	tests := []struct {
		args    []string
		want    []string // substrings, in order
		notWant []string
		err     string
	}{
		{[]string{"--user", "alice"}, []string{"STARTED", "refused", "read_parquet", "ok", "SELECT id FROM encounters"}, []string{"root"}, ""},
		{[]string{"--since", "1h"}, []string{"root", "alice"}, []string{"SELECT id FROM"}, ""},
		{[]string{"--limit", "1"}, []string{"root"}, []string{"alice"}, ""},
		{[]string{"--since", "yesterday"}, nil, nil, "--since"},
		{[]string{"--limit", "0"}, nil, nil, "--limit"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := run(ctx, append([]string{"audit", "--data-dir", dir}, tt.args...), &out)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("audit %v: error %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("audit %v: %v", tt.args, err)
		}
		s := out.String()
		pos := 0
		for _, w := range tt.want {
			i := strings.Index(s[pos:], w)
			if i < 0 {
				t.Errorf("audit %v: output lacks %q after byte %d:\n%s", tt.args, w, pos, s)
				break
			}
			pos += i + len(w)
		}
		for _, nw := range tt.notWant {
			if strings.Contains(s, nw) {
				t.Errorf("audit %v: output has %q:\n%s", tt.args, nw, s)
			}
		}
	}
}
