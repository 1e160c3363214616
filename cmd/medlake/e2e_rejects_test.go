package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/protocol/feed"
)

// checkRejectsTable drops, into one facility's folder, an export of the first CSV feed
// with good rows and rows its definition refuses, and expects the refused rows in the
// medlake_rejects table, with their position and reason, and the good ones in the
// feed's table: nothing is lost and the rejects are queryable over pgwire.
func checkRejectsTable(ctx context.Context, t *testing.T, conn *pgx.Conn, m *gen.Manifest, genDir, watchRoot string) {
	t.Helper()
	var def *feed.Definition
	for _, f := range m.Feeds {
		if f.Pending || f.Format != gen.FormatCSV {
			continue
		}
		data, err := os.ReadFile(filepath.Join(genDir, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if def, err = feed.Parse(data); err != nil {
			t.Fatal(err)
		}
		break
	}
	if def == nil {
		t.Fatal("gen wrote no CSV feed")
	}
	// A column every bad row gets wrong: the first one that is not a string.
	badCol := -1
	for i, c := range def.Columns {
		if c.Type != feed.TypeString {
			badCol = i
			break
		}
	}
	if badCol < 0 {
		t.Fatalf("feed %s has only string columns; no value of them can be rejected", def.Name)
	}
	const good, bad = 2, 3
	now := time.Now().UTC()
	value := func(c feed.Column, row int) string {
		switch c.Type {
		case feed.TypeString:
			return fmt.Sprintf("REJECTS-%s-%d", c.Name, row)
		case feed.TypeInt:
			return "7"
		case feed.TypeBool:
			return "true"
		case feed.TypeDate, feed.TypeTimestamp:
			return now.Format(c.Layouts()[0])
		}
		return "1.5"
	}
	delim := string(def.Format.Comma())
	var b strings.Builder
	for i, c := range def.Columns {
		if i > 0 {
			b.WriteString(delim)
		}
		b.WriteString(c.SourceName())
	}
	b.WriteString("\n")
	for row := 1; row <= good+bad; row++ {
		for i, c := range def.Columns {
			if i > 0 {
				b.WriteString(delim)
			}
			if i == badCol && row > good {
				b.WriteString("not-a-" + c.Type)
				continue
			}
			b.WriteString(value(c, row))
		}
		b.WriteString("\n")
	}
	fac := m.Tenants[0].Facilities[0].ID
	name := strings.ReplaceAll(strings.TrimSuffix(def.Match.Glob, "*"), "*", fac+"_rejects") // matches the feed's glob
	if ok, _ := filepath.Match(def.Match.Glob, name); !ok {
		t.Fatalf("file name %q does not match glob %q", name, def.Match.Glob)
	}
	dst := filepath.Join(watchRoot, fac, name)
	writeFile(t, dst+".tmp", b.String())
	if err := os.Rename(dst+".tmp", dst); err != nil {
		t.Fatal(err)
	}

	var before int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+def.Table+" WHERE _facility = $1", fac).Scan(&before); err != nil {
		t.Fatal(err)
	}
	var rejected, accepted int64
	waitFor(ctx, t, fmt.Sprintf("%d rejected rows of %s in medlake_rejects", bad, name), func() bool {
		err := conn.QueryRow(ctx, "SELECT count(*) FROM medlake_rejects WHERE _facility = $1 AND source_file = $2", fac, name).Scan(&rejected)
		return err == nil && rejected >= bad
	})
	if rejected != bad {
		t.Errorf("medlake_rejects holds %d rows of %s, want %d", rejected, name, bad)
	}
	waitFor(ctx, t, "good rows of "+name, func() bool {
		err := conn.QueryRow(ctx, "SELECT count(*) FROM "+def.Table+" WHERE _facility = $1 AND _source_file = $2", fac, name).Scan(&accepted)
		return err == nil && accepted >= good
	})
	if accepted != good {
		t.Errorf("%s holds %d rows of %s, want %d", def.Table, accepted, name, good)
	}

	// Each rejected row names its feed, position, column and reason.
	rows, err := conn.Query(ctx, `SELECT feed, feed_version, source_row, source_line, source_column, reason, _feed, _tenant
		FROM medlake_rejects WHERE _facility = $1 AND source_file = $2 ORDER BY source_row`, fac, name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	wantRow := int64(good + 1)
	for rows.Next() {
		var feedName, column, reason, lineageFeed, tenant string
		var version, row, line int64
		if err := rows.Scan(&feedName, &version, &row, &line, &column, &reason, &lineageFeed, &tenant); err != nil {
			t.Fatal(err)
		}
		if feedName != def.Name || lineageFeed != def.Name || version != int64(def.Version) || row != wantRow || line != wantRow+1 ||
			column != def.Columns[badCol].Name || !strings.Contains(reason, "not-a-") || tenant != m.Tenants[0].ID {
			t.Errorf("reject row: feed %s (lineage %s) v%d row %d line %d column %q reason %q tenant %s; want %s v%d row %d line %d column %q",
				feedName, lineageFeed, version, row, line, column, reason, tenant, def.Name, def.Version, wantRow, wantRow+1, def.Columns[badCol].Name)
		}
		wantRow++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d rows in %s, %d rejected rows in medlake_rejects with position and reason", name, accepted, def.Table, rejected)
}
