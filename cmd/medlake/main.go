// Command medlake runs the central side of medlake (ingest and query roles) and its
// admin tools: generating seed-shaped data, running a demo, querying from the shell.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	// Feed definitions name IANA timezones; validating them must not depend on the
	// host's zoneinfo files.
	_ "time/tzdata"
)

// Set at release time with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

const usage = `medlake streams medical facility exports into Iceberg lake tables and serves SQL over them.

Usage: medlake <command> [flags]

Commands:
  serve          run the central side (--roles=ingest,query,maintain; default all)
  demo           run everything in one process on embedded defaults, with generated data
  gen            generate seed-shaped facility exports, feed definitions and a manifest
  feeds          author feed definitions: test one over sample files with no server
  sql            run a SQL statement against a medlake query node and print the result
  users          manage query users: tenant, facility grants, password, admin role
  tenants        manage tenants (the customers whose rows users read)
  tables         show tables' files, snapshots and health; compact, expire or clean one now
  reports        schedule reports: SQL run on a cron schedule, results kept in the warehouse
  audit          print the query audit log: who ran which statement, from where, with what result
  replay         re-read a feed's archived source files with its newest definition
  status         print the fleet's backlog and the tables' commit lag and freshness
  bench          measure agent parse, hub commit and drop-to-queryable latency;
                 bench reports: report queries on medlake and PostgreSQL
  chaos          run the fault-injection harness: kill, restart and pause components, check exactly-once
  check-config   validate the configuration and print the effective values
  version        print the version

Configuration comes from defaults, then --config FILE (YAML), then MEDLAKE_* environment
variables (MEDLAKE_DATA_DIR, MEDLAKE_CATALOG_URI, MEDLAKE_QUERY_LISTEN, ...), then flags.
Run 'medlake <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "medlake:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest)
	case "demo":
		return runDemo(ctx, rest, stdout)
	case "gen":
		return runGen(ctx, rest, stdout)
	case "sql":
		return runSQL(ctx, rest, stdout)
	case "feeds":
		return runFeeds(ctx, rest, stdout)
	case "users":
		return runUsers(ctx, rest, stdout)
	case "tenants":
		return runTenants(ctx, rest, stdout)
	case "reports":
		return runReports(ctx, rest, stdout)
	case "tables":
		return runTables(ctx, rest, stdout)
	case "audit":
		return runAudit(ctx, rest, stdout)
	case "bench":
		return runBench(ctx, rest, stdout)
	case "replay":
		return runReplay(ctx, rest, stdout)
	case "status":
		return runStatus(ctx, rest, stdout)
	case "chaos":
		return runChaos(ctx, rest, stdout)
	case "check-config":
		return runCheckConfig(rest, stdout)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "medlake", version, commit, date)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

const checkConfigUsage = `Usage: medlake check-config [--config FILE] [flags]

Validates the configuration (file, MEDLAKE_* environment, flags) and prints the effective
values as YAML, secrets redacted. Exits non-zero when the configuration is invalid.
`

func runCheckConfig(args []string, stdout io.Writer) error {
	cfg, _, err := loadConfig("check-config", checkConfigUsage, args, bindServeFlags)
	if err != nil {
		return err
	}
	return printConfig(stdout, cfg)
}
