package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/reports"
)

// The report commands manage scheduled reports in the catalog named by the usual
// configuration (--catalog, MEDLAKE_CATALOG_URI, file). Query nodes run them.

const reportsUsage = `Usage: medlake reports <command> [flags] [NAME]

Flags come before the report name.

Commands:
  add --owner USER (-f FILE | --name N --cron C --sql S [--format F])
                          add or replace a report. It runs at each occurrence of its
                          cron schedule (UTC; five fields or @daily, @weekly, @every 1h)
                          on exactly one query node, as USER (so it reads only USER's
                          rows), and writes its result (csv, parquet, json, ndjson,
                          arrow; default csv) to the warehouse under
                          reports/NAME/<occurrence>.<ext>. FILE is YAML with name,
                          cron, format and sql; --examples lists the shipped ones.
  list                    every report with its latest run
  show NAME               a report's definition and its recent runs
  runs [--limit N] NAME   a report's runs, newest first: status, attempts, rows, where
  enable NAME | disable NAME
  delete NAME             remove the report (its runs and results stay)

A failed run is retried after a minute, three attempts in all; a node that dies in a
run is replaced once its lease lapses. Failures show here and in
medlake_reports_runs_total{outcome="failed"}.
`

func runReports(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, reportsUsage)
		return errors.New("reports: no command given")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, reportsUsage)
		return nil
	case "add":
		return runReportsAdd(ctx, args, stdout)
	case "list":
		cat, _, err := openCatalogCmd(ctx, "reports list", reportsUsage, args, nil)
		if err != nil {
			return err
		}
		defer cat.Close()
		return printReports(ctx, stdout, cat)
	case "show", "runs", "enable", "disable", "delete":
		limit := 20
		var bind func(*flag.FlagSet)
		if cmd == "runs" {
			bind = func(fs *flag.FlagSet) { fs.IntVar(&limit, "limit", limit, "runs to show") }
		}
		cat, rest, err := openCatalogCmd(ctx, "reports "+cmd, reportsUsage, args, bind)
		if err != nil {
			return err
		}
		defer cat.Close()
		if len(rest) != 1 {
			return fmt.Errorf("reports %s: need one report name (flags come before it)", cmd)
		}
		name := rest[0]
		switch cmd {
		case "show":
			r, err := cat.Report(ctx, name)
			if err != nil {
				return err
			}
			state := "enabled"
			if !r.Enabled {
				state = "disabled"
			}
			fmt.Fprintf(stdout, "name:    %s\ncron:    %s\nformat:  %s\nowner:   %s\nstate:   %s\nupdated: %s\nsql:\n%s\n\n",
				r.Name, r.Cron, r.Format, r.Owner, state, r.Updated.Format(time.RFC3339), indent(r.SQL))
			return printRuns(ctx, stdout, cat, name, 5)
		case "runs":
			return printRuns(ctx, stdout, cat, name, limit)
		case "delete":
			if err := cat.DeleteReport(ctx, name); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "report %s deleted\n", name)
			return nil
		default:
			if err := cat.SetReportEnabled(ctx, name, cmd == "enable"); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "report %s %sd\n", name, cmd)
			return nil
		}
	}
	fmt.Fprint(os.Stderr, reportsUsage)
	return fmt.Errorf("reports: unknown command %q", cmd)
}

func runReportsAdd(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		def              reports.Definition
		file, owner      string
		disabled, listEx bool
	)
	def.Format = "csv"
	cat, rest, err := openCatalogCmd(ctx, "reports add", reportsUsage, args, func(fs *flag.FlagSet) {
		fs.StringVar(&file, "f", "", "report definition file (YAML: name, cron, format, sql)")
		fs.StringVar(&def.Name, "name", "", "report name (lower case, digits, _)")
		fs.StringVar(&def.Cron, "cron", "", "schedule, UTC: five cron fields or @daily, @weekly, @every 1h")
		fs.StringVar(&def.SQL, "sql", "", "the SELECT statement")
		fs.StringVar(&def.Format, "format", def.Format, "result format: csv, parquet, json, ndjson, arrow")
		fs.StringVar(&owner, "owner", "", "the user the report runs as (required)")
		fs.BoolVar(&disabled, "disabled", false, "add it paused")
		fs.BoolVar(&listEx, "examples", false, "print the shipped example definitions and exit")
	})
	if err != nil {
		return err
	}
	defer cat.Close()
	if listEx {
		ex, err := reports.Examples()
		if err != nil {
			return err
		}
		for _, d := range ex {
			fmt.Fprintf(stdout, "name: %s\ncron: %q\nformat: %s\nsql: |\n%s\n---\n", d.Name, d.Cron, d.Format, indent(d.SQL))
		}
		return nil
	}
	if len(rest) > 0 {
		return fmt.Errorf("reports add: unexpected arguments %s (use --name, or -f FILE)", strings.Join(rest, " "))
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if def, err = reports.ParseDefinition(data); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	} else if err := def.Check(); err != nil {
		return err
	}
	if owner == "" {
		return errors.New("reports add: --owner is required: a report reads what its owner may read")
	}
	if _, err := cat.User(ctx, owner); err != nil {
		return fmt.Errorf("reports add: owner: %w", err)
	}
	r := catalog.Report{Name: def.Name, Cron: def.Cron, SQL: def.SQL, Format: def.Format, Owner: owner, Enabled: !disabled}
	if err := cat.PutReport(ctx, r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report %s saved: %s as %s, %s\n", r.Name, r.Cron, r.Owner, r.Format)
	return nil
}

func printReports(ctx context.Context, w io.Writer, cat *catalog.Catalog) error {
	all, err := cat.Reports(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REPORT\tCRON\tFORMAT\tOWNER\tSTATE\tLAST RUN\tSTATUS")
	for _, r := range all {
		state := "enabled"
		if !r.Enabled {
			state = "disabled"
		}
		last, status := "-", "-"
		runs, err := cat.ReportRuns(ctx, r.Name, 1)
		if err != nil {
			return err
		}
		if len(runs) > 0 {
			last, status = runs[0].ScheduledFor.Format(time.RFC3339), runs[0].Status
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Cron, r.Format, r.Owner, state, last, status)
	}
	return tw.Flush()
}

func printRuns(ctx context.Context, w io.Writer, cat *catalog.Catalog, name string, limit int) error {
	runs, err := cat.ReportRuns(ctx, name, limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OCCURRENCE\tSTATUS\tATTEMPT\tNODE\tROWS\tTOOK\tRESULT")
	for _, r := range runs {
		took, result := "-", r.Location
		if !r.FinishedAt.IsZero() {
			took = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
		}
		if r.Status == catalog.RunFailed {
			result = r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", r.ScheduledFor.Format(time.RFC3339), r.Status, r.Attempt, r.Node, r.Rows, took, oneLine(result, false))
	}
	return tw.Flush()
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
