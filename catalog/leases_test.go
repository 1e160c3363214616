package catalog

import (
	"testing"
	"time"

	"github.com/medlake/medlake/deploy/local/stack"
)

func TestLeaseSQLite(t *testing.T) {
	c, err := Open(t.Context(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testLease(t, c)
}

func TestLeasePostgres(t *testing.T) {
	c, err := Open(t.Context(), Config{URI: stack.Postgres(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testLease(t, c)
}

// testLease walks one lease through claim, refusal, renewal, lapse, takeover and
// release.
func testLease(t *testing.T, c *Catalog) {
	ctx := t.Context()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		name   string
		holder string
		now    time.Time
		want   bool
		holds  string
	}{
		{"first claim", "a", t0, true, "a"},
		{"other node refused while held", "b", t0.Add(30 * time.Second), false, "a"},
		{"holder renews", "a", t0.Add(50 * time.Second), true, "a"},
		{"still refused before renewed expiry", "b", t0.Add(100 * time.Second), false, "a"},
		{"taken over after lapse", "b", t0.Add(200 * time.Second), true, "b"},
		{"old holder refused", "a", t0.Add(201 * time.Second), false, "b"},
	}
	for _, s := range steps {
		ok, err := c.ClaimLease(ctx, "maintenance", s.holder, s.now, s.now.Add(time.Minute))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if ok != s.want {
			t.Fatalf("%s: ClaimLease(%s) = %v, want %v", s.name, s.holder, ok, s.want)
		}
		l, found, err := c.LeaseState(ctx, "maintenance")
		if err != nil || !found {
			t.Fatalf("%s: LeaseState = %v, %v", s.name, found, err)
		}
		if l.Holder != s.holds {
			t.Fatalf("%s: holder %s, want %s", s.name, l.Holder, s.holds)
		}
	}
	// Releasing by a non-holder changes nothing; by the holder frees it at once.
	if err := c.ReleaseLease(ctx, "maintenance", "a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.ClaimLease(ctx, "maintenance", "a", t0.Add(202*time.Second), t0.Add(300*time.Second)); ok {
		t.Fatal("lease taken while its holder b still held it")
	}
	if err := c.ReleaseLease(ctx, "maintenance", "b"); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.ClaimLease(ctx, "maintenance", "a", t0.Add(203*time.Second), t0.Add(300*time.Second)); err != nil || !ok {
		t.Fatalf("claim after release = %v, %v; want true", ok, err)
	}
	if _, found, err := c.LeaseState(ctx, "never-claimed"); err != nil || found {
		t.Fatalf("LeaseState(never-claimed) = %v, %v; want not found", found, err)
	}
}
