package chaos

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	targets := Targets{Agents: 4, Hubs: 2, MinIONodes: 4}
	tests := []struct {
		name    string
		seed    int64
		perKind int
		phase   time.Duration
	}{
		{"short mode", 1, 10, 4 * time.Minute},
		{"one each", 7, 1, time.Minute},
		{"long run", 2026, 50, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := Plan(tt.seed, tt.perKind, tt.phase, targets)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := Plan(tt.seed, tt.perKind, tt.phase, targets)
			if !reflect.DeepEqual(plan, again) {
				t.Fatal("the same seed gave two plans")
			}
			if other, _ := Plan(tt.seed+1, tt.perKind, tt.phase, targets); reflect.DeepEqual(plan, other) {
				t.Error("another seed gave the same plan")
			}
			count := map[Kind]int{}
			slot := tt.phase / time.Duration(len(plan))
			for i, f := range plan {
				count[f.Kind]++
				if f.Seq != i+1 {
					t.Errorf("fault %d has seq %d", i, f.Seq)
				}
				if lo, hi := time.Duration(i)*slot, time.Duration(i)*slot+slot/2; f.At < lo || f.At >= hi {
					t.Errorf("%s at %s, outside [%s, %s)", f, f.At, lo, hi)
				}
				if f.Hold < 0 || f.Hold > slot/2 {
					t.Errorf("%s holds %s, more than half its %s slot", f, f.Hold, slot)
				}
				if i > 0 && f.At < plan[i-1].At+plan[i-1].Hold {
					t.Errorf("%s starts before %s is restored", f, plan[i-1])
				}
				wantPrefix := map[Kind]string{KindAgentKill: "agent-", KindHubKill: "hub-", KindMinIONodeDown: "minio-"}[f.Kind]
				switch {
				case f.Kind == KindPause && !strings.HasPrefix(f.Target, "agent-") && !strings.HasPrefix(f.Target, "hub-"):
					t.Errorf("%s pauses neither an agent nor a hub", f)
				case wantPrefix != "" && !strings.HasPrefix(f.Target, wantPrefix):
					t.Errorf("%s targets %q, want %s*", f, f.Target, wantPrefix)
				case (f.Kind == KindBrokerRestart || f.Kind == KindPostgresRestart) && f.Target != "":
					t.Errorf("%s names a target", f)
				}
			}
			for _, k := range Kinds() {
				if count[k] != tt.perKind {
					t.Errorf("%d faults of kind %s, want %d", count[k], k, tt.perKind)
				}
			}
		})
	}
}

func TestPlanRefuses(t *testing.T) {
	tests := []struct {
		name    string
		perKind int
		phase   time.Duration
		targets Targets
	}{
		{"no faults", 0, time.Minute, Targets{1, 2, 4}},
		{"no agents", 1, time.Minute, Targets{0, 2, 4}},
		{"too crowded", 100, time.Minute, Targets{1, 2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Plan(1, tt.perKind, tt.phase, tt.targets); !errors.Is(err, ErrPlan) {
				t.Errorf("Plan: %v, want ErrPlan", err)
			}
		})
	}
}

// TestShortConfig: the configuration CI runs keeps the acceptance promise (ten faults of
// each kind) and plans without error.
func TestShortConfig(t *testing.T) {
	cfg := ShortConfig(1)
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.FaultsPerKind < 10 {
		t.Errorf("short mode injects %d faults per kind, want at least 10", cfg.FaultsPerKind)
	}
	if _, err := Plan(cfg.Seed, cfg.FaultsPerKind, cfg.Duration, Targets{Agents: cfg.Agents, Hubs: cfg.Hubs, MinIONodes: 4}); err != nil {
		t.Error(err)
	}
	bad := cfg
	bad.Agents = cfg.Facilities + 1
	if err := bad.validate(); err == nil {
		t.Error("more agents than facilities accepted")
	}
	bad = cfg
	bad.Hubs = 1
	if err := bad.validate(); err == nil {
		t.Error("one hub accepted")
	}
}
