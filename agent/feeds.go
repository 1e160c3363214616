package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/agent/internal/durable"
	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// Feed definitions reach the agent two ways: files in feeds_dir (read at start, for an
// offline install) and the hub's config message (pushed from the catalog). Precedence,
// feed by feed: a pushed definition replaces the local one of the same name only when
// its version is higher; otherwise the local file wins. A pushed config is checked feed
// by feed: valid feeds switch, a feed the agent cannot run keeps its last good version
// (or stays absent if it never had one) and is reported as refused. The last good
// pushed set is kept in <state_dir>/pushed-feeds.json, so a restart without a broker
// runs it.

// pushedFile is the name of the persisted pushed feed set under state_dir.
const pushedFile = "pushed-feeds.json"

// feedSet is one immutable set of feed definitions with their normalizers. The agent
// swaps whole sets; a file is parsed with the set that was current when it started.
type feedSet struct {
	defs        []*feed.Definition // by name
	normalizers map[string]*normalize.Normalizer
	sources     map[string]string // by name: protocol.FeedSourceLocal or FeedSourcePushed
}

type feedSetKey struct{}

// feedsFor returns the feed set a file processed under ctx uses: the one pinned in ctx
// (a resumed file keeps the versions it started with), else the current one. It is the
// one accessor file processing reads feeds through.
func (a *Agent) feedsFor(ctx context.Context) *feedSet {
	if s, ok := ctx.Value(feedSetKey{}).(*feedSet); ok {
		return s
	}
	return a.feeds.Load()
}

// pushedState is what the agent keeps of pushed configs, persisted as pushedFile.
type pushedState struct {
	Applied   string                 `json:"applied,omitempty"`
	AppliedAt time.Time              `json:"applied_at,omitzero"`
	Refused   string                 `json:"refused,omitempty"`
	RefusedAt time.Time              `json:"refused_at,omitzero"`
	Errors    []protocol.ConfigError `json:"errors,omitempty"`
	// Feeds are the last good pushed definitions, by name.
	Feeds []protocol.ConfigFeed `json:"feeds"`
	// Previous are definitions Feeds replaced, newest first and a few per feed, so a file
	// interrupted under an older version resumes with it.
	Previous []protocol.ConfigFeed `json:"previous,omitempty"`
}

// maxPreviousPerFeed bounds Previous: enough for the files in flight across a few
// quick successive changes.
const maxPreviousPerFeed = 3

func (a *Agent) pushedPath() string { return filepath.Join(a.cfg.StateDir, pushedFile) }

// loadPushed reads the persisted pushed state; a missing file is an empty state.
func loadPushed(path string) (pushedState, error) {
	var ps pushedState
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ps, nil
	}
	if err != nil {
		return ps, fmt.Errorf("reading pushed feeds %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &ps); err != nil {
		return ps, fmt.Errorf("reading pushed feeds %s: %w", path, err)
	}
	return ps, nil
}

// savePushed replaces the persisted state atomically: temp file, fsync, rename, fsync dir.
func savePushed(path string, ps pushedState) error {
	b, err := json.MarshalIndent(ps, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding pushed feeds: %w", err)
	}
	tmp := path + ".tmp"
	if err := durable.WriteFile(tmp, b); err != nil {
		return fmt.Errorf("writing pushed feeds %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing pushed feeds %s: %w", path, err)
	}
	return durable.SyncDirs(filepath.Dir(path))
}

// loadLocalFeeds parses feeds_dir; an empty or unset feeds_dir has no feeds.
func loadLocalFeeds(dir string) ([]*feed.Definition, error) {
	if dir == "" {
		return nil, nil
	}
	defs, err := feed.ParseFS(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("loading feeds from %s: %w", dir, err)
	}
	for _, def := range defs {
		if def.Match.PasswordSecret != "" {
			if err := checkSecretName(def.Match.PasswordSecret); err != nil {
				return nil, fmt.Errorf("feed %s in %s: match.password_secret: %w", def.Name, dir, err)
			}
		}
	}
	return defs, nil
}

// buildFeedSet merges local and pushed definitions (a pushed one wins over a local one
// only with a higher version) and prepares a normalizer for each.
func (a *Agent) buildFeedSet(local, pushed []*feed.Definition) (*feedSet, error) {
	byName := map[string]*feed.Definition{}
	sources := map[string]string{}
	for _, d := range local {
		byName[d.Name], sources[d.Name] = d, protocol.FeedSourceLocal
	}
	for _, d := range pushed {
		if l, ok := byName[d.Name]; ok && l.Version >= d.Version {
			continue
		}
		byName[d.Name], sources[d.Name] = d, protocol.FeedSourcePushed
	}
	s := &feedSet{normalizers: map[string]*normalize.Normalizer{}, sources: sources}
	for _, d := range byName {
		n, err := normalize.New(d, a.normalizeOptions())
		if err != nil {
			return nil, fmt.Errorf("preparing feed %s version %d: %w", d.Name, d.Version, err)
		}
		s.defs = append(s.defs, d)
		s.normalizers[d.Name] = n
	}
	slices.SortFunc(s.defs, func(x, y *feed.Definition) int { return strings.Compare(x.Name, y.Name) })
	return s, nil
}

