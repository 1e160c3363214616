package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/agent"
	"github.com/medlake/medlake/cmd/medlake/internal/gen"
)

const demoUsage = `Usage: medlake demo [flags]

Runs the whole system in one process on embedded defaults: the hub with its embedded MQTT
broker, a SQLite catalog and a local warehouse under --data-dir, the query role, and one
agent per demo facility watching a demo folder that the generator keeps filling. Prints
a psql line to connect with and a live row count per table. Ctrl-C stops it; the data
stays in --data-dir for the next run.
`

func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		facilities int
		every      time.Duration
		rounds     int
	)
	defaults := DefaultConfig()
	defaults.DataDir = "medlake-demo"
	defaults.Query.FlightListen = "127.0.0.1:5434"
	cfg, _, err := loadConfigOver(defaults, "demo", demoUsage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&cfg.Query.Listen, "pg-listen", cfg.Query.Listen, "PostgreSQL wire protocol address")
		fs.StringVar(&cfg.Query.FlightListen, "flight-listen", cfg.Query.FlightListen, "Arrow Flight SQL address (empty: off)")
		fs.StringVar(&cfg.Broker.Listen, "broker-listen", cfg.Broker.Listen, "embedded MQTT broker address")
		fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "address for /healthz, /readyz and /metrics")
		fs.IntVar(&facilities, "facilities", 3, "demo facilities (one agent each)")
		fs.DurationVar(&every, "every", 5*time.Second, "how often the generator drops a new round of exports")
		fs.IntVar(&rounds, "rounds", 0, "stop generating after this many rounds (0: keep going)")
	})
	if err != nil {
		return err
	}
	logger := newLogger(cfg)
	d := &demo{cfg: cfg, logger: logger, facilities: facilities, stdout: stdout}
	return d.run(ctx, every, rounds)
}

// demoQuietPeriod is how long a demo file must stay unchanged before an agent takes it;
// short, because the demo writes files by rename.
const demoQuietPeriod = 300 * time.Millisecond

// demo is one running demonstration: a node with every role, agents and a generator.
type demo struct {
	cfg        *Config
	logger     *slog.Logger
	facilities int
	stdout     io.Writer
}

