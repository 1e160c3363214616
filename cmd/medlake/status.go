package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/medlake/medlake/hub"
	"github.com/medlake/medlake/protocol"
)

// Status API: GET /api/v1/status on every node's --http-listen.
const statusPath = "/api/v1/status"

const (
	// statusWindow is how far back the status percentiles look.
	statusWindow = 5 * time.Minute
	// statusTick is how often the node keeps a copy of its latency histograms, to
	// subtract the copy from statusWindow ago.
	statusTick = 15 * time.Second
	// staleAfter marks an agent "stale" when its last status is older: agents publish
	// one every status_interval (30 s by default) and on every event.
	staleAfter = 2 * time.Minute
)

// Latency histograms the status report reads, by JSON key.
var statusHistograms = map[string]string{
	"commit_lag":          "medlake_hub_commit_lag_seconds",
	"freshness_committed": "medlake_hub_freshness_committed_seconds",
	"freshness_queryable": "medlake_query_freshness_queryable_seconds",
	"visible_lag":         "medlake_query_snapshot_visible_lag_seconds",
}

// StatusReport is the JSON of GET /api/v1/status.
type StatusReport struct {
	Time time.Time `json:"time"`
	// WindowSeconds is how far back the tables' percentiles look (less just after start).
	WindowSeconds float64       `json:"window_seconds"`
	Agents        []AgentReport `json:"agents"`
	Tables        []TableReport `json:"tables"`
}

// AgentReport is one agent as the hub last heard from it.
type AgentReport struct {
	Tenant       string    `json:"tenant"`
	Facility     string    `json:"facility"`
	Agent        string    `json:"agent"`
	State        string    `json:"state"` // online, offline, or stale (online, but silent for 2 minutes)
	LastSeen     time.Time `json:"last_seen"`
	SpoolBatches int       `json:"spool_batches"`
	SpoolBytes   int64     `json:"spool_bytes"`
	SpoolFull    bool      `json:"spool_full"`
	FilesWaiting int       `json:"files_waiting"`
	// OldestUnackedSeconds is the age of the oldest unacknowledged batch now; null
	// for agents of protocol 1.0, which do not report it.
	OldestUnackedSeconds *float64 `json:"oldest_unacked_seconds"`
	InFlight             int      `json:"in_flight"`
	Quarantined          int      `json:"quarantined"`
	DeadLetters          int      `json:"dead_letters"`
	LastError            string   `json:"last_error,omitempty"`
	Protocol             string   `json:"protocol"`
}

// TableReport is one table's delivery figures on this node.
type TableReport struct {
	Table string `json:"table"`
	// LastCommit is this node's last commit of the table (zero: none since start).
	LastCommit time.Time `json:"last_commit,omitzero"`
	// PendingSeconds is the age of the oldest batch received and not committed.
	PendingSeconds float64 `json:"pending_seconds"`
	// Latencies over the window, by statusHistograms key.
	CommitLag          Quantiles `json:"commit_lag"`
	FreshnessCommitted Quantiles `json:"freshness_committed"`
	FreshnessQueryable Quantiles `json:"freshness_queryable"`
	VisibleLag         Quantiles `json:"visible_lag"`
}

// Quantiles summarize a latency histogram over the window; P50 and P99 are null when
// nothing was observed. They are estimated within histogram buckets, as Prometheus'
// histogram_quantile does.
type Quantiles struct {
	Count uint64   `json:"count"`
	P50   *float64 `json:"p50"`
	P99   *float64 `json:"p99"`
}

// histSample is one reading of the latency histograms: by metric, table, the
// cumulative counts per upper bound.
type histSample struct {
	at    time.Time
	hists map[string]map[string]hist
}

type hist struct {
	count  uint64
	bounds []float64
	cum    []uint64 // cumulative, per bound
}

// statusWindows keeps readings of the latency histograms so the status can subtract
// the one from statusWindow ago. Safe for concurrent use.
type statusWindows struct {
	reg *prometheus.Registry

	mu      sync.Mutex
	samples []histSample // guarded by mu; oldest first, spanning at most statusWindow
}

func newStatusWindows(reg *prometheus.Registry) *statusWindows {
	w := &statusWindows{reg: reg}
	w.take(time.Now())
	return w
}

// run keeps a reading every statusTick until ctx ends.
func (w *statusWindows) run(ctx context.Context) {
	t := time.NewTicker(statusTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.take(now)
		}
	}
}

func (w *statusWindows) take(now time.Time) {
	s, _ := w.read(now)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, s)
	// Keep the newest reading at least statusWindow old, and everything after it.
	for len(w.samples) > 1 && now.Sub(w.samples[1].at) >= statusWindow {
		w.samples = w.samples[1:]
	}
}