// parsePushed parses persisted or pushed definitions, skipping (and returning errors
// for) those that no longer parse.
func parsePushed(feeds []protocol.ConfigFeed) ([]*feed.Definition, []error) {
	var defs []*feed.Definition
	var errs []error
	for _, f := range feeds {
		d, err := feed.Parse([]byte(f.Definition))
		if err != nil {
			errs = append(errs, fmt.Errorf("pushed feed %s version %d: %w", f.Name, f.Version, err))
			continue
		}
		defs = append(defs, d)
	}
	return defs, errs
}

// referencedSecrets names the agent secrets a definition needs.
func referencedSecrets(d *feed.Definition) []string {
	var names []string
	if d.Match.PasswordSecret != "" {
		names = append(names, d.Match.PasswordSecret)
	}
	return names
}

// checkPushedFeed reports why the agent cannot run f, or nil. prev is the last good
// pushed version of the same feed (zero if none).
func (a *Agent) checkPushedFeed(f protocol.ConfigFeed, prev protocol.ConfigFeed) error {
	d, err := feed.Parse([]byte(f.Definition))
	if err != nil {
		return err
	}
	switch {
	case d.Name != f.Name || d.Version != f.Version:
		return fmt.Errorf("definition declares feed %s version %d, the config says %s version %d", d.Name, d.Version, f.Name, f.Version)
	case prev.Name != "" && f.Version < prev.Version:
		return fmt.Errorf("version %d is older than the running version %d", f.Version, prev.Version)
	case prev.Name != "" && f.Version == prev.Version && f.SHA256 != prev.SHA256:
		return fmt.Errorf("version %d is already running with other content; a change needs a new version", f.Version)
	}
	for _, name := range referencedSecrets(d) {
		if _, err := ReadSecret(a.cfg.SecretsPath(), name); err != nil {
			return fmt.Errorf("match.password_secret: %w", err)
		}
	}
	if _, err := normalize.New(d, a.normalizeOptions()); err != nil {
		return err
	}
	return nil
}

// configMetrics are the agent's config metrics; registered with the others.
type configMetrics struct {
	revision *prometheus.GaugeVec // 1 for the applied revision
	applied  prometheus.Counter
	refused  prometheus.Counter
}

func newConfigMetrics() *configMetrics {
	return &configMetrics{
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "medlake_agent", Name: "config_revision_info",
			Help: "1 for the revision of the pushed config the agent applied last."}, []string{"revision"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake_agent", Name: "configs_applied_total",
			Help: "Pushed configs the agent switched to, wholly or in part."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medlake_agent", Name: "configs_refused_total",
			Help: "Pushed configs with at least one feed the agent refused, or undecodable."}),
	}
}

func (m *configMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.revision, m.applied, m.refused}
}

func (m *configMetrics) setRevision(rev string) {
	m.revision.Reset()
	m.revision.WithLabelValues(rev).Set(1)
	m.applied.Inc()
}

// event queues a status event; the sender publishes status promptly.
func (a *Agent) event(ev protocol.Event) {
	if a.sender != nil {
		a.sender.Event(ev)
	}
}

// onConfig handles a payload on the agent's config topic. It is called by the sender,
// possibly from several goroutines; cfgMu serializes it.
func (a *Agent) onConfig(payload []byte) {
	if len(payload) == 0 {
		return // a cleared retained message
	}
	c, err := protocol.DecodeConfig(payload)
	if err != nil {
		a.logger.Error("refusing undecodable config", "err", err)
		a.setError(fmt.Errorf("config: %w", err))
		a.m.refused.Inc()
		a.event(protocol.Event{Kind: protocol.EventConfigRefused, Reason: err.Error()})
		return
	}
	a.applyConfig(c)
}

