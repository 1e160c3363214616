package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Kind is a kind of fault.
type Kind string

// Fault kinds. Each is injected FaultsPerKind times in a run.
const (
	// KindAgentKill kills an agent with SIGKILL and starts it again after Hold.
	KindAgentKill Kind = "agent-kill"
	// KindHubKill kills an ingest hub with SIGKILL and starts it again after Hold.
	KindHubKill Kind = "hub-kill"
	// KindBrokerRestart stops the MQTT broker (SIGTERM, so it saves its persistent
	// sessions) and starts it again on the same port after Hold.
	KindBrokerRestart Kind = "broker-restart"
	// KindMinIONodeDown kills one of the four MinIO nodes with SIGKILL and starts it
	// again after Hold; queries run against the query node meanwhile.
	KindMinIONodeDown Kind = "minio-node-down"
	// KindPostgresRestart stops the catalog's PostgreSQL (fast shutdown) and starts it
	// again after Hold.
	KindPostgresRestart Kind = "postgres-restart"
	// KindPause stops an agent or a hub with SIGSTOP and resumes it with SIGCONT after
	// Hold.
	KindPause Kind = "pause"
)

// Kinds returns every fault kind, in report order.
func Kinds() []Kind {
	return []Kind{KindAgentKill, KindHubKill, KindBrokerRestart, KindMinIONodeDown, KindPostgresRestart, KindPause}
}

// holdRange is how long each kind of fault lasts before the component is restored.
func holdRange(k Kind) (lo, hi time.Duration) {
	switch k {
	case KindAgentKill:
		return 500 * time.Millisecond, 2 * time.Second
	case KindHubKill:
		return 2 * time.Second, 6 * time.Second
	case KindBrokerRestart, KindPostgresRestart:
		return 0, time.Second
	case KindMinIONodeDown:
		return 3 * time.Second, 8 * time.Second
	case KindPause:
		return 2 * time.Second, 5 * time.Second
	}
	return 0, 0
}

// Targets are how many components of each kind a run has.
type Targets struct {
	Agents     int
	Hubs       int
	MinIONodes int
}

// Fault is one planned fault.
type Fault struct {
	Seq  int  // 1-based position in the schedule
	Kind Kind // what happens
	// Target names the component: agent-N, hub-N or minio-N (1-based); empty for the
	// broker and PostgreSQL, of which there is one.
	Target string
	// At is when the fault starts, from the start of the fault phase. A fault never
	// starts before the previous one is restored.
	At time.Duration
	// Hold is how long the component stays down or paused.
	Hold time.Duration
}

func (f Fault) String() string {
	if f.Target == "" {
		return fmt.Sprintf("#%d %s (hold %s)", f.Seq, f.Kind, f.Hold.Round(time.Millisecond))
	}
	return fmt.Sprintf("#%d %s %s (hold %s)", f.Seq, f.Kind, f.Target, f.Hold.Round(time.Millisecond))
}

// ErrPlan is wrapped by every error Plan returns.
var ErrPlan = errors.New("invalid fault plan")

// Plan returns the faults of a run: perKind faults of every kind in a seeded random
// order, spread over phase, one slot each, starting at a random point in the first
// half of its slot. Holds are drawn from each kind's range and capped at half a slot,
// so a fault is restored before the next one is due. The same arguments always give
// the same plan.
func Plan(seed int64, perKind int, phase time.Duration, t Targets) ([]Fault, error) {
	return PlanKinds(seed, perKind, phase, t, Kinds())
}

// PlanKinds is Plan with faults of the given kinds only.
func PlanKinds(seed int64, perKind int, phase time.Duration, t Targets, kinds []Kind) ([]Fault, error) {
	switch {
	case len(kinds) == 0:
		return nil, fmt.Errorf("%w: no fault kinds", ErrPlan)
	case perKind < 1:
		return nil, fmt.Errorf("%w: %d faults per kind; want at least 1", ErrPlan, perKind)
	case t.Agents < 1 || t.Hubs < 1 || t.MinIONodes < 1:
		return nil, fmt.Errorf("%w: %d agents, %d hubs, %d MinIO nodes; want at least one of each", ErrPlan, t.Agents, t.Hubs, t.MinIONodes)
	}
	n := perKind * len(kinds)
	slot := phase / time.Duration(n)
	if slot < time.Second {
		return nil, fmt.Errorf("%w: %d faults in %s leave %s each; want at least 1s", ErrPlan, n, phase, slot)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6368616f73)) // "chaos"
	order := make([]Kind, 0, n)
	for _, k := range kinds {
		for range perKind {
			order = append(order, k)
		}
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	faults := make([]Fault, n)
	for i, k := range order {
		lo, hi := holdRange(k)
		hold := lo
		if hi > lo {
			hold += time.Duration(rng.Int64N(int64(hi - lo)))
		}
		hold = min(hold, slot/2)
		f := Fault{
			Seq:  i + 1,
			Kind: k,
			At:   time.Duration(i)*slot + time.Duration(rng.Int64N(int64(slot/2))),
			Hold: hold.Round(time.Millisecond),
		}
		switch k {
		case KindAgentKill:
			f.Target = fmt.Sprintf("agent-%d", 1+rng.IntN(t.Agents))
		case KindHubKill:
			f.Target = fmt.Sprintf("hub-%d", 1+rng.IntN(t.Hubs))
		case KindMinIONodeDown:
			f.Target = fmt.Sprintf("minio-%d", 1+rng.IntN(t.MinIONodes))
		case KindPause:
			if j := rng.IntN(t.Agents + t.Hubs); j < t.Hubs {
				f.Target = fmt.Sprintf("hub-%d", j+1)
			} else {
				f.Target = fmt.Sprintf("agent-%d", j-t.Hubs+1)
			}
		}
		faults[i] = f
	}
	return faults, nil
}
