package hub

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/protocol"
)

// fleetCollector exposes the backlog each agent reported in its last status, as gauges
// labelled tenant, facility and agent, read from the hub's fleet view at scrape time (so
// no series outlives what the hub knows). Every hub sees every agent's status, so every
// hub reports the whole fleet.
type fleetCollector struct {
	in *Ingester

	online, lastSeen, spoolBatches, spoolBytes, spoolFull *prometheus.Desc
	filesWaiting, oldestUnacked, inFlight, quarantined    *prometheus.Desc
	pending                                               *prometheus.Desc
}

func newFleetCollector(in *Ingester) *fleetCollector {
	labels := []string{"tenant", "facility", "agent"}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("medlake_hub_agent_"+name, help, labels, nil)
	}
	return &fleetCollector{
		in:            in,
		online:        d("online", "1 while the agent's last status says online, 0 after its offline status or last will."),
		lastSeen:      d("last_seen_timestamp_seconds", "When this hub last received the agent's status (hub clock, Unix seconds)."),
		spoolBatches:  d("spool_batches", "Batches in the agent's spool, by its last status."),
		spoolBytes:    d("spool_bytes", "Bytes in the agent's spool, by its last status."),
		spoolFull:     d("spool_full", "1 while the agent reports its spool full (intake paused)."),
		filesWaiting:  d("files_waiting", "Source files the agent has taken and not finished, by its last status."),
		oldestUnacked: d("oldest_unacked_age_seconds", "Age of the agent's oldest unacknowledged batch, now; 0 when none waits or the agent does not report it (protocol 1.0)."),
		inFlight:      d("inflight_batches", "Batches the agent has sent and awaits acks for, by its last status."),
		quarantined:   d("quarantined_files", "Files in the agent's quarantine, by its last status."),
		pending: prometheus.NewDesc("medlake_hub_commit_pending_age_seconds",
			"Age of the oldest batch this hub holds for the table and has not committed (by receipt); 0 when none. It grows while the catalog or object store is down.",
			[]string{"table"}, nil),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.online, c.lastSeen, c.spoolBatches, c.spoolBytes, c.spoolFull,
		c.filesWaiting, c.oldestUnacked, c.inFlight, c.quarantined, c.pending} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, a := range c.in.Fleet() {
		lv := []string{a.Tenant, a.Facility, a.Agent}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		g(c.online, b2f(a.State == protocol.StateOnline))
		g(c.lastSeen, float64(a.LastSeen.UnixNano())/1e9)
		g(c.spoolBatches, float64(a.SpoolBatches))
		g(c.spoolBytes, float64(a.SpoolBytes))
		g(c.spoolFull, b2f(a.SpoolFull))
		g(c.filesWaiting, float64(a.FilesWaiting))
		g(c.oldestUnacked, a.OldestUnackedAge(now).Seconds())
		g(c.inFlight, float64(a.InFlight))
		g(c.quarantined, float64(a.Quarantined))
	}
	for table, since := range c.in.Pending() {
		age := 0.0
		if !since.IsZero() {
			age = now.Sub(since).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, age, table)
	}
}

// Pending returns, for every table this hub has committed or is committing, when it
// received the oldest batch it holds uncommitted (zero: none).
func (in *Ingester) Pending() map[string]time.Time {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[string]time.Time, len(in.cmts))
	for table, c := range in.cmts {
		if ns := c.pendingSince.Load(); ns != 0 {
			out[table] = time.Unix(0, ns)
		} else {
			out[table] = time.Time{}
		}
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// AgentStatus is the hub's view of one agent: its last status and when it came.
type AgentStatus struct {
	Tenant, Facility, Agent string
	State                   string
	LastSeen                time.Time // hub clock
	StatusTime              time.Time // agent clock
	SpoolBatches            int
	SpoolBytes              int64
	SpoolFull               bool
	FilesWaiting            int
	OldestUnacked           time.Time // agent clock; zero: none, or a 1.0 agent
	InFlight                int
	Quarantined             int
	DeadLetters             int
	LastError               string
	ProtocolVersion         string
}

// OldestUnackedAge is the age of the agent's oldest unacknowledged batch at now: its
// age when the status was written (both agent clock, so free of skew) plus the time
// since the hub received it.
func (a AgentStatus) OldestUnackedAge(now time.Time) time.Duration {
	if a.OldestUnacked.IsZero() {
		return 0
	}
	return max(a.StatusTime.Sub(a.OldestUnacked), 0) + max(now.Sub(a.LastSeen), 0)
}

// Fleet returns every agent whose status this hub has received, in no particular order.
func (in *Ingester) Fleet() []AgentStatus {
	in.agentsMu.Lock()
	defer in.agentsMu.Unlock()
	out := make([]AgentStatus, 0, len(in.agents))
	for _, ka := range in.agents {
		if ka.seen.IsZero() {
			continue
		}
		s := ka.status
		out = append(out, AgentStatus{
			Tenant: ka.topic.Tenant, Facility: ka.topic.Facility, Agent: ka.topic.Agent,
			State: s.State, LastSeen: ka.seen, StatusTime: s.Time,
			SpoolBatches: s.SpoolBatches, SpoolBytes: s.SpoolBytes, SpoolFull: s.SpoolFull,
			FilesWaiting: s.FilesWaiting, OldestUnacked: s.OldestUnacked, InFlight: s.InFlight,
			Quarantined: s.Quarantined, DeadLetters: s.DeadLetters, LastError: s.LastError,
			ProtocolVersion: s.Version,
		})
	}
	return out
}
