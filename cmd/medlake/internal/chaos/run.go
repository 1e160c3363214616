package chaos

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/deploy/local/stack"
)

// Config says what a run does.
type Config struct {
	Seed int64
	// Duration is the fault phase: faults are spread over it and the workload is
	// dropped into the watched folders over it. Draining and checking come after.
	Duration time.Duration
	// FaultsPerKind is how many faults of each kind in Kinds; 0 makes a steady run: the
	// workload at a constant rate with no faults, to measure freshness.
	FaultsPerKind int
	// Kinds are the kinds of fault injected; empty means every kind.
	Kinds []Kind
	// Rate, when positive, sets how many archives per second are dropped (over all
	// facilities): FilesPerFacility becomes Rate × Duration / Facilities.
	Rate             float64
	Facilities       int
	FilesPerFacility int
	// MaxBytes caps the generated archives' compressed size (gen's --max-bytes).
	MaxBytes int64
	// Days is the window the records' event times span (gen's --days; 0: gen's
	// default). Tables are partitioned by day, so it sets how many files a commit writes.
	Days int
	Hubs int
	// Agents is the number of agent processes. Each agent serves one facility, so it
	// must equal Facilities; zero means Facilities.
	Agents int
	// AckTimeout is the agents' ack_timeout: how long a batch sent to a hub that died
	// waits before it is re-sent.
	AckTimeout time.Duration
	// DrainTimeout bounds the wait, after the fault phase, for every record to be
	// committed and every spool to empty.
	DrainTimeout time.Duration
	// WorkDir holds binaries, data, state and logs; empty means a new temporary
	// directory, removed after a passing run unless KeepWorkDir.
	WorkDir     string
	KeepWorkDir bool
	// BinDir, when set, holds medlake and medlake-agent already built; otherwise Run
	// builds them with go build into WorkDir/bin.
	BinDir string
	// Progress receives a line every few seconds and one per fault; nil is silent.
	Progress io.Writer
	Logger   *slog.Logger
}

// ShortConfig is the configuration CI runs: at least 10 faults of each kind over at
// least 100,000 records, in a few minutes on two cores.
func ShortConfig(seed int64) Config {
	return Config{
		Seed:             seed,
		Duration:         5 * time.Minute,
		FaultsPerKind:    10,
		Facilities:       4,
		FilesPerFacility: 20,
		MaxBytes:         100 << 10,
		Hubs:             2,
		AckTimeout:       8 * time.Second,
		DrainTimeout:     4 * time.Minute,
	}
}

