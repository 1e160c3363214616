package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

const sqlUsage = `Usage: medlake sql [flags] "SELECT ..."

Runs one SQL statement on a medlake query node over the PostgreSQL wire protocol (the
same way psql, BI tools and drivers connect) and prints the result.
`

func runSQL(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		dsn, format string
		timeout     time.Duration
	)
	cfg, rest, err := loadConfig("sql", sqlUsage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&dsn, "dsn", "", "connection string; default postgres://medlake@<query.listen>/medlake")
		fs.StringVar(&cfg.Query.Listen, "pg-listen", cfg.Query.Listen, "query node's PostgreSQL wire address")
		fs.StringVar(&format, "format", "table", "output: table or csv")
		fs.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	})
	if err != nil {
		return err
	}
	stmt := strings.TrimSpace(strings.Join(rest, " "))
	if stmt == "" {
		return fmt.Errorf("no SQL statement given")
	}
	if dsn == "" {
		dsn = "postgres://medlake@" + cfg.Query.Listen + "/medlake?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", cfg.Query.Listen, err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, stmt, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return err
	}
	defer rows.Close()
	var header []string
	for _, f := range rows.FieldDescriptions() {
		header = append(header, f.Name)
	}
	var table [][]string
	for rows.Next() {
		raw := rows.RawValues()
		rec := make([]string, len(raw))
		for i, v := range raw {
			if v == nil {
				rec[i] = "NULL"
			} else {
				rec[i] = string(v)
			}
		}
		table = append(table, rec)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return printRows(stdout, format, header, table)
}

// printRows writes rows as an aligned table (with a row count, like psql) or as CSV.
func printRows(w io.Writer, format string, header []string, rows [][]string) error {
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(header)
		_ = cw.WriteAll(rows)
		return cw.Error()
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintln(tw, " "+strings.Join(header, "\t| "))
		seps := make([]string, len(header))
		for i, h := range header {
			seps[i] = strings.Repeat("-", max(len(h), 3))
		}
		fmt.Fprintln(tw, "-"+strings.Join(seps, "\t+-"))
		for _, r := range rows {
			fmt.Fprintln(tw, " "+strings.Join(r, "\t| "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		noun := "rows"
		if len(rows) == 1 {
			noun = "row"
		}
		_, err := fmt.Fprintf(w, "(%d %s)\n", len(rows), noun)
		return err
	}
	return fmt.Errorf("--format %q: want table or csv", format)
}