// applyConfig switches to the valid feeds of c, keeping the last good version of each
// invalid one, persists the result and reports it.
func (a *Agent) applyConfig(c protocol.Config) {
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	if c.Revision == a.seenRevision {
		return // redelivered (retained, resubscribed): already handled in this run
	}
	log := a.logger.With("revision", c.Revision)
	ps := a.pushed
	prev := map[string]protocol.ConfigFeed{}
	for _, f := range ps.Feeds {
		prev[f.Name] = f
	}
	var next []protocol.ConfigFeed
	var errs []protocol.ConfigError
	for _, f := range c.Feeds {
		p := prev[f.Name]
		if p.Name != "" && p.Version == f.Version && p.SHA256 == f.SHA256 {
			next = append(next, p)
			continue
		}
		if err := a.checkPushedFeed(f, p); err != nil {
			errs = append(errs, protocol.ConfigError{Feed: f.Name, Version: f.Version, Error: err.Error()})
			if p.Name != "" {
				next = append(next, p) // the last good version keeps running
			}
			continue
		}
		next = append(next, f)
	}
	defs, perrs := parsePushed(next)
	set, err := a.buildFeedSet(a.local, defs)
	if err = errors.Join(append(perrs, err)...); err != nil {
		// Each feed was checked alone, so this is unexpected: keep everything as it is.
		a.refuse(log, c.Revision, []protocol.ConfigError{{Error: err.Error()}})
		return
	}
	now := time.Now().UTC()
	nps := pushedState{Applied: ps.Applied, AppliedAt: ps.AppliedAt, Refused: ps.Refused, RefusedAt: ps.RefusedAt, Errors: ps.Errors,
		Feeds: next, Previous: previousFeeds(ps, next)}
	// Switched: the running set changes, or a new revision is taken for its valid
	// feeds. The same revision again (a restart) switches nothing.
	newRevision := c.Revision != ps.Applied
	changed := !sameFeeds(ps.Feeds, next) || newRevision && (len(errs) < len(c.Feeds) || len(c.Feeds) == 0)
	if changed {
		nps.Applied, nps.AppliedAt = c.Revision, now
	}
	if len(errs) > 0 {
		nps.Refused, nps.RefusedAt, nps.Errors = c.Revision, now, errs
	} else {
		// Fully applied: an older refusal no longer describes what runs.
		nps.Refused, nps.RefusedAt, nps.Errors = "", time.Time{}, nil
	}
	if err := savePushed(a.pushedPath(), nps); err != nil {
		// Not switching keeps what runs and what a restart runs the same.
		log.Error("persisting pushed feeds failed; config not applied", "err", err)
		a.setError(err)
		return
	}
	a.pushed = nps
	a.seenRevision = c.Revision
	a.swapFeeds(set)
	if changed {
		a.m.setRevision(c.Revision)
		names := make([]string, len(set.defs))
		for i, d := range set.defs {
			names[i] = fmt.Sprintf("%s@%d(%s)", d.Name, d.Version, set.sources[d.Name])
		}
		log.Info("config applied", "feeds", strings.Join(names, " "), "refused", len(errs))
		a.event(protocol.Event{Kind: protocol.EventConfigApplied, Revision: c.Revision, Reason: "running " + strings.Join(names, ", ")})
	}
	if len(errs) > 0 {
		a.refuse(log, c.Revision, errs)
	}
}

// refuse reports a config's refused feeds in the log, status and metrics.
func (a *Agent) refuse(log *slog.Logger, revision string, errs []protocol.ConfigError) {
	var parts []string
	for _, e := range errs {
		if e.Feed == "" {
			parts = append(parts, e.Error)
			continue
		}
		parts = append(parts, fmt.Sprintf("feed %s version %d: %s", e.Feed, e.Version, e.Error))
		log.Error("config feed refused; its last good version keeps running", "feed", e.Feed, "version", e.Version, "err", e.Error)
	}
	reason := strings.Join(parts, "; ")
	if errs[0].Feed == "" {
		log.Error("config refused", "err", reason)
	}
	a.m.refused.Inc()
	a.setError(fmt.Errorf("config %s refused: %s", revision, reason))
	a.event(protocol.Event{Kind: protocol.EventConfigRefused, Revision: revision, Reason: reason})
}

func sameFeeds(a, b []protocol.ConfigFeed) bool {
	return slices.EqualFunc(a, b, func(x, y protocol.ConfigFeed) bool { return x.Name == y.Name && x.SHA256 == y.SHA256 })
}

// previousFeeds adds the definitions next replaces to ps.Previous, newest first, keeping
// maxPreviousPerFeed per feed.
func previousFeeds(ps pushedState, next []protocol.ConfigFeed) []protocol.ConfigFeed {
	running := map[string]string{}
	for _, f := range next {
		running[f.Name] = f.SHA256
	}
	var out []protocol.ConfigFeed
	for _, f := range ps.Feeds {
		if running[f.Name] != f.SHA256 {
			out = append(out, f)
		}
	}
	count := map[string]int{}
	for _, f := range out {
		count[f.Name]++
	}
	for _, f := range ps.Previous {
		if running[f.Name] == f.SHA256 || count[f.Name] >= maxPreviousPerFeed {
			continue
		}
		count[f.Name]++
		out = append(out, f)
	}
	return out
}