func (c *Config) validate() error {
	if c.Agents == 0 {
		c.Agents = c.Facilities
	}
	if len(c.Kinds) == 0 {
		c.Kinds = Kinds()
	}
	if c.Rate > 0 && c.Facilities > 0 {
		c.FilesPerFacility = int(math.Ceil(c.Rate * c.Duration.Seconds() / float64(c.Facilities)))
	}
	switch {
	case c.Facilities < 1 || c.FilesPerFacility < 1:
		return fmt.Errorf("want at least one facility and one file per facility, not %d and %d", c.Facilities, c.FilesPerFacility)
	case c.Agents != c.Facilities:
		return fmt.Errorf("each agent serves one facility: %d agents for %d facilities", c.Agents, c.Facilities)
	case c.Hubs < 2:
		return fmt.Errorf("want at least two hubs (a hub is killed while the others ingest), not %d", c.Hubs)
	case c.Duration <= 0 || c.DrainTimeout <= 0 || c.AckTimeout <= 0:
		return errors.New("duration, drain timeout and ack timeout must be positive")
	case c.FaultsPerKind < 0 || c.Rate < 0:
		return errors.New("faults per kind and rate must not be negative")
	}
	for _, k := range c.Kinds {
		if !slices.Contains(Kinds(), k) {
			return fmt.Errorf("unknown fault kind %q (want one of %v)", k, Kinds())
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// run is one run's state. Fields set during setup are read-only afterwards.
type run struct {
	cfg      Config
	work     string
	bin      string
	genDir   string
	manifest *gen.Manifest
	logger   *slog.Logger
	out      io.Writer

	pg     *stack.Server
	broker *stack.Server
	minio  *minioCluster
	hubs   []*proc
	query  *proc
	agents []*proc
	// agentIDs maps agent-N to the id it sends as; agentDirs to its state dir;
	// agentWatch to its watched folder.
	agentIDs   map[string]string
	agentDirs  map[string]string
	agentWatch map[string]string
	// agentFacility maps agent-N to its facility id.
	agentFacility map[string]string
	queryAddr     string

	ledger  *ledgerWatch
	dropper *dropper

	faultsDone atomic.Int64 // faults carried out, for progress lines
}

// Run runs the harness and returns its report. The error is for a run that could not
// be carried out (a server that would not start); a run that found lost or duplicated
// records returns a report whose OK is false.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	r := &run{cfg: cfg, logger: cfg.Logger, out: cfg.Progress,
		agentIDs: map[string]string{}, agentDirs: map[string]string{}, agentWatch: map[string]string{}, agentFacility: map[string]string{}}
	r.work = cfg.WorkDir
	if r.work == "" {
		// Not os.TempDir's 0700 default: nothing here needs the postgres user, but
		// keep it readable for whoever inspects a failed run.
		r.work, err = os.MkdirTemp("", "medlake-chaos-")
		if err != nil {
			return nil, fmt.Errorf("chaos: creating work dir: %w", err)
		}
	}
	defer func() {
		r.teardown()
		if rep != nil && rep.OK() && cfg.WorkDir == "" && !cfg.KeepWorkDir {
			os.RemoveAll(r.work)
		} else {
			r.progress("work dir kept: %s (logs in %s)", r.work, filepath.Join(r.work, "logs"))
		}
	}()
	if err := r.setup(ctx); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	return r.exercise(ctx)
}

func (r *run) progress(format string, a ...any) {
	fmt.Fprintf(r.out, "%s chaos: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func (r *run) setup(ctx context.Context) error {
	for _, d := range []string{"logs", "minio", "hub", "agents", "exports"} {
		if err := os.MkdirAll(filepath.Join(r.work, d), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if err := r.build(ctx); err != nil {
		return err
	}
	if err := r.generate(ctx); err != nil {
		return err
	}
	r.progress("starting PostgreSQL, mosquitto and a 4-node MinIO")
	var err error
	if r.pg, err = stack.StartServer(stack.NamePostgres); err != nil {
		return err
	}
	if r.broker, err = stack.StartServer(stack.NameMosquitto); err != nil {
		return err
	}
	if r.minio, err = startMinIO(ctx, filepath.Join(r.work, "minio"), r.logger); err != nil {
		return err
	}
	r.progress("MinIO nodes on ports %v behind the balancer %s", r.minio.ports, r.minio.Endpoint())
	if err := r.startCentral(ctx); err != nil {
		return err
	}
	return r.startAgents(ctx)
}

// build compiles medlake and medlake-agent once, unless BinDir has them.
func (r *run) build(ctx context.Context) error {
	if r.cfg.BinDir != "" {
		r.bin = r.cfg.BinDir
		return nil
	}
	r.bin = filepath.Join(r.work, "bin")
	r.progress("building medlake and medlake-agent into %s", r.bin)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", r.bin+string(filepath.Separator),
		"github.com/medlake/medlake/cmd/medlake", "github.com/medlake/medlake/cmd/medlake-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	r.progress("built in %s", time.Since(start).Round(time.Second))
	return nil
}

func (r *run) generate(ctx context.Context) error {
	opts := gen.DefaultOptions()
	opts.Out = filepath.Join(r.work, "gen")
	opts.Seed = r.cfg.Seed
	opts.Facilities = r.cfg.Facilities
	opts.FilesPerFacility = r.cfg.FilesPerFacility
	opts.Formats = []string{gen.FormatCSV, gen.FormatTXT, gen.FormatXML, gen.FormatDAT}
	if r.cfg.Days > 0 {
		opts.Days = r.cfg.Days
	}
	if r.cfg.MaxBytes > 0 {
		opts.MaxBytes = r.cfg.MaxBytes
		opts.MinBytes = max(min(opts.MinBytes, opts.MaxBytes/2), 4<<10)
	}
	m, err := gen.Run(ctx, opts, nil)
	if err != nil {
		return fmt.Errorf("generating the workload: %w", err)
	}
	r.genDir, r.manifest = opts.Out, m
	var ready int64
	for _, t := range m.Tables {
		ready += t.Ready.Rows
	}
	r.progress("generated %d archives, %d records for %d facilities", len(m.Files), ready, r.cfg.Facilities)
	return nil
}

func (r *run) s3Env() []string {
	return []string{
		"MEDLAKE_CATALOG_S3_ACCESS_KEY=" + r.minio.accessKey,
		"MEDLAKE_CATALOG_S3_SECRET_KEY=" + r.minio.secretKey,
		"MEDLAKE_CATALOG_S3_REGION=" + r.minio.region,
	}
}

func (r *run) centralArgs(name, roles string) ([]string, string, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	return []string{"serve", "--roles", roles,
		"--data-dir", filepath.Join(r.work, "hub", name),
		"--catalog", r.pg.Get("PG_DSN"),
		"--warehouse", "s3://" + r.minio.bucket + "/warehouse",
		"--s3-endpoint", r.minio.Endpoint(),
		"--broker-url", r.broker.Get("MQTT_URL"),
		"--feeds", filepath.Join(r.genDir, gen.FeedsDir),
		"--http-listen", httpAddr,
		"--log-format", "json",
	}, httpAddr, nil
}

// startCentral starts the hubs and the query node.
func (r *run) startCentral(ctx context.Context) error {
	for i := range r.cfg.Hubs {
		name := fmt.Sprintf("hub-%d", i+1)
		args, httpAddr, err := r.centralArgs(name, "ingest")
		if err != nil {
			return err
		}
		// Unique per hub: the broker keeps a persistent session per client id, and a
		// second hub connecting under the same id would take the first one's over.
		env := append(r.s3Env(), "MEDLAKE_INGEST_CLIENT_ID=medlake-hub-chaos-"+strconv.Itoa(i+1))
		p := &proc{name: name, path: filepath.Join(r.bin, "medlake"), args: args, env: env, http: httpAddr,
			log: filepath.Join(r.work, "logs", name+".log"), ready: httpOK("http://" + httpAddr + "/readyz")}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = p.start(sctx)
		cancel()
		if err != nil {
			return err
		}
		r.hubs = append(r.hubs, p)
	}
	args, httpAddr, err := r.centralArgs("query", "query")
	if err != nil {
		return err
	}
	if r.queryAddr, err = freeAddr(); err != nil {
		return err
	}
	args = append(args, "--pg-listen", r.queryAddr)
	r.query = &proc{name: "query", path: filepath.Join(r.bin, "medlake"), args: args, env: r.s3Env(), http: httpAddr,
		log: filepath.Join(r.work, "logs", "query.log"), ready: httpOK("http://" + httpAddr + "/readyz")}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := r.query.start(sctx); err != nil {
		return err
	}
	r.progress("%d hubs and a query node ready (pgwire %s)", len(r.hubs), r.queryAddr)
	return nil
}

func (r *run) startAgents(ctx context.Context) error {
	i := 0
	for _, tn := range r.manifest.Tenants {
		for _, f := range tn.Facilities {
			i++
			name := fmt.Sprintf("agent-%d", i)
			id := "agent-" + f.ID
			state := filepath.Join(r.work, "agents", name)
			watch := filepath.Join(r.work, "exports", f.ID)
			if err := os.MkdirAll(watch, 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", watch, err)
			}
			cfgPath := filepath.Join(r.work, "agents", name+".yaml")
			conf := fmt.Sprintf(`id: %s
tenant: %s
facility: %s
broker: %s
state_dir: %s
feeds_dir: %s
watch:
  - path: %s
    recursive: true
    done: move
quiet_period: 300ms
rescan_interval: 2s
ack_timeout: %s
status_interval: 5s
`, id, tn.ID, f.ID, r.broker.Get("MQTT_URL"), state, filepath.Join(r.genDir, gen.FeedsDir), watch, r.cfg.AckTimeout)
			if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", cfgPath, err)
			}
			p := &proc{name: name, path: filepath.Join(r.bin, "medlake-agent"),
				args: []string{"run", "--config", cfgPath, "--log-format", "json"},
				log:  filepath.Join(r.work, "logs", name+".log")}
			if err := p.start(ctx); err != nil {
				return err
			}
			r.agents = append(r.agents, p)
			r.agentIDs[name], r.agentDirs[name], r.agentWatch[f.ID] = id, state, watch
			r.agentFacility[name] = f.ID
		}
	}
	r.progress("%d agents running", len(r.agents))
	return nil
}

// teardown stops everything Run started, agents first so nothing is left sending.
func (r *run) teardown() {
	for _, p := range r.agents {
		_ = p.stop(syscall.SIGTERM, 20*time.Second)
	}
	for _, p := range append(slices.Clone(r.hubs), r.query) {
		if p != nil {
			_ = p.stop(syscall.SIGTERM, 20*time.Second)
		}
	}
	if r.ledger != nil {
		r.ledger.stop()
	}
	if r.minio != nil {
		r.minio.close()
	}
	for _, s := range []*stack.Server{r.broker, r.pg} {
		if s != nil {
			if err := s.Close(); err != nil {
				r.logger.Warn("stopping server", "err", err)
			}
		}
	}
}

// exercise drops the workload and injects the faults, then drains and verifies.
func (r *run) exercise(ctx context.Context) (*Report, error) {
	var faults []Fault
	if r.cfg.FaultsPerKind > 0 {
		var err error
		faults, err = PlanKinds(r.cfg.Seed, r.cfg.FaultsPerKind, r.cfg.Duration,
			Targets{Agents: len(r.agents), Hubs: len(r.hubs), MinIONodes: len(r.minio.nodes)}, r.cfg.Kinds)
		if err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
	}
	tables := map[string]bool{}
	for name, t := range r.manifest.Tables {
		if t.Ready.Rows > 0 {
			tables[name] = true
		}
	}
	r.ledger = startLedgerWatch(r.pg.Get("PG_DSN"), tables, r.logger)

	rep := &Report{Seed: r.cfg.Seed, Started: time.Now(), Facilities: r.cfg.Facilities,
		Agents: len(r.agents), Hubs: len(r.hubs)}
	for _, t := range r.manifest.Tables {
		rep.RecordsIn += t.Ready.Rows
	}
	for _, f := range r.manifest.Files {
		if !f.Pending {
			rep.Files++
		}
	}
	r.progress("fault phase: %d faults over %s, %d records in %d files dropped meanwhile",
		len(faults), r.cfg.Duration, rep.RecordsIn, rep.Files)

	phaseCtx, cancelPhase := context.WithCancel(ctx)
	defer cancelPhase()
	var wg sync.WaitGroup
	r.dropper = newDropper(r.manifest, r.genDir, r.agentWatch, r.cfg.Seed)
	dropErr := make(chan error, 1)
	wg.Go(func() { dropErr <- r.dropper.run(phaseCtx, r.cfg.Duration) })
	wg.Go(func() { r.tick(phaseCtx, rep.RecordsIn, len(faults)) })

	start := time.Now()
	var lastRestore time.Time
	for _, f := range faults {
		select {
		case <-ctx.Done():
			cancelPhase()
			wg.Wait()
			return nil, ctx.Err()
		case <-time.After(time.Until(start.Add(f.At))):
		}
		res := r.inject(ctx, f)
		lastRestore = res.Restored
		rep.Faults = append(rep.Faults, res)
		r.faultsDone.Add(1)
		if res.Err != "" {
			r.progress("fault %s: %s", f, res.Err)
		}
	}
	if err := <-dropErr; err != nil {
		cancelPhase()
		wg.Wait()
		return nil, fmt.Errorf("chaos: dropping files: %w", err)
	}
	// The files held back, so that there is work after the last fault too.
	if err := r.dropper.rest(); err != nil {
		cancelPhase()
		wg.Wait()
		return nil, fmt.Errorf("chaos: dropping files: %w", err)
	}
	r.progress("fault phase over; draining")

	drainErr := r.drain(ctx, rep.RecordsIn)
	cancelPhase()
	wg.Wait()
	if drainErr != nil {
		rep.Problems = append(rep.Problems, drainErr.Error())
	}
	commits := r.ledger.snapshot()
	if len(commits) > 0 && !lastRestore.IsZero() {
		rep.DrainTime = max(commits[len(commits)-1].At.Sub(lastRestore), 0)
	}
	for i := range rep.Faults {
		if i+1 < len(rep.Faults) {
			rep.Faults[i].Next = rep.Faults[i+1].Injected
		}
		rep.Faults[i].Settle(commits, r.agentIDs)
	}
	rep.Freshness = r.freshness(ctx, commits, start)
	r.checkSpools(rep)
	if err := r.verify(ctx, rep); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

// tick prints a progress line every 10 seconds until ctx ends.
func (r *run) tick(ctx context.Context, total int64, faults int) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rows, batches := r.ledger.totals()
			r.progress("faults %d/%d, files dropped %d, committed %d/%d records in %d batches",
				r.faultsDone.Load(), faults, r.dropper.count(), rows, total, batches)
		}
	}
}

// drain waits until the ledger holds every record and every spool is empty.
func (r *run) drain(ctx context.Context, want int64) error {
	deadline := time.Now().Add(r.cfg.DrainTimeout)
	for {
		rows, _ := r.ledger.totals()
		left := r.spoolLeft()
		if rows >= want && sumValues(left) == 0 {
			r.progress("drained: %d records committed, spools empty", rows)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not drained after %s: %d of %d records committed, spool frames left %v", r.cfg.DrainTimeout, rows, want, left)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// spoolLeft counts the frames in each agent's spool and dead-letter folders.
func (r *run) spoolLeft() map[string]int {
	left := map[string]int{}
	for name, dir := range r.agentDirs {
		n := 0
		for _, sub := range []string{"spool", "dead-letter"} {
			des, _ := os.ReadDir(filepath.Join(dir, sub))
			for _, de := range des {
				if !de.IsDir() && strings.HasSuffix(de.Name(), ".mlb") {
					n++
				}
			}
		}
		left[name] = n
	}
	return left
}

func (r *run) checkSpools(rep *Report) {
	rep.SpoolLeft = r.spoolLeft()
	rep.SpoolsDrained = sumValues(rep.SpoolLeft) == 0
	for _, dir := range r.agentDirs {
		des, _ := os.ReadDir(filepath.Join(dir, "quarantine"))
		for _, de := range des {
			if !de.IsDir() && strings.HasSuffix(de.Name(), ".reason.txt") {
				rep.Quarantined++
			}
		}
	}
	if rep.Quarantined > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d files quarantined", rep.Quarantined))
	}
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func freeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// pgConnect opens a catalog connection with a short timeout.
func pgConnect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}
