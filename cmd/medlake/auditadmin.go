package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/medlake/medlake/catalog"
)

const auditUsage = `Usage: medlake audit [--user NAME] [--since 24h|2026-03-01T00:00:00Z] [--limit N]

Prints the audit log of the query role, newest first: every statement a SQL client sent,
with who sent it, from where, over which protocol, the lake tables it read, the rows it
returned, how it ended (ok, error, refused, or running when the node stopped first), how
long it took and the error. It reads the catalog directly, so only those who hold the
catalog's credentials (admins) can run it.
`

func runAudit(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		f     catalog.AuditFilter
		since string
		full  bool
	)
	cat, rest, err := openCatalogCmd(ctx, "audit", auditUsage, args, func(fs *flag.FlagSet) {
		fs.StringVar(&f.User, "user", "", "only this user's statements")
		fs.StringVar(&since, "since", "", "only statements started since this long ago (24h) or this time (RFC 3339)")
		fs.IntVar(&f.Limit, "limit", catalog.DefaultAuditLimit, "at most this many entries")
		fs.BoolVar(&full, "full", false, "print whole statements and errors instead of their first line")
	})
	if err != nil {
		return err
	}
	defer cat.Close()
	if len(rest) > 0 {
		return fmt.Errorf("audit: unexpected arguments %q (flags only)", strings.Join(rest, " "))
	}
	if since != "" {
		if f.Since, err = parseSince(since, time.Now()); err != nil {
			return err
		}
	}
	if f.Limit <= 0 {
		return fmt.Errorf("audit: --limit %d: want a positive count", f.Limit)
	}
	entries, err := cat.AuditLog(ctx, f)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tUSER\tTENANT\tCLIENT\tPROTOCOL\tOUTCOME\tROWS\tDURATION\tTABLES\tSTATEMENT\tERROR")
	for _, e := range entries {
		tenant := e.Tenant
		if tenant == "" {
			tenant = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n",
			e.StartedAt.Format("2006-01-02T15:04:05.000Z"), e.User, tenant, e.Client, e.Protocol, e.Outcome, e.Rows,
			e.Duration.Round(time.Microsecond), strings.Join(e.Tables, ","), oneLine(e.Statement, full), oneLine(e.Error, full))
	}
	return tw.Flush()
}

// parseSince reads a duration back from now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("audit: --since %s: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("audit: --since %q: want a duration (24h) or an RFC 3339 time", s)
	}
	return t, nil
}

// oneLine keeps a table row on one line: whitespace runs become one space and, unless
// full, the text is cut at 100 characters.
func oneLine(s string, full bool) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); !full && len(r) > 100 {
		s = string(r[:99]) + "…"
	}
	if s == "" {
		return "-"
	}
	return s
}