// swapFeeds makes set current and wakes a processor waiting for feeds.
func (a *Agent) swapFeeds(set *feedSet) {
	a.feeds.Store(set)
	select {
	case a.feedsSwapped <- struct{}{}:
	default:
	}
}

// waitForFeeds blocks while the agent has no feed definitions (a fresh install that has
// not yet heard from the hub), so files wait in their folder instead of being
// quarantined as matching no feed. It reports false when ctx ends.
func (a *Agent) waitForFeeds(ctx context.Context) bool {
	logged := false
	for len(a.feeds.Load().defs) == 0 {
		if !logged {
			a.logger.Info("no feed definitions yet; waiting for the hub's config before taking files")
			logged = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-a.feedsSwapped:
		}
	}
	return true
}

// configState is the status report of pushed and running feeds.
func (a *Agent) configState() *protocol.ConfigState {
	a.cfgMu.Lock()
	ps := a.pushed
	a.cfgMu.Unlock()
	cs := &protocol.ConfigState{Applied: ps.Applied, AppliedAt: ps.AppliedAt, Refused: ps.Refused, RefusedAt: ps.RefusedAt, Errors: ps.Errors}
	set := a.feeds.Load()
	for _, d := range set.defs {
		cs.Feeds = append(cs.Feeds, protocol.RunningFeed{Name: d.Name, Version: d.Version, Source: set.sources[d.Name]})
	}
	return cs
}

// pinFeeds returns ctx carrying the feed set a file already started (f, known to
// state) must be parsed with; see resumeFeeds.
func (a *Agent) pinFeeds(ctx context.Context, f state.File) context.Context {
	if len(f.Batches) == 0 {
		return ctx
	}
	set, ok := a.resumeFeeds(f.SHA256, f.Batches)
	if !ok {
		a.logger.Warn("a feed version this file started with is no longer known; parsing it with the current one",
			"path", f.Path, "sha256", f.SHA256)
		return ctx
	}
	return context.WithValue(ctx, feedSetKey{}, set)
}

// resumeFeeds returns the feed set a file interrupted during spooling must be parsed
// with: the current set, with each feed whose recorded batch ids were made by another
// version swapped for that version (local, or from the pushed history), so the re-parse yields
// the same batch ids and nothing reaches the lake twice. ok is false when a version is
// no longer known.
func (a *Agent) resumeFeeds(sha string, batches []state.Batch) (*feedSet, bool) {
	cur := a.feeds.Load()
	a.cfgMu.Lock()
	known := append(slices.Clone(a.pushed.Feeds), a.pushed.Previous...)
	a.cfgMu.Unlock()
	swap := map[string]*feed.Definition{}
	for _, b := range batches {
		if _, done := swap[b.Feed]; done || b.Feed == protocol.ArchiveFeed {
			continue // archive chunks depend on the file's bytes only
		}
		if d := findDef(cur.defs, b.Feed); d != nil && protocol.BatchID(sha, d.Name, d.Version, b.Part) == b.ID {
			continue
		}
		var found *feed.Definition
		for _, d := range a.local {
			if d.Name == b.Feed && protocol.BatchID(sha, d.Name, d.Version, b.Part) == b.ID {
				found = d
			}
		}
		for _, f := range known {
			if found == nil && f.Name == b.Feed && protocol.BatchID(sha, f.Name, f.Version, b.Part) == b.ID {
				d, err := feed.Parse([]byte(f.Definition))
				if err != nil {
					return nil, false
				}
				found = d
			}
		}
		if found == nil {
			return nil, false
		}
		swap[b.Feed] = found
	}
	if len(swap) == 0 {
		return cur, true
	}
	s := &feedSet{normalizers: map[string]*normalize.Normalizer{}, sources: cur.sources}
	defs := slices.Clone(cur.defs)
	for i, d := range defs {
		if o, ok := swap[d.Name]; ok {
			defs[i] = o
			delete(swap, d.Name)
		}
	}
	for _, o := range swap { // no longer in the current set
		defs = append(defs, o)
	}
	for _, d := range defs {
		n, err := normalize.New(d, a.normalizeOptions())
		if err != nil {
			return nil, false
		}
		s.defs = append(s.defs, d)
		s.normalizers[d.Name] = n
	}
	return s, true
}

func findDef(defs []*feed.Definition, name string) *feed.Definition {
	for _, d := range defs {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// normalizeOptions are the options every feed's normalizer is built with. A hash
// transform's key comes from the secret store; a missing key refuses the feed instead of
// loading the values unhashed.
func (a *Agent) normalizeOptions() normalize.Options {
	return normalize.Options{BatchRows: a.cfg.BatchRows, MaxRecordBytes: a.cfg.Limits.MaxRecordBytes, Secret: secretStore(a.cfg.SecretsPath())}
}
