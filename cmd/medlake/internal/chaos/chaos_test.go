//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestChaos runs the harness in its short mode (ShortConfig): at least ten faults of
// each kind over at least 100,000 records, then checks nothing was lost or duplicated.
// It starts real servers and needs root; run it with
//
//	go test -tags chaos -run TestChaos -timeout 30m -v ./cmd/medlake/internal/chaos
//
// MEDLAKE_CHAOS_SEED picks another seed.
func TestChaos(t *testing.T) {
	seed := int64(1)
	if s := os.Getenv("MEDLAKE_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("MEDLAKE_CHAOS_SEED: %v", err)
		}
		seed = v
	}
	cfg := ShortConfig(seed)
	cfg.Progress = tWriter{t}
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	rep.Write(&b)
	t.Log("\n" + b.String())
	if rep.RecordsIn < 100_000 {
		t.Errorf("%d records in; the short mode promises at least 100,000", rep.RecordsIn)
	}
	for _, s := range rep.Summaries() {
		if s.Injected < 10 {
			t.Errorf("%d faults of kind %s; the short mode promises at least 10", s.Injected, s.Kind)
		}
	}
	if !rep.OK() {
		t.Errorf("lost %d, duplicated %d, records in %d, out %d: see the report", rep.Lost, rep.Duplicated, rep.RecordsIn, rep.RecordsOut)
	}
}

// tWriter sends lines to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
