package pgwire

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The catalog statements real clients send (captured from the server log
// of the client tests with -update) are kept in testdata/probes/<client>.sql
// and replayed here against what they must return (<client>.out), so a
// change to the emulation that breaks one shows without the client.

const probeSeparator = "\n-- next statement\n"

// captureProbes writes the catalog statements a client sent, from the
// server's debug log, when run with -update.
// The lab_results oid in them is written as <oid>.
func captureProbes(t *testing.T, client string, logs *logSink, oid string) {
	t.Helper()
	if !*update {
		return
	}
	var stmts []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Msg   string `json:"msg"`
			Query string `json:"query"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "pgwire statement" {
			continue
		}
		q := strings.TrimSpace(line.Query)
		if !looksLikeCatalogProbe(q) || seen[q] || strings.Contains(q, "$1") {
			continue
		}
		seen[q] = true
		stmts = append(stmts, strings.ReplaceAll(q, oid, "<oid>"))
	}
	if err := os.MkdirAll(filepath.Join("testdata", "probes"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "probes", client+".sql"), []byte(strings.Join(stmts, probeSeparator)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCatalogProbes replays every captured statement through the simple
// protocol and compares the text results with the golden file.
func TestCatalogProbes(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "probes", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured probes in testdata/probes (%v); run the client tests with -update", err)
	}
	host, port, oid, _ := clientServer(t)
	c := connect(t, "postgres://"+clientUser+":s3cret%20pw@"+host+":"+port+"/medlake?sslmode=disable", pgx.QueryExecModeSimpleProtocol)
	for _, f := range files {
		client := strings.TrimSuffix(filepath.Base(f), ".sql")
		t.Run(client, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			for i, q := range strings.Split(strings.TrimSpace(string(raw)), strings.TrimSpace(probeSeparator)) {
				q = strings.ReplaceAll(strings.TrimSpace(q), "<oid>", oid)
				rs, err := c.PgConn().Exec(context.Background(), q).ReadAll()
				out.WriteString("-- statement " + string(rune('0'+i/10)) + string(rune('0'+i%10)) + "\n")
				if err != nil {
					t.Errorf("statement %d failed: %v\n%s", i, err, q)
					continue
				}
				for _, r := range rs {
					var names []string
					for _, fd := range r.FieldDescriptions {
						names = append(names, fd.Name)
					}
					out.WriteString(strings.Join(names, "|") + "\n")
					for _, row := range r.Rows {
						vals := make([]string, len(row))
						for j, v := range row {
							if v == nil {
								vals[j] = "NULL"
							} else {
								vals[j] = string(v)
							}
						}
						out.WriteString(strings.Join(vals, "|") + "\n")
					}
					out.WriteString(r.CommandTag.String() + "\n")
				}
			}
			got := strings.ReplaceAll(out.String(), oid, "<oid>")
			golden(t, filepath.Join("probes", client+".out"), got)
		})
	}
}
