package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// Roles a node can run, as `serve --roles=ingest,query`. RoleAll is their union.
const (
	RoleIngest   = "ingest"
	RoleQuery    = "query"
	RoleMaintain = "maintain"
	RoleAll      = "all"
)

// Internal modules; roles pull them in through moduleDeps.
const (
	modCatalog  = "catalog"
	modBroker   = "broker"
	modIngest   = RoleIngest
	modQuery    = RoleQuery
	modMaintain = RoleMaintain
)

// moduleDeps is the fixed dependency table: a module starts after what it lists and
// stops before it.
func moduleDeps() map[string][]string {
	return map[string][]string{
		modCatalog:  nil,
		modBroker:   nil,
		modIngest:   {modCatalog, modBroker},
		modQuery:    {modCatalog},
		modMaintain: {modCatalog},
	}
}

// parseRoles turns "ingest,query" or "all" into a sorted role list.
func parseRoles(s string) ([]string, error) {
	var roles []string
	for r := range strings.SplitSeq(s, ",") {
		switch r = strings.TrimSpace(r); r {
		case RoleAll:
			roles = append(roles, RoleIngest, RoleQuery, RoleMaintain)
		case RoleIngest, RoleQuery, RoleMaintain:
			roles = append(roles, r)
		case "":
		default:
			return nil, fmt.Errorf("unknown role %q (want %s, %s, %s or %s)", r, RoleIngest, RoleQuery, RoleMaintain, RoleAll)
		}
	}
	if len(roles) == 0 {
		return nil, errors.New("no roles given")
	}
	slices.Sort(roles)
	return slices.Compact(roles), nil
}

// startOrder lists the modules the roles need, each after its dependencies.
func startOrder(roles []string) []string {
	deps := moduleDeps()
	var order []string
	var visit func(m string)
	visit = func(m string) {
		if slices.Contains(order, m) {
			return
		}
		for _, d := range deps[m] {
			visit(d)
		}
		order = append(order, m)
	}
	for _, r := range roles {
		visit(r)
	}
	return order
}

// service is a running component: Run blocks until ctx ends or it fails.
type service interface {
	Run(ctx context.Context) error
}

// readier is implemented by services that take a while to become useful (bind a
// listener, connect to the broker).
type readier interface {
	Ready() <-chan struct{}
}

// group runs services started in order and stops them in reverse order: a module's
// dependents have stopped before it is asked to. The first failure stops them all.
type group struct {
	logger *slog.Logger

	mu      sync.Mutex // guards members
	members []*member
	failed  chan struct{} // closed on the first failure
	once    sync.Once
	err     error // first failure; written once under once
}

type member struct {
	name   string
	svc    service
	cancel context.CancelFunc
	done   chan struct{}
}

func newGroup(logger *slog.Logger) *group {
	return &group{logger: logger, failed: make(chan struct{})}
}

// start runs svc in its own goroutine, owned by the group until stop. svc's context
// carries values' values (the object store's shared connections) but is cancelled
// only by stop.
func (g *group) start(values context.Context, name string, svc service) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(values))
	m := &member{name: name, svc: svc, cancel: cancel, done: make(chan struct{})}
	g.mu.Lock()
	g.members = append(g.members, m)
	g.mu.Unlock()
	go func() {
		defer close(m.done)
		err := svc.Run(ctx)
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("stopped unexpectedly")
			}
			g.fail(fmt.Errorf("%s: %w", name, err))
		}
	}()
}

func (g *group) fail(err error) {
	g.once.Do(func() {
		g.err = err
		close(g.failed)
	})
}

// wait blocks until ctx ends or a member fails.
func (g *group) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-g.failed:
		return g.err
	}
}

// stop stops members newest first, waiting for each.
func (g *group) stop() {
	g.mu.Lock()
	members := g.members
	g.members = nil
	g.mu.Unlock()
	for _, m := range slices.Backward(members) {
		m.cancel()
		<-m.done
		g.logger.Info("module stopped", "module", m.name)
	}
}

// ready reports whether every member that can tell is ready.
func (g *group) ready() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.members {
		if r, ok := m.svc.(readier); ok {
			select {
			case <-r.Ready():
			default:
				return false
			}
		}
	}
	return true
}
