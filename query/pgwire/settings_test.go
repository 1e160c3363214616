package pgwire

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSettings sets what drivers set at connect time and reads it back with
// SHOW and current_setting; fixed settings keep the engine's value.
func TestSettings(t *testing.T) {
	addr, _ := startServer(t, Config{})
	ctx := context.Background()
	c := connect(t, dsn(addr, "analyst", "")+"&application_name=startup-app", pgx.QueryExecModeSimpleProtocol)
	show := func(name string) (string, string) {
		t.Helper()
		var shown, cur string
		if err := c.QueryRow(ctx, "SHOW "+name).Scan(&shown); err != nil {
			t.Fatalf("SHOW %s: %v", name, err)
		}
		if err := c.QueryRow(ctx, "SELECT current_setting('"+name+"')").Scan(&cur); err != nil {
			t.Fatalf("current_setting(%s): %v", name, err)
		}
		return shown, cur
	}
	if s, cs := show("application_name"); s != "startup-app" || cs != "startup-app" {
		t.Errorf("application_name from startup = %q, %q", s, cs)
	}
	for _, tc := range []struct{ set, name, want string }{
		{`SET application_name = 'Power BI'`, "application_name", "Power BI"},
		{`SET extra_float_digits = 3`, "extra_float_digits", "3"},
		{`SET search_path TO "$user", public`, "search_path", `"$user", public`},
		{`SET SESSION statement_timeout TO '30s'`, "statement_timeout", "30s"},
		{`SET myapp.region = 'north'`, "myapp.region", "north"},
		{`SET TimeZone = 'America/New_York'`, "TimeZone", "UTC"},
		{`SET DateStyle = 'SQL, DMY'`, "DateStyle", "ISO, MDY"},
		{`SET client_encoding = 'UTF8'`, "client_encoding", "UTF8"},
		{`SET standard_conforming_strings = on`, "standard_conforming_strings", "on"},
		{`SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE`, "transaction_isolation", "read committed"},
		{`SET extra_float_digits TO DEFAULT`, "extra_float_digits", "1"},
	} {
		if _, err := c.Exec(ctx, tc.set); err != nil {
			t.Errorf("%s: %v", tc.set, err)
			continue
		}
		if s, cs := show(tc.name); s != tc.want || cs != tc.want {
			t.Errorf("after %s: SHOW %s = %q, current_setting = %q, want %q", tc.set, tc.name, s, cs, tc.want)
		}
	}
	if _, err := c.Exec(ctx, `SET client_encoding = 'LATIN1'`); err == nil || !strings.Contains(err.Error(), "0A000") {
		t.Errorf("client_encoding LATIN1: %v, want 0A000", err)
	}
	var pid, backendPID uint32
	var keywords int
	if err := c.QueryRow(ctx, `SELECT pg_backend_pid(), (SELECT count(*) FROM pg_catalog.pg_get_keywords() WHERE catcode = 'R')`).
		Scan(&backendPID, &keywords); err != nil || keywords < 10 {
		t.Errorf("pg_backend_pid, keywords: %v, %d", err, keywords)
	}
	pid = c.PgConn().PID()
	if backendPID != pid {
		t.Errorf("pg_backend_pid() = %d, BackendKeyData said %d", backendPID, pid)
	}
	all, err := c.PgConn().Exec(ctx, `SHOW ALL`).ReadAll()
	if err != nil || len(all) != 1 || len(all[0].Rows) < 20 {
		t.Fatalf("SHOW ALL: %v, %v", all, err)
	}
	found := false
	for _, row := range all[0].Rows {
		if string(row[0]) == "myapp.region" && string(row[1]) == "north" {
			found = true
		}
	}
	if !found {
		t.Error("SHOW ALL lacks the session's myapp.region")
	}
	if _, err := c.Exec(ctx, `RESET ALL`); err != nil {
		t.Fatal(err)
	}
	if s, _ := show("application_name"); s != "startup-app" {
		t.Errorf("application_name after RESET ALL = %q", s)
	}
}

// TestStatementTimeout cancels a statement that runs past the session's
// statement_timeout with PostgreSQL's error, and leaves the session usable.
func TestStatementTimeout(t *testing.T) {
	addr, _ := startServer(t, Config{})
	ctx := context.Background()
	c := connect(t, dsn(addr, "analyst", ""), pgx.QueryExecModeCacheStatement)
	if _, err := c.Exec(ctx, `SET statement_timeout = '300ms'`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Exec(ctx, `SELECT count(*) FROM range(1000000000000) a, range(10) b`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" || pe.Message != "canceling statement due to statement timeout" {
		t.Fatalf("err = %v, want 57014 statement timeout", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("timed out after %s", el)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
		t.Errorf("after timeout: %d, %v", n, err)
	}
	for _, bad := range []string{`SET statement_timeout = 'soon'`, `SET statement_timeout = '5 fortnights'`} {
		if _, err := c.Exec(ctx, bad); !errors.As(err, &pe) || pe.Code != "22023" {
			t.Errorf("%s: %v, want 22023", bad, err)
		}
	}
	for in, want := range map[string]time.Duration{"0": 0, "1500": 1500 * time.Millisecond, "2s": 2 * time.Second, "1 min": time.Minute, "250ms": 250 * time.Millisecond} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}
