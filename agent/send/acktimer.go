package send

import (
	"math/rand/v2"
	"time"
)

// ackTimer decides how long a batch waits for the hub's ack before it is re-sent.
//
// The first wait is derived from the ack latency observed so far, as TCP derives its
// retransmission timeout from round trips (RFC 6298): srtt + 4·rttvar, clamped to
// [floor, ceiling]. A hub that commits every second gives the floor; one that slows
// down under load stretches the timeout instead of drawing re-sends. Only batches acked
// after a single send are sampled (Karn's rule: the ack of a re-sent batch may answer
// either copy).
//
// While no batch of the same table sent after it is acked (the table's hubs are down or
// slow), each further re-send of a batch waits twice as long as the one before, from the
// second re-send on, with ±20% jitter so that agents that lost the same hub do not
// re-send in step, capped at the ceiling. When a later batch of the same table is
// acked, the table's hubs work and this copy was lost (a hub died holding it): the
// Sender re-sends it again after one jittered base wait. Acks of other tables do not
// count: a table that commits slowly would otherwise have its batches re-sent every
// base wait while faster tables are acked. Re-sends are safe (the hub acknowledges a
// batch it has already committed from its ledger, without writing it again); the backoff
// keeps a slow-but-alive hub from being flooded with copies. The in-flight window bounds
// how many batches wait at once.
//
// Not safe for concurrent use: the Sender guards it with its mutex.
type ackTimer struct {
	floor, ceiling time.Duration
	srtt, rttvar   time.Duration  // zero until the first sample
	jitter         func() float64 // in [0, 1)
}

func newAckTimer(floor, ceiling time.Duration) *ackTimer {
	return &ackTimer{floor: floor, ceiling: max(ceiling, floor), jitter: rand.Float64}
}

// observe records the latency of a batch acked after one send.
func (t *ackTimer) observe(d time.Duration) {
	if d <= 0 {
		return
	}
	if t.srtt == 0 {
		t.srtt, t.rttvar = d, d/2
		return
	}
	diff := t.srtt - d
	if diff < 0 {
		diff = -diff
	}
	t.rttvar = (3*t.rttvar + diff) / 4
	t.srtt = (7*t.srtt + d) / 8
}

// base is the first wait for a batch.
func (t *ackTimer) base() time.Duration {
	return min(max(t.srtt+4*t.rttvar, t.floor), t.ceiling)
}

// timeout is the wait after a send at backoff level (1: the first send, 2: the first
// re-send, each level above doubles).
func (t *ackTimer) timeout(level int) time.Duration {
	d := t.base()
	if level <= 1 {
		return d
	}
	for i := 2; i < level && d < t.ceiling; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*t.jitter()))
	return min(max(d, t.floor), t.ceiling)
}
