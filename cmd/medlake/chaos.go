package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/medlake/medlake/cmd/medlake/internal/chaos"
)

const chaosUsage = `Usage: medlake chaos [flags]

Runs the fault-injection harness from a checkout of the medlake module (it builds
medlake and medlake-agent with go build, and starts servers through deploy/local): real
mosquitto, a 4-node MinIO behind a loopback balancer, PostgreSQL, two or more ingest
hubs, a query node and one agent per facility. While a generated workload is dropped
into the agents' folders it kills and restarts agents and hubs (SIGKILL), restarts the
broker and PostgreSQL, takes one MinIO node down and back, and pauses agents and hubs
(SIGSTOP, SIGCONT), at seeded random points. Then it checks that every generated record
is in the lake exactly once (count, key checksum and whole-row checksum per table,
through the query node) and that every agent's spool is empty, and prints a report.
Needs root (each MinIO node runs under unshare -m), PostgreSQL 15, mosquitto and the
MinIO binary deploy/local builds. Exits non-zero when anything was lost, duplicated or
left behind.
`

func runChaos(ctx context.Context, args []string, stdout io.Writer) error {
	cfg := chaos.ShortConfig(1)
	fs := flag.NewFlagSet("medlake chaos", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), chaosUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed: the workload, the drop order and the fault schedule")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "fault phase: faults and file drops are spread over it")
	fs.IntVar(&cfg.FaultsPerKind, "faults-per-kind", cfg.FaultsPerKind, "faults of each kind (0: a steady run with no faults, to measure freshness)")
	kinds := fs.String("kinds", "", "comma-separated fault kinds to inject (default all: agent-kill, hub-kill, broker-restart, minio-node-down, postgres-restart, pause)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "archives dropped per second over all facilities (sets --files-per-facility from --duration)")
	fs.IntVar(&cfg.Facilities, "facilities", cfg.Facilities, "facilities to generate")
	fs.IntVar(&cfg.FilesPerFacility, "files-per-facility", cfg.FilesPerFacility, "archives per facility")
	fs.Int64Var(&cfg.MaxBytes, "max-bytes", cfg.MaxBytes, "largest compressed archive size")
	fs.IntVar(&cfg.Days, "days", 0, "days the records' event times span (0: the generator's default, 30); tables are partitioned by day")
	fs.IntVar(&cfg.Hubs, "hubs", cfg.Hubs, "ingest hub processes sharing the subscription (at least 2)")
	fs.IntVar(&cfg.Agents, "agents", 0, "agent processes, one per facility (0: one per facility)")
	fs.DurationVar(&cfg.AckTimeout, "ack-timeout", cfg.AckTimeout, "agents' ack_timeout")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long to wait after the fault phase for every record and spool")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "keep binaries, data and logs here (default: a temporary directory, removed after a passing run)")
	fs.StringVar(&cfg.BinDir, "bin-dir", "", "use medlake and medlake-agent from this directory instead of building them")
	verbose := fs.Bool("v", false, "log the harness' own events to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kinds != "" {
		for _, k := range strings.Split(*kinds, ",") {
			cfg.Kinds = append(cfg.Kinds, chaos.Kind(strings.TrimSpace(k)))
		}
	}
	cfg.Progress = os.Stderr
	cfg.Logger = slog.New(slog.DiscardHandler)
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "chaos")
	}
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Write(stdout)
	if !rep.OK() {
		return errors.New("chaos run failed: see the report")
	}
	return nil
}
