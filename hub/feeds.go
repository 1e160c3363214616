package hub

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// The hub takes feed definitions from the catalog (medlake feeds apply), never from
// files alone: feeds_dir, when set, is only seed input applied to the catalog at start.
// It reloads the catalog when it changes (polled every feeds_poll_interval, and at once
// when a batch names a feed version it does not know yet) and pushes the newest version
// of every feed to every agent on the agent's config topic, retained.
//
// Assignment: every agent gets every current feed. The catalog has no per-tenant or
// per-facility assignment yet; an agent runs only the feeds whose match rules find its
// files, so an unused feed costs it nothing. Restricting feeds to tenants or facilities
// would be a catalog table consulted where the config is built (configFor).
//
// Agents are not known in advance: the hub learns them from their retained status and
// publishes to an agent whose status names neither the current revision as applied nor
// as refused. Every hub sees every status, so several hubs may publish the same
// retained config; it is the same message, and agents ignore a revision they handled.

const (
	// minRefreshGap bounds reloads triggered by batches naming an unknown feed version.
	minRefreshGap = time.Second
	// configRepushAfter is how long an agent's status may go on naming an older config
	// before the hub publishes the current one to it again (a publish lost with a
	// broker failover).
	configRepushAfter = 2 * time.Minute
)

// feedState is the hub's view of the catalog's feeds, swapped whole.
type feedState struct {
	*feeds
	stamp   string
	config  protocol.Config // newest version of every feed
	payload []byte          // config encoded; nil when the catalog has no feeds
}

// seedFeeds applies the definitions in dir to the catalog. A definition the catalog
// already has, or has a newer version of, is left as the catalog has it.
func seedFeeds(ctx context.Context, cat *catalog.Catalog, dir string, log *slog.Logger) error {
	fsys := os.DirFS(dir)
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("reading feed definitions in %s: %w", dir, err)
	}
	type seed struct {
		def  *feed.Definition
		text []byte
		file string
	}
	var seeds []seed
	var defs []*feed.Definition
	for _, e := range entries {
		if ext := path.Ext(e.Name()); e.IsDir() || ext != ".yaml" && ext != ".yml" {
			continue
		}
		text, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return fmt.Errorf("reading feed definition %s/%s: %w", dir, e.Name(), err)
		}
		d, err := feed.Parse(text)
		if err != nil {
			return fmt.Errorf("feed definition %s/%s: %w", dir, e.Name(), err)
		}
		seeds = append(seeds, seed{d, text, e.Name()})
		defs = append(defs, d)
	}
	if err := feed.CheckTables(defs); err != nil {
		return fmt.Errorf("feed definitions in %s: %w", dir, err)
	}
	for _, s := range seeds {
		applied, err := cat.ApplyFeed(ctx, catalog.FeedVersion{Name: s.def.Name, Version: s.def.Version, Table: s.def.Table,
			Definition: string(s.text), AppliedBy: "feeds_dir " + dir})
		switch {
		case errors.Is(err, catalog.ErrFeedConflict):
			log.Warn("feeds_dir definition not applied; the catalog's stays", "file", path.Join(dir, s.file), "feed", s.def.Name, "version", s.def.Version, "err", err)
		case err != nil:
			return fmt.Errorf("seeding feed %s from %s/%s: %w", s.def.Name, dir, s.file, err)
		case applied:
			log.Info("feed applied from feeds_dir", "file", path.Join(dir, s.file), "feed", s.def.Name, "version", s.def.Version)
		}
	}
	return nil
}