// read gathers the registry: the latency histograms, and every family for the caller.
func (w *statusWindows) read(now time.Time) (histSample, []*dto.MetricFamily) {
	s := histSample{at: now, hists: map[string]map[string]hist{}}
	families, _ := w.reg.Gather() // a partial gather still helps; the error is in /metrics
	for _, mf := range families {
		if !isStatusHistogram(mf.GetName()) {
			continue
		}
		byTable := map[string]hist{}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			var hs hist
			hs.count = h.GetSampleCount()
			for _, b := range h.GetBucket() {
				hs.bounds = append(hs.bounds, b.GetUpperBound())
				hs.cum = append(hs.cum, b.GetCumulativeCount())
			}
			byTable[label(m, "table")] = hs
		}
		s.hists[mf.GetName()] = byTable
	}
	return s, families
}

func isStatusHistogram(name string) bool {
	for _, v := range statusHistograms {
		if v == name {
			return true
		}
	}
	return false
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// report builds the status at now from the ingester's fleet (nil on a query-only node)
// and the registry.
func (w *statusWindows) report(now time.Time, in *hub.Ingester) StatusReport {
	cur, families := w.read(now)
	w.mu.Lock()
	base := w.samples[0]
	w.mu.Unlock()
	r := StatusReport{Time: now.UTC(), WindowSeconds: math.Round(now.Sub(base.at).Seconds()), Agents: []AgentReport{}, Tables: []TableReport{}}
	if in != nil {
		for _, a := range in.Fleet() {
			ar := AgentReport{Tenant: a.Tenant, Facility: a.Facility, Agent: a.Agent, State: a.State, LastSeen: a.LastSeen.UTC(),
				SpoolBatches: a.SpoolBatches, SpoolBytes: a.SpoolBytes, SpoolFull: a.SpoolFull, FilesWaiting: a.FilesWaiting,
				InFlight: a.InFlight, Quarantined: a.Quarantined, DeadLetters: a.DeadLetters, LastError: a.LastError, Protocol: a.ProtocolVersion}
			if ar.State == protocol.StateOnline && now.Sub(a.LastSeen) > staleAfter {
				ar.State = "stale"
			}
			if !a.OldestUnacked.IsZero() || ar.Protocol != "1.0" {
				age := math.Round(a.OldestUnackedAge(now).Seconds()*10) / 10
				ar.OldestUnackedSeconds = &age
			}
			r.Agents = append(r.Agents, ar)
		}
		slices.SortFunc(r.Agents, func(a, b AgentReport) int {
			return strings.Compare(a.Tenant+"/"+a.Facility+"/"+a.Agent, b.Tenant+"/"+b.Facility+"/"+b.Agent)
		})
	}
	tables := map[string]*TableReport{}
	get := func(name string) *TableReport {
		if t, ok := tables[name]; ok {
			return t
		}
		t := &TableReport{Table: name}
		tables[name] = t
		return t
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "medlake_hub_table_last_commit_timestamp_seconds":
				sec := m.GetGauge().GetValue()
				get(label(m, "table")).LastCommit = time.UnixMilli(int64(sec * 1e3)).UTC()
			case "medlake_hub_commit_pending_age_seconds":
				get(label(m, "table")).PendingSeconds = math.Round(m.GetGauge().GetValue()*10) / 10
			}
		}
	}
	for key, metric := range statusHistograms {
		for table, h := range cur.hists[metric] {
			q := windowQuantiles(h, base.hists[metric][table])
			t := get(table)
			switch key {
			case "commit_lag":
				t.CommitLag = q
			case "freshness_committed":
				t.FreshnessCommitted = q
			case "freshness_queryable":
				t.FreshnessQueryable = q
			case "visible_lag":
				t.VisibleLag = q
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		r.Tables = append(r.Tables, *tables[name])
	}
	return r
}

// windowQuantiles is p50 and p99 of what cur observed since base (base may be empty:
// the table's first observation came inside the window).
func windowQuantiles(cur, base hist) Quantiles {
	cum := slices.Clone(cur.cum)
	count := cur.count
	if len(base.cum) == len(cum) {
		for i := range cum {
			cum[i] -= base.cum[i]
		}
		count -= base.count
	}
	q := Quantiles{Count: count}
	if count == 0 {
		return q
	}
	p50, p99 := bucketQuantile(0.5, cur.bounds, cum, count), bucketQuantile(0.99, cur.bounds, cum, count)
	q.P50, q.P99 = &p50, &p99
	return q
}

// bucketQuantile estimates the q-quantile by linear interpolation inside the bucket
// that holds it (Prometheus' histogram_quantile). Observations above the last finite
// bound give that bound.
func bucketQuantile(q float64, bounds []float64, cum []uint64, count uint64) float64 {
	rank := q * float64(count)
	lower, below := 0.0, uint64(0)
	for i, ub := range bounds {
		if float64(cum[i]) >= rank {
			if math.IsInf(ub, 1) {
				return lower
			}
			inBucket := cum[i] - below
			if inBucket == 0 {
				return ub
			}
			v := lower + (ub-lower)*(rank-float64(below))/float64(inBucket)
			return math.Round(v*1000) / 1000
		}
		lower, below = ub, cum[i]
	}
	return lower
}

const statusUsage = `Usage: medlake status [flags]

Prints the fleet and the tables as one medlake node sees them, from its status API
(GET /api/v1/status on --http-listen):

  agents  state (online, offline, stale: no status for 2 minutes), last seen, backlog
          (spooled batches and bytes, files waiting), the age of the oldest batch not yet
          acknowledged by a hub, quarantined files
  tables  last commit by this node, age of the oldest batch received and not committed,
          and over the last 5 minutes, p50/p99 of: commit lag (agent spooled → committed),
          freshness to committed (source file mtime → committed) and to queryable (source
          file mtime → visible to this node's queries)

An ingest node knows the fleet and its own commits, a query node what became queryable;
an all-in-one node knows everything. With several hubs, each reports the commits it made.
`

func runStatus(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		asJSON  bool
		url     string
		timeout time.Duration
	)
	cfg, _, err := loadConfig("status", statusUsage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "the node's HTTP address")
		fs.StringVar(&url, "url", "", "the node's base URL; default http://<http-listen>")
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	})
	if err != nil {
		return err
	}
	if url == "" {
		url = "http://" + cfg.HTTPListen
	}
	r, raw, err := fetchStatus(ctx, strings.TrimSuffix(url, "/")+statusPath, timeout)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	return printStatus(stdout, r)
}