func (d *demo) run(ctx context.Context, every time.Duration, rounds int) error {
	genDir := filepath.Join(d.cfg.DataDir, "generated")
	exportsDir := filepath.Join(d.cfg.DataDir, "exports")
	// The first round also provides the feed definitions the hub and agents share.
	first, err := d.generate(ctx, genDir, 1)
	if err != nil {
		return err
	}
	d.cfg.Ingest.FeedsDir = filepath.Join(first, "feeds")
	if d.cfg.Broker.Listen == "" || strings.HasSuffix(d.cfg.Broker.Listen, ":0") {
		return errors.New("demo needs a fixed broker address for its agents")
	}
	n, err := startNode(ctx, d.cfg, []string{RoleIngest, RoleQuery, RoleMaintain}, d.logger)
	if err != nil {
		return err
	}
	defer n.stop()

	m, err := gen.ReadManifest(filepath.Join(first, "manifest.json"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait, err := d.startAgents(ctx, m, exportsDir)
	if err != nil {
		return err
	}
	defer wait()

	host, port, _ := net.SplitHostPort(d.cfg.Query.Listen)
	fmt.Fprintf(d.stdout, "medlake demo is running; data in %s\n", d.cfg.DataDir)
	fmt.Fprintf(d.stdout, "  connect:  psql 'postgresql://medlake@%s:%s/medlake'\n", host, port)
	fmt.Fprintf(d.stdout, "  or:       go run ./cmd/medlake sql --pg-listen %s \"SELECT _facility, count(*) FROM lab_results GROUP BY 1\"\n", d.cfg.Query.Listen)
	fmt.Fprintf(d.stdout, "  http:     curl --data-binary 'SELECT count(*) FROM lab_results' 'http://%s/api/v1/query?format=csv'\n", d.cfg.HTTPListen)
	if d.cfg.Query.FlightListen != "" {
		fmt.Fprintf(d.stdout, "  arrow:    Flight SQL on grpc://%s (any user name, no password, from this machine)\n", d.cfg.Query.FlightListen)
	}
	fmt.Fprintf(d.stdout, "  exports:  %s (drop more files here)\n  metrics:  http://%s/metrics\n", exportsDir, d.cfg.HTTPListen)

	if err := d.deliver(first, exportsDir, 1); err != nil {
		return err
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	countTick := time.NewTicker(2 * time.Second)
	defer countTick.Stop()
	tables := slices.Sorted(maps.Keys(m.Tables))
	for round := 2; ; {
		select {
		case <-ctx.Done():
			fmt.Fprintln(d.stdout)
			return nil
		case <-n.group.failed:
			return n.group.err
		case <-countTick.C:
			d.printCounts(ctx, tables)
		case <-tick.C:
			if rounds > 0 && round > rounds {
				continue
			}
			dir, err := d.generate(ctx, genDir, round)
			if err != nil {
				return err
			}
			if err := d.deliver(dir, exportsDir, round); err != nil {
				return err
			}
			round++
		}
	}
}

// startAgents runs one agent per facility of m until ctx ends; wait waits for them.
func (d *demo) startAgents(ctx context.Context, m *gen.Manifest, exportsDir string) (wait func(), err error) {
	var agents []*agent.Agent
	for _, t := range m.Tenants {
		for _, f := range t.Facilities {
			a, err := d.newAgent(t.ID, f.ID, exportsDir)
			if err != nil {
				return nil, err
			}
			agents = append(agents, a)
		}
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil && ctx.Err() == nil {
				d.logger.Error("demo agent stopped", "err", err)
			}
		}()
	}
	return wg.Wait, nil
}

// generate writes one round of exports with its own seed.
func (d *demo) generate(ctx context.Context, genDir string, round int) (string, error) {
	dir := filepath.Join(genDir, fmt.Sprintf("round-%04d", round))
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err == nil {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	opts := gen.DefaultOptions()
	opts.Out = dir
	opts.Seed = int64(round)
	opts.Facilities = d.facilities
	opts.FilesPerFacility = 2
	opts.Formats = []string{gen.FormatCSV, gen.FormatTXT, gen.FormatXML, gen.FormatDAT}
	if _, err := gen.Run(ctx, opts, nil); err != nil {
		return "", fmt.Errorf("generating demo round %d: %w", round, err)
	}
	return dir, nil
}

// deliver copies a round's archives into the watched folders.
func (d *demo) deliver(roundDir, exportsDir string, round int) error {
	m, err := gen.ReadManifest(filepath.Join(roundDir, "manifest.json"))
	if err != nil {
		return err
	}
	for _, f := range m.Files {
		if f.Pending {
			continue
		}
		if err := d.deliverOne(roundDir, exportsDir, f, round); err != nil {
			return err
		}
	}
	return nil
}

// deliverOne copies one archive into its facility's watched folder the way an export
// job does: written under a temporary name, then renamed into place. The round prefix
// keeps rounds' files apart.
func (d *demo) deliverOne(roundDir, exportsDir string, f gen.File, round int) error {
	dst := filepath.Join(exportsDir, f.Facility, fmt.Sprintf("r%04d_%s", round, path.Base(f.Path)))
	if _, err := os.Stat(dst); err == nil {
		return nil // delivered by an earlier run
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(roundDir, filepath.FromSlash(f.Path)))
	if err != nil {
		return err
	}
	tmp := dst + ".part"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func (d *demo) newAgent(tenant, facility, exportsDir string) (*agent.Agent, error) {
	c := agent.DefaultConfig()
	c.ID = "demo-" + facility
	c.Tenant = tenant
	c.Facility = facility
	c.Broker = "tcp://" + d.cfg.Broker.Listen
	c.StateDir = filepath.Join(d.cfg.DataDir, "agents", facility)
	c.FeedsDir = d.cfg.Ingest.FeedsDir
	c.QuietPeriod = demoQuietPeriod
	c.RescanInterval = 5 * time.Second
	// One folder per facility: each generator round draws the facilities' tenants from
	// its own seed, but a facility keeps the agent (and tenant) it started with.
	dir := filepath.Join(exportsDir, facility)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c.Watch = []agent.WatchConfig{{Path: dir, Recursive: true, Done: agent.DoneKeep}}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return agent.New(c, d.logger)
}

// printCounts prints one line of live row counts, asked over the wire like any client.
func (d *demo) printCounts(ctx context.Context, tables []string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://medlake@"+d.cfg.Query.Listen+"/medlake?sslmode=disable")
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	var parts []string
	var total int64
	for _, t := range tables {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			if ctx.Err() != nil {
				return // shutting down: no line of misleading zeros
			}
			n = 0 // the table has no rows yet
		}
		total += n
		parts = append(parts, fmt.Sprintf("%s %d", t, n))
	}
	fmt.Fprintf(d.stdout, "\r%s rows: %d (%s)   ", time.Now().Format(time.TimeOnly), total, strings.Join(parts, ", "))
}