// loadFeeds reads every feed version from the catalog. A version that no longer
// parses (a stricter hub release) is left out and logged; batches naming it are
// rejected with the reason.
func (in *Ingester) loadFeeds(ctx context.Context) (*feedState, error) {
	stamp, err := in.cat.FeedsStamp(ctx)
	if err != nil {
		return nil, err
	}
	fvs, err := in.cat.AllFeedVersions(ctx)
	if err != nil {
		return nil, err
	}
	var defs []*feed.Definition
	texts := map[feedKey]string{}
	for _, fv := range fvs {
		d, err := feed.Parse([]byte(fv.Definition))
		if err == nil && (d.Name != fv.Name || d.Version != fv.Version) {
			err = fmt.Errorf("text declares feed %s version %d", d.Name, d.Version)
		}
		if err != nil {
			in.log.Error("skipping catalog feed version that does not parse", "feed", fv.Name, "version", fv.Version, "err", err)
			continue
		}
		defs = append(defs, d)
		texts[feedKey{d.Name, d.Version}] = fv.Definition
	}
	idx, err := indexFeeds(defs)
	if err != nil {
		return nil, fmt.Errorf("feed definitions in the catalog: %w", err)
	}
	st := &feedState{feeds: idx, stamp: stamp}
	var newest time.Time
	for _, fv := range fvs {
		if d := idx.byName[fv.Name]; d != nil && d.Version == fv.Version {
			st.config.Feeds = append(st.config.Feeds, protocol.NewConfigFeed(fv.Name, fv.Version, texts[feedKey{fv.Name, fv.Version}]))
			if fv.AppliedAt.After(newest) {
				newest = fv.AppliedAt
			}
		}
	}
	st.config.Revision = protocol.ConfigRevision(st.config.Feeds)
	st.config.Time = newest // the same on every hub, so their messages are identical
	if len(st.config.Feeds) > 0 {
		if st.payload, err = protocol.EncodeConfig(st.config); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// refreshFeeds reloads the catalog's feeds when its stamp changed (or force), and
// pushes a new config to every known agent when the newest versions changed. It
// reports whether anything changed.
func (in *Ingester) refreshFeeds(ctx context.Context, force bool) (bool, error) {
	in.refreshMu.Lock()
	defer in.refreshMu.Unlock()
	in.lastRefresh = time.Now()
	cur := in.fs.Load()
	if !force {
		stamp, err := in.cat.FeedsStamp(ctx)
		if err != nil {
			return false, err
		}
		if cur != nil && stamp == cur.stamp {
			return false, nil
		}
	}
	st, err := in.loadFeeds(ctx)
	if err != nil {
		return false, err
	}
	in.fs.Store(st)
	in.m.feedVersions.Set(float64(len(st.versions)))
	if cur != nil && cur.config.Revision == st.config.Revision {
		return false, nil
	}
	names := make([]string, len(st.config.Feeds))
	for i, f := range st.config.Feeds {
		names[i] = fmt.Sprintf("%s@%d", f.Name, f.Version)
	}
	in.log.Info("feed definitions loaded from the catalog", "revision", st.config.Revision, "feeds", strings.Join(names, " "),
		"versions", len(st.versions), "tables", len(st.byTable))
	if cur != nil {
		in.pushToKnownAgents()
	}
	return true, nil
}

// refreshForUnknown reloads the catalog for a batch naming a feed version or table the
// hub does not know, at most once per minRefreshGap: an agent may have been sent a
// version by another hub before this one polled.
func (in *Ingester) refreshForUnknown(ctx context.Context) bool {
	in.refreshMu.Lock()
	recent := time.Since(in.lastRefresh) < minRefreshGap
	in.refreshMu.Unlock()
	if recent {
		return false
	}
	changed, err := in.refreshFeeds(ctx, false)
	if err != nil {
		in.log.Warn("reloading feed definitions failed", "err", err)
	}
	return changed
}

// runFeedRefresh polls the catalog until ctx is done.
func (in *Ingester) runFeedRefresh(ctx context.Context) {
	t := time.NewTicker(in.cfg.FeedsPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := in.refreshFeeds(ctx, false); err != nil && ctx.Err() == nil {
				in.m.feedRefreshFailures.Inc()
				in.log.Warn("reloading feed definitions failed; keeping the loaded ones", "err", err)
			}
		}
	}
}

// knownAgent is an agent the hub learned from its status.
type knownAgent struct {
	topic    protocol.Topic
	pushed   string // revision this hub last published to it
	pushedAt time.Time
	status   protocol.Status // the last status received
	seen     time.Time       // when it was received (hub clock)
}

// noteAgent records an agent's status and pushes the current config to it unless its
// status says it already handled it.
func (in *Ingester) noteAgent(t protocol.Topic, s protocol.Status) {
	st := in.fs.Load()
	key := t.Tenant + "/" + t.Facility + "/" + t.Agent
	in.agentsMu.Lock()
	ka, ok := in.agents[key]
	if !ok {
		ka = &knownAgent{topic: protocol.Topic{Tenant: t.Tenant, Facility: t.Facility, Agent: t.Agent, Kind: protocol.KindConfig}}
		in.agents[key] = ka
	}
	ka.status, ka.seen = s, time.Now()
	ka.status.Events = nil // logged and counted on arrival; the fleet view needs none
	want := st.config.Revision
	handled := s.Config != nil && (s.Config.Applied == want || s.Config.Refused == want)
	if handled {
		ka.pushed = want
	}
	// An agent without config state in its status predates config messages: one
	// publish is enough, it waits retained for the agent's upgrade.
	stale := s.Config != nil && time.Since(ka.pushedAt) > configRepushAfter
	push := st.payload != nil && !handled && (ka.pushed != want || stale)
	if push {
		ka.pushed, ka.pushedAt = want, time.Now()
	}
	in.agentsMu.Unlock()
	if push {
		in.publishConfig(ka.topic, st)
	}
}

// pushToKnownAgents publishes the current config to every agent seen so far.
func (in *Ingester) pushToKnownAgents() {
	st := in.fs.Load()
	if st.payload == nil {
		return
	}
	in.agentsMu.Lock()
	var topics []protocol.Topic
	for _, ka := range in.agents {
		if ka.pushed != st.config.Revision {
			ka.pushed, ka.pushedAt = st.config.Revision, time.Now()
			topics = append(topics, ka.topic)
		}
	}
	in.agentsMu.Unlock()
	slices.SortFunc(topics, func(a, b protocol.Topic) int { return strings.Compare(a.String(), b.String()) })
	for _, t := range topics {
		in.publishConfig(t, st)
	}
}

// publishConfig publishes retained at QoS 1 without waiting for the PUBACK, for the same
// reason publishAcks does not wait; a lost publish is repeated when the agent's status
// still names an older config after configRepushAfter.
func (in *Ingester) publishConfig(t protocol.Topic, st *feedState) {
	in.mu.Lock()
	client := in.client
	in.mu.Unlock()
	if client == nil {
		return
	}
	client.Publish(t.String(), 1, true, st.payload)
	in.m.configPublishes.Inc()
	in.log.Info("config pushed to agent", "tenant", t.Tenant, "facility", t.Facility, "agent", t.Agent, "revision", st.config.Revision)
}
