package catalog

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/deploy/local/stack"
)

func TestCDCStateSQLite(t *testing.T) {
	c, err := Open(t.Context(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testCDCState(t, c)
}

func TestCDCStatePostgres(t *testing.T) {
	c, err := Open(t.Context(), Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testCDCState(t, c)
}

// testCDCState walks the key state of one table through the moves a hub makes: apply
// a commit's delta, apply a dead hub's intent, refuse a change planned against a stale
// snapshot, advance over a maintenance snapshot, reset from the lake.
func testCDCState(t *testing.T, c *Catalog) {
	ctx := t.Context()
	const tbl = "patients"
	keys := func() map[string]KeyState {
		t.Helper()
		got, err := c.CDCKeys(ctx, tbl, []string{`["a"]`, `["b"]`, `["c"]`, `["none"]`})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	applied := func(want int64) {
		t.Helper()
		got, ok, err := c.CDCApplied(ctx, tbl)
		if err != nil || !ok || got != want {
			t.Fatalf("applied snapshot = %d, %v, %v; want %d", got, ok, err, want)
		}
	}
	if _, ok, err := c.CDCApplied(ctx, tbl); err != nil || ok {
		t.Fatalf("fresh table has state: %v %v", ok, err)
	}

	// A commit from the empty table (base 0) to snapshot 10, with its ledger entry.
	d1 := []KeyState{{Key: `["a"]`, Seq: 1, Hash: "h1", Live: true}, {Key: `["b"]`, Seq: 1, Hash: "h2", Live: true}}
	if err := c.WriteCDCIntent(ctx, tbl, "t1", 0, d1); err != nil {
		t.Fatal(err)
	}
	ledger := []Ledger{{BatchID: "b1", Table: tbl, SnapshotID: 10, Rows: 2, CommittedAt: time.Now()}}
	if err := c.ApplyCDCIntent(ctx, tbl, "t1", 0, 10, d1, ledger); err != nil {
		t.Fatal(err)
	}
	applied(10)
	if got, err := c.CommittedBatches(ctx, []string{"b1"}); err != nil || got["b1"].SnapshotID != 10 {
		t.Fatalf("ledger after apply: %v %v", got, err)
	}
	// Applying the same commit again is a no-op.
	if err := c.ApplyCDCIntent(ctx, tbl, "t1", 0, 10, d1, ledger); err != nil {
		t.Fatalf("re-applying: %v", err)
	}

	// A hub died after the lake commit of snapshot 11: its intent is applied by
	// another, read back from the catalog.
	d2 := []KeyState{{Key: `["a"]`, Seq: 3}, {Key: `["c"]`, Seq: 2, Hash: "h3", Live: true}}
	if err := c.WriteCDCIntent(ctx, tbl, "t2", 10, d2); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyCDCIntent(ctx, tbl, "t2", 10, 11, nil, nil); err != nil {
		t.Fatal(err)
	}
	applied(11)
	want := map[string]KeyState{
		`["a"]`: {Key: `["a"]`, Seq: 3},
		`["b"]`: {Key: `["b"]`, Seq: 1, Hash: "h2", Live: true},
		`["c"]`: {Key: `["c"]`, Seq: 2, Hash: "h3", Live: true},
	}
	if got := keys(); !maps.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}

	// A change planned against snapshot 10 is refused now.
	if err := c.ApplyCDCIntent(ctx, tbl, "t3", 10, 12, []KeyState{}, nil); !errors.Is(err, ErrCDCStateMoved) {
		t.Fatalf("stale apply: %v, want ErrCDCStateMoved", err)
	}
	// An intent that does not exist is reported as such.
	if err := c.ApplyCDCIntent(ctx, tbl, "missing", 11, 12, nil, nil); !errors.Is(err, ErrNoCDCIntent) {
		t.Fatalf("missing intent: %v, want ErrNoCDCIntent", err)
	}
	if err := c.AdvanceCDC(ctx, tbl, 11, 12); err != nil {
		t.Fatal(err)
	}
	applied(12)
	if err := c.AdvanceCDC(ctx, tbl, 11, 13); !errors.Is(err, ErrCDCStateMoved) {
		t.Fatalf("stale advance: %v, want ErrCDCStateMoved", err)
	}

	// An intent of a commit that never reached the lake expires.
	if err := c.WriteCDCIntent(ctx, tbl, "t4", 12, d1); err != nil {
		t.Fatal(err)
	}
	if n, err := c.DropStaleCDCIntents(ctx, tbl, -time.Minute); err != nil || n != 1 {
		t.Fatalf("dropped %d stale intents, %v; want 1", n, err)
	}

	// Many keys span several intent parts.
	var many []KeyState
	for i := range 2*intentPartKeys + 7 {
		many = append(many, KeyState{Key: `["k` + string(rune('a'+i%26)) + `",` + time.Duration(i).String() + `]`, Seq: int64(i), Live: true})
	}
	if err := c.WriteCDCIntent(ctx, tbl, "t5", 12, many); err != nil {
		t.Fatal(err)
	}
	got, err := c.readIntentForTest(t, "t5")
	if err != nil || len(got) != len(many) || got[len(got)-1] != many[len(many)-1] {
		t.Fatalf("intent of %d keys read back as %d, %v", len(many), len(got), err)
	}

	// Reset replaces every key.
	if err := c.ResetCDC(ctx, tbl, 20, []KeyState{{Key: `["b"]`, Seq: 9, Hash: "h9", Live: true}}); err != nil {
		t.Fatal(err)
	}
	applied(20)
	if got := keys(); !maps.Equal(got, map[string]KeyState{`["b"]`: {Key: `["b"]`, Seq: 9, Hash: "h9", Live: true}}) {
		t.Fatalf("keys after reset %v", got)
	}
}

func (c *Catalog) readIntentForTest(t *testing.T, token string) ([]KeyState, error) {
	tx, err := c.db.BeginTx(t.Context(), nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return c.readIntent(t.Context(), tx, "patients", token)
}

// FuzzIntentPayload: an intent payload read back from the catalog never panics the
// decoder, and whatever encodes decodes to the same keys.
func FuzzIntentPayload(f *testing.F) {
	f.Add(`[["[\"acme\",\"fac1\",\"A\"]",12,"00ff",true]]`, "k", int64(3), "h", true)
	f.Add(`[]`, `["x",null]`, int64(-1), "", false)
	f.Add(`[[1,2,3]]`, "", int64(0), "", false)
	f.Fuzz(func(t *testing.T, payload, key string, seq int64, hash string, live bool) {
		_, _ = decodeKeys(payload)
		in := []KeyState{{Key: key, Seq: seq, Hash: hash, Live: live}}
		enc, err := encodeKeys(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeKeys(enc)
		if err != nil || len(out) != 1 || out[0] != in[0] {
			// JSON replaces invalid UTF-8; such keys never come from the hub, which
			// encodes keys as JSON itself.
			if strings.ToValidUTF8(key, "\uFFFD") == key && strings.ToValidUTF8(hash, "\uFFFD") == hash {
				t.Fatalf("round trip of %+v: %+v, %v", in[0], out, err)
			}
		}
	})
}
