package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/engine"
	"github.com/medlake/medlake/query/internal/testlake"
	"github.com/medlake/medlake/query/results"
)

type fixture struct {
	srv     *httptest.Server
	handler *Handler
	cat     *catalog.Catalog // holds the audit log
}

const labRows = 1000

func newFixture(t *testing.T) fixture { return newFixtureTrusting(t, false) }

func newFixtureTrusting(t *testing.T, trust bool) fixture {
	t.Helper()
	cat := testlake.QueryLake(t, labRows)
	e, err := engine.New(context.Background(), engine.Config{CacheDir: filepath.Join(t.TempDir(), "cache")}, cat, testlake.Namespace, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	store := testlake.Logins(t)
	meta, err := catalog.Open(t.Context(), catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	h, err := New(Config{BatchRows: 100, TrustLoopback: trust}, store, e, meta, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return fixture{srv: srv, handler: h, cat: meta}
}

func (f fixture) post(t *testing.T, user, password, contentType, body, query string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+query, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const statement = `SELECT lab_id, facility, result_value, collected_at FROM lab_results WHERE lab_id <= $1 ORDER BY lab_id`

func TestFormats(t *testing.T) {
	f := newFixture(t)
	body := func(format string) string {
		return fmt.Sprintf(`{"sql": %q, "params": [250], "format": %q}`, statement, format)
	}

	t.Run("json", func(t *testing.T) {
		resp := f.post(t, "ana", testlake.Password, "application/json", body("json"), "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, type %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), readAll(t, resp.Body))
		}
		var got struct {
			Columns []struct{ Name, Type string } `json:"columns"`
			Rows    []map[string]any              `json:"rows"`
			Count   int                           `json:"row_count"`
		}
		if err := json.Unmarshal(readAll(t, resp.Body), &got); err != nil {
			t.Fatal(err)
		}
		if got.Count != 250 || len(got.Rows) != 250 || len(got.Columns) != 4 || got.Columns[0].Name != "lab_id" {
			t.Fatalf("count %d, rows %d, columns %v", got.Count, len(got.Rows), got.Columns)
		}
		id, fac, _, _, _, _, at := testlake.LabRow(99)
		row := got.Rows[99]
		if row["lab_id"] != float64(id) || row["facility"] != fac || !strings.HasPrefix(row["collected_at"].(string), at.Format("2006-01-02T15:04:05")) {
			t.Errorf("row 99 = %v, want lab_id %d, facility %s, collected_at %s", row, id, fac, at)
		}
		if got.Rows[0]["result_value"] != nil {
			t.Errorf("row 0 result_value = %v, want null", got.Rows[0]["result_value"])
		}
		if resp.Trailer.Get(errorTrailer) != "" {
			t.Errorf("error trailer %q on success", resp.Trailer.Get(errorTrailer))
		}
	})

	t.Run("ndjson", func(t *testing.T) {
		resp := f.post(t, "ana", testlake.Password, "application/json", body("ndjson"), "")
		lines := strings.Split(strings.TrimSpace(string(readAll(t, resp.Body))), "\n")
		if resp.StatusCode != 200 || len(lines) != 250 || !strings.HasPrefix(lines[249], `{"collected_at"`) && !strings.Contains(lines[249], `"lab_id":250`) {
			t.Fatalf("status %d, %d lines, last %q", resp.StatusCode, len(lines), lines[len(lines)-1])
		}
	})

	t.Run("csv", func(t *testing.T) {
		resp := f.post(t, "ana", testlake.Password, "application/json", body("csv"), "")
		recs, err := csv.NewReader(resp.Body).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 251 || strings.Join(recs[0], ",") != "lab_id,facility,result_value,collected_at" {
			t.Fatalf("%d records, header %v", len(recs), recs[0])
		}
		if recs[1][2] != "" || recs[2][0] != "2" || recs[2][1] != testlake.Facilities[1] || recs[2][2] != "0.5" {
			t.Errorf("rows 1-2 = %v %v", recs[1], recs[2])
		}
	})

	t.Run("csv of types arrow's writer lacks", func(t *testing.T) {
		resp := f.post(t, "ana", testlake.Password, "", `SELECT TIME '01:02:03.5' AS t, INTERVAL '1 day' AS d, CAST(NULL AS TIME) AS n`, "?format=csv")
		if got := string(readAll(t, resp.Body)); got != "t,d,n\n01:02:03.500000,\"{\"\"months\"\":0,\"\"days\"\":1,\"\"nanoseconds\"\":0}\",\n" {
			t.Errorf("status %d, body %q", resp.StatusCode, got)
		}
	})

	t.Run("arrow", func(t *testing.T) {
		resp := f.post(t, "ana", testlake.Password, "application/json", body("arrow"), "")
		r, err := ipc.NewReader(resp.Body, ipc.WithAllocator(memory.DefaultAllocator))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		var n int64
		batches := 0
		for r.Next() {
			n += r.RecordBatch().NumRows()
			batches++
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if n != 250 || batches != 3 || r.Schema().Field(3).Type.String() != "timestamp[us, tz=UTC]" {
			t.Errorf("%d rows in %d batches, schema %s", n, batches, r.Schema())
		}
	})

	t.Run("parquet", func(t *testing.T) {
		resp := f.post(t, "ana", testlake.Password, "application/json", body("parquet"), "")
		path := filepath.Join(t.TempDir(), "out.parquet")
		if err := os.WriteFile(path, readAll(t, resp.Body), 0o600); err != nil {
			t.Fatal(err)
		}
		// An independent reader: a separate DuckDB reads the file back.
		db, err := sql.Open("duckdb", "")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n, sum int64
		var fac string
		if err := db.QueryRow(`SELECT count(*), sum(lab_id), max(facility) FROM read_parquet(?)`, path).Scan(&n, &sum, &fac); err != nil {
			t.Fatal(err)
		}
		if n != 250 || sum != 250*251/2 || fac != "fac0003" {
			t.Errorf("parquet: count %d, sum %d, max facility %s", n, sum, fac)
		}
	})

	t.Run("accept header and text body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL, strings.NewReader("SELECT count(*) AS n FROM lab_results"))
		req.SetBasicAuth("ana", testlake.Password)
		req.Header.Set("Content-Type", "application/sql")
		req.Header.Set("Accept", "text/csv")
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if got := string(readAll(t, resp.Body)); got != fmt.Sprintf("n\n%d\n", labRows) {
			t.Errorf("body %q", got)
		}
	})
}

// A tenant's user sees only its tenant's rows, whatever the statement.
func TestTenantScope(t *testing.T) {
	f := newFixture(t)
	resp := f.post(t, "tina", testlake.Password, "", "SELECT id FROM visits ORDER BY id", "?format=csv")
	if got := string(readAll(t, resp.Body)); resp.StatusCode != 200 || got != "id\n1\n3\n" {
		t.Errorf("status %d, body %q: want only tenant t1's rows 1 and 3", resp.StatusCode, got)
	}
	resp = f.post(t, "tina", testlake.Password, "", "SELECT count(*) AS n FROM visits WHERE _tenant = 't2' OR true", "?format=csv")
	if got := string(readAll(t, resp.Body)); got != "n\n2\n" {
		t.Errorf("predicate escape: body %q", got)
	}
}

// Every statement is in the audit log with who, what and how it ended.
func TestAudit(t *testing.T) {
	f := newFixture(t)
	// Reading each whole body waits for its handler, and so its audit entry.
	readAll(t, f.post(t, "tina", testlake.Password, "", "SELECT id FROM visits", "?format=csv").Body)
	readAll(t, f.post(t, "tina", testlake.Password, "", "SELECT * FROM read_csv('/etc/passwd')", "").Body)
	entries, err := f.cat.AuditLog(t.Context(), catalog.AuditFilter{User: "tina"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]catalog.AuditEntry{}
	for _, e := range entries {
		got[e.Outcome] = e
	}
	ok, refused := got[catalog.AuditOK], got[catalog.AuditRefused]
	if len(entries) != 2 || ok.Rows != 2 || ok.Tenant != "t1" || ok.Protocol != "http" || strings.Join(ok.Tables, ",") != "visits" ||
		!strings.Contains(refused.Statement, "read_csv") || !strings.HasPrefix(ok.Client, "127.0.0.1:") {
		t.Errorf("audit log = %+v", entries)
	}
}

// With TrustLoopback, loopback clients without credentials or with an
// unknown name are admins; known users still prove their password.
func TestTrustLoopback(t *testing.T) {
	f := newFixtureTrusting(t, true)
	resp := f.post(t, "", "", "", "SELECT count(*) AS n FROM visits", "?format=csv")
	if got := string(readAll(t, resp.Body)); got != "n\n3\n" {
		t.Errorf("no credentials: %d %q", resp.StatusCode, got)
	}
	resp = f.post(t, "stranger", "", "", "SELECT count(*) AS n FROM visits", "?format=csv")
	if got := string(readAll(t, resp.Body)); got != "n\n3\n" {
		t.Errorf("unknown user: %d %q", resp.StatusCode, got)
	}
	if resp := f.post(t, "tina", "wrong", "", "SELECT 1", ""); resp.StatusCode != 401 {
		t.Errorf("known user, wrong password: %d", resp.StatusCode)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name        string
		user, pass  string
		contentType string
		body        string
		query       string
		status      int
		code        string
	}{
		{"no credentials", "", "", "", "SELECT 1", "", 401, "28P01"},
		{"wrong password", "ana", "wrong", "", "SELECT 1", "", 401, "28P01"},
		{"unknown user", "nobody", testlake.Password, "", "SELECT 1", "", 401, "28P01"},
		{"disabled login", "off", testlake.Password, "", "SELECT 1", "", 401, "28P01"},
		{"syntax", "ana", testlake.Password, "", "SELEC 1", "", 400, "42601"},
		{"unknown table", "ana", testlake.Password, "", "SELECT * FROM nope", "", 400, "42P01"},
		{"write refused", "ana", testlake.Password, "", "CREATE TABLE x (i INT)", "", 403, "25006"},
		{"empty", "ana", testlake.Password, "", "  ", "", 400, "08P01"},
		{"bad json", "ana", testlake.Password, "application/json", `{"sql": 1}`, "", 400, "08P01"},
		{"unknown json field", "ana", testlake.Password, "application/json", `{"sql": "SELECT 1", "x": 1}`, "", 400, "08P01"},
		{"param count", "ana", testlake.Password, "application/json", `{"sql": "SELECT $1::INT"}`, "", 400, "22023"},
		{"param not integer", "ana", testlake.Password, "application/json", `{"sql": "SELECT $1::INT", "params": [1.5]}`, "", 400, "22023"},
		{"unknown format", "ana", testlake.Password, "", "SELECT 1", "?format=xml", 406, "0A000"},
		{"tenant user reading files", "tina", testlake.Password, "", "SELECT * FROM read_parquet('/etc/passwd')", "", 403, "42501"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.post(t, tt.user, tt.pass, tt.contentType, tt.body, tt.query)
			var e apiError
			if err := json.Unmarshal(readAll(t, resp.Body), &e); err != nil {
				t.Fatalf("status %d, body not an error: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tt.status || e.Code != tt.code || e.Error == "" {
				t.Errorf("status %d code %s (%s), want %d %s", resp.StatusCode, e.Code, e.Error, tt.status, tt.code)
			}
			if tt.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	t.Run("GET", func(t *testing.T) {
		resp, err := f.srv.Client().Get(f.srv.URL + "?sql=SELECT+1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Errorf("status %d, want 405", resp.StatusCode)
		}
	})
}

// An error after rows went out cannot change the status: it arrives in the
// trailer, and the body is cut short.
func TestErrorWhileStreaming(t *testing.T) {
	f := newFixture(t)
	csvEnc, err := results.Lookup("csv")
	if err != nil {
		t.Fatal(err)
	}
	failing := results.Encoding{Name: "failing", ContentType: "text/csv", Open: func(w io.Writer, schema *arrow.Schema) (results.Writer, error) {
		inner, err := csvEnc.Open(w, schema)
		return &failAfter{Writer: inner, left: 2}, err
	}}
	f.handler.cfg.BatchRows = 10
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	outcome := f.handler.run(rec, req, auth.Principal{User: "ana", Admin: true},
		request{SQL: "SELECT i FROM range(100) t(i) ORDER BY i"}, failing)
	res := rec.Result()
	body := readAll(t, res.Body)
	if res.StatusCode != 200 || outcome != "error" {
		t.Fatalf("status %d, outcome %s", res.StatusCode, outcome)
	}
	if got := res.Trailer.Get(errorTrailer); !strings.Contains(got, "disk full") {
		t.Errorf("trailer %q, want the error", got)
	}
	if n := bytes.Count(body, []byte("\n")); n != 21 {
		t.Errorf("%d lines, want the header and two batches of 10", n)
	}
}

type failAfter struct {
	results.Writer
	left int
}

func (f *failAfter) Write(rec arrow.RecordBatch) error {
	if f.left == 0 {
		return errors.New("disk full")
	}
	f.left--
	return f.Writer.Write(rec)
}

// TestStreamsRows checks rows leave as DuckDB computes them: a query that
// fails at its 900,000th row has sent rows, with status 200, before the
// failure, which then ends the body with the error in the trailer. (A result
// computed whole before sending would fail with no row sent.)
func TestStreamsRows(t *testing.T) {
	f := newFixtureTrusting(t, true)
	resp := f.post(t, "", "", "", `SELECT CASE WHEN i < 900000 THEN i ELSE error('row 900000') END AS i FROM range(1000000) t(i)`, "?format=ndjson")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp.Body))
	}
	sc := bufio.NewScanner(resp.Body)
	n := 0
	for ; sc.Scan(); n++ {
		if want := fmt.Sprintf(`{"i":%d}`, n); n < 1000 && sc.Text() != want {
			t.Fatalf("row %d: %s, want %s", n, sc.Text(), want)
		}
	}
	if n < 1000 || n >= 900000 {
		t.Errorf("%d rows before the failure, want some of the first 900000", n)
	}
	if e := resp.Trailer.Get(errorTrailer); e == "" {
		t.Errorf("no %s trailer after the failure", errorTrailer)
	}
}
