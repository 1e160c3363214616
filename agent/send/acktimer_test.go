package send

import (
	"testing"
	"time"
)

func TestAckTimer(t *testing.T) {
	const floor, ceiling = 5 * time.Second, 2 * time.Minute
	tests := []struct {
		name    string
		samples []time.Duration
		jitter  float64 // 0.5 is none
		sends   int
		want    time.Duration
	}{
		{"no sample yet: the floor", nil, 0.5, 1, floor},
		{"a hub committing every second: the floor", []time.Duration{time.Second, 1200 * time.Millisecond, 900 * time.Millisecond, time.Second}, 0.5, 1, floor},
		{"a slow hub stretches the timeout", []time.Duration{20 * time.Second, 20 * time.Second, 20 * time.Second}, 0.5, 1, 0},
		{"first re-send: the same wait", nil, 0.5, 2, floor},
		{"second re-send doubles", nil, 0.5, 3, 2 * floor},
		{"third re-send doubles again", nil, 0.5, 4, 4 * floor},
		{"jitter low end", nil, 0, 3, 8 * time.Second},
		{"jitter high end", nil, 0.999999, 3, 12 * time.Second},
		{"backoff capped", nil, 0.5, 40, ceiling},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := newAckTimer(floor, ceiling)
			at.jitter = func() float64 { return tt.jitter }
			for _, s := range tt.samples {
				at.observe(s)
			}
			got := at.timeout(tt.sends)
			if tt.want == 0 {
				// srtt 20 s, rttvar shrinking from 10 s: well above the floor, below the cap.
				if got <= 20*time.Second || got >= ceiling {
					t.Fatalf("timeout = %s, want between 20 s and %s", got, ceiling)
				}
				return
			}
			if d := got - tt.want; d < -time.Millisecond || d > time.Millisecond {
				t.Fatalf("timeout = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestAckTimerCeilingBelowFloor: a floor above the cap wins (a test's "never re-send").
func TestAckTimerCeilingBelowFloor(t *testing.T) {
	at := newAckTimer(10*time.Minute, 2*time.Minute)
	if got := at.timeout(1); got != 10*time.Minute {
		t.Fatalf("timeout = %s, want the 10m floor", got)
	}
}

// TestBackoffLevel: re-sends back off while no later-sent batch of the same table is
// acked, and start over when one is (the copy was lost, the table's hubs work).
func TestBackoffLevel(t *testing.T) {
	sent := time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)
	tests := []struct {
		name      string
		f         flight // after the sends counted so far, this one included
		ackedSent time.Time
		want      int
	}{
		{"first send", flight{sends: 1}, time.Time{}, 1},
		{"first re-send, nothing later acked", flight{sends: 2, level: 1, sentAt: sent}, sent.Add(-time.Second), 2},
		{"third send, nothing later acked", flight{sends: 3, level: 2, sentAt: sent}, time.Time{}, 3},
		{"sixth send, nothing later acked", flight{sends: 6, level: 5, sentAt: sent}, sent.Add(-time.Minute), 6},
		{"sixth send, a later batch of the table acked", flight{sends: 6, level: 5, sentAt: sent}, sent.Add(time.Second), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.nextLevel(tt.ackedSent); got != tt.want {
				t.Fatalf("level = %d, want %d", got, tt.want)
			}
		})
	}
}
