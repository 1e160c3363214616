package pgwire

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestCursorsSimpleProtocol declares, fetches from and closes cursors the
// way psql and hand-written SQL do, checking tags and rows.
func TestCursorsSimpleProtocol(t *testing.T) {
	addr, _ := startServer(t, Config{})
	ctx := context.Background()
	c := connect(t, dsn(addr, "analyst", ""), pgx.QueryExecModeSimpleProtocol)
	type result struct {
		tag  string
		rows []string // first column of each row
	}
	run := func(sql string) ([]result, error) {
		rs, err := c.PgConn().Exec(ctx, sql).ReadAll()
		var out []result
		for _, r := range rs {
			res := result{tag: r.CommandTag.String()}
			for _, row := range r.Rows {
				res.rows = append(res.rows, string(row[0]))
			}
			out = append(out, res)
		}
		return out, err
	}
	got, err := run(`BEGIN; DECLARE cur NO SCROLL CURSOR FOR SELECT lab_id FROM lab_results WHERE lab_id <= 5 ORDER BY lab_id; ` +
		`FETCH FORWARD 2 FROM cur; FETCH NEXT FROM cur; MOVE 1 IN cur; FETCH ALL FROM cur; FETCH 3 FROM cur; CLOSE cur; COMMIT`)
	if err != nil {
		t.Fatal(err)
	}
	want := []result{{"BEGIN", nil}, {"DECLARE CURSOR", nil}, {"FETCH 2", []string{"1", "2"}}, {"FETCH 1", []string{"3"}},
		{"MOVE 1", nil}, {"FETCH 1", []string{"5"}}, {"FETCH 0", nil}, {"CLOSE CURSOR", nil}, {"COMMIT", nil}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cursor session:\n got %v\nwant %v", got, want)
	}
	for _, tc := range []struct{ sql, code string }{
		{`FETCH 1 FROM cur`, "34000"},
		{`CLOSE nope`, "34000"},
		{`DECLARE s SCROLL CURSOR FOR SELECT 1`, "0A000"},
		{`FETCH BACKWARD 1 FROM cur`, "0A000"},
	} {
		if _, err := run(tc.sql); err == nil || !strings.Contains(err.Error(), tc.code) {
			t.Errorf("%s: err = %v, want SQLSTATE %s", tc.sql, err, tc.code)
		}
	}
	// A cursor without HOLD ends with the transaction; one WITH HOLD stays.
	if _, err := run(`DECLARE a CURSOR FOR SELECT 1; DECLARE "B" CURSOR WITH HOLD FOR SELECT 2; COMMIT`); err != nil {
		t.Fatal(err)
	}
	if _, err := run(`FETCH a`); err == nil {
		t.Error("cursor a survived COMMIT")
	}
	if got, err := run(`FETCH ALL "B"`); err != nil || len(got) != 1 || fmt.Sprint(got[0].rows) != "[2]" {
		t.Errorf("FETCH ALL \"B\" = %v, %v", got, err)
	}
}

// TestPsqlFetchCount runs psql with FETCH_COUNT, which reads results through
// a cursor, and checks it prints what a plain query prints.
func TestPsqlFetchCount(t *testing.T) {
	requireClient(t, "psql", "postgresql-client-15")
	addr, _ := startServer(t, Config{})
	host, port, _ := strings.Cut(addr, ":")
	q := `SELECT lab_id, facility, result_value, collected_at FROM lab_results WHERE lab_id <= 25 ORDER BY lab_id`
	out := func(extra ...string) string {
		args := append([]string{"-X", "-A", "-h", host, "-p", port, "-U", "analyst", "-d", "medlake"}, extra...)
		cmd := exec.Command("psql", append(args, "-c", q)...)
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql %v: %v\n%s", extra, err, b)
		}
		return string(b)
	}
	plain, paged := out(), out("-v", "FETCH_COUNT=7")
	if plain != paged || !strings.Contains(plain, "(25 rows)") {
		t.Errorf("FETCH_COUNT output differs or is short:\n%s\n---\n%s", paged, plain)
	}
}

// TestPortalRowLimit sends Execute with a row limit by hand and checks the
// rows arrive in pieces, each piece but the last ending in PortalSuspended.
func TestPortalRowLimit(t *testing.T) {
	addr, _ := startServer(t, Config{})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fe := pgproto3.NewFrontend(nc, nc)
	recvUntil := func(stop func(pgproto3.BackendMessage) bool) []pgproto3.BackendMessage {
		t.Helper()
		var msgs []pgproto3.BackendMessage
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("server error: %s %s", e.Code, e.Message)
			}
			msgs = append(msgs, copyMsg(m))
			if stop(m) {
				return msgs
			}
		}
	}
	isReady := func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.ReadyForQuery); return ok }
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "analyst", "database": "medlake"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	recvUntil(isReady)
	fe.Send(&pgproto3.Parse{Name: "s", Query: `SELECT lab_id FROM lab_results WHERE lab_id <= $1 ORDER BY lab_id`, ParameterOIDs: []uint32{OIDInt8}})
	fe.Send(&pgproto3.Bind{PreparedStatement: "s", DestinationPortal: "p", Parameters: [][]byte{[]byte("5")}})
	fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var trace []string
	for _, m := range recvUntil(isReady) {
		switch m := m.(type) {
		case *pgproto3.DataRow:
			trace = append(trace, string(m.Values[0]))
		case *pgproto3.PortalSuspended:
			trace = append(trace, "suspended")
		case *pgproto3.CommandComplete:
			trace = append(trace, string(m.CommandTag))
		}
	}
	if got, want := strings.Join(trace, ","), "1,2,suspended,3,4,suspended,5,SELECT 5"; got != want {
		t.Errorf("messages %s, want %s", got, want)
	}
}

// copyMsg keeps the parts of a message the tests read (pgproto3 reuses
// message buffers between Receive calls).
func copyMsg(m pgproto3.BackendMessage) pgproto3.BackendMessage {
	switch m := m.(type) {
	case *pgproto3.DataRow:
		vals := make([][]byte, len(m.Values))
		for i, v := range m.Values {
			vals[i] = append([]byte(nil), v...)
		}
		return &pgproto3.DataRow{Values: vals}
	case *pgproto3.CommandComplete:
		return &pgproto3.CommandComplete{CommandTag: append([]byte(nil), m.CommandTag...)}
	case *pgproto3.PortalSuspended:
		return &pgproto3.PortalSuspended{}
	}
	return m
}