func fetchStatus(ctx context.Context, url string, timeout time.Duration) (StatusReport, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return StatusReport{}, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return StatusReport{}, nil, fmt.Errorf("reading status from %s: %w", url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return StatusReport{}, nil, fmt.Errorf("reading status from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return StatusReport{}, nil, fmt.Errorf("reading status from %s: %s: %s", url, resp.Status, strings.TrimSpace(string(raw)))
	}
	var r StatusReport
	if err := json.Unmarshal(raw, &r); err != nil {
		return StatusReport{}, nil, fmt.Errorf("decoding status from %s: %w", url, err)
	}
	return r, raw, nil
}

func printStatus(w io.Writer, r StatusReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return r.Time.Sub(t).Round(time.Second).String() + " ago"
	}
	secs := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return (time.Duration(*v * float64(time.Second))).Round(10 * time.Millisecond).String()
	}
	fmt.Fprintf(tw, "AGENT\tFACILITY\tSTATE\tLAST SEEN\tSPOOLED\tFILES WAITING\tOLDEST UNACKED\tQUARANTINED\n")
	for _, a := range r.Agents {
		state := a.State
		if a.SpoolFull {
			state += " (spool full)"
		}
		oldest := secs(a.OldestUnackedSeconds)
		if a.SpoolBatches == 0 {
			oldest = "-"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%d batches, %s\t%d\t%s\t%d\n", a.Agent, a.Tenant, a.Facility, state, ago(a.LastSeen),
			a.SpoolBatches, humanBytes(a.SpoolBytes), a.FilesWaiting, oldest, a.Quarantined)
	}
	if len(r.Agents) == 0 {
		fmt.Fprintf(tw, "(no agent status received by this node)\n")
	}
	fmt.Fprintf(tw, "\nTABLE\tLAST COMMIT\tPENDING\tCOMMIT LAG p50/p99\tFRESH→COMMITTED p50/p99\tFRESH→QUERYABLE p50/p99\n")
	pq := func(q Quantiles) string {
		if q.Count == 0 {
			return "-"
		}
		return secs(q.P50) + " / " + secs(q.P99)
	}
	for _, t := range r.Tables {
		pending := "-"
		if t.PendingSeconds > 0 {
			pending = secs(&t.PendingSeconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Table, ago(t.LastCommit), pending, pq(t.CommitLag), pq(t.FreshnessCommitted), pq(t.FreshnessQueryable))
	}
	if len(r.Tables) == 0 {
		fmt.Fprintf(tw, "(no table committed or refreshed on this node yet)\n")
	}
	fmt.Fprintf(tw, "\npercentiles over the last %s\n", time.Duration(r.WindowSeconds*float64(time.Second)))
	return tw.Flush()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
