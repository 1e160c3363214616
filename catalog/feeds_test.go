package catalog

import (
	"context"
	"errors"
	"testing"
)

// testFeeds checks versioned feed storage on any catalog database.
func testFeeds(t *testing.T, c *Catalog) {
	t.Helper()
	ctx := context.Background()
	v1 := FeedVersion{Name: "labs_csv", Version: 1, Table: "lab_results", Definition: "name: labs_csv\nversion: 1\n", AppliedBy: "ops"}
	stamps := map[string]bool{}
	stamp := func() string {
		s, err := c.FeedsStamp(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stamps[stamp()] = true
	steps := []struct {
		name    string
		fv      FeedVersion
		applied bool
		err     error
	}{
		{"first version", v1, true, nil},
		{"same text again is a no-op", v1, false, nil},
		{"same version, other text", FeedVersion{Name: "labs_csv", Version: 1, Table: "lab_results", Definition: "changed"}, false, ErrFeedConflict},
		{"next version", FeedVersion{Name: "labs_csv", Version: 2, Table: "lab_results", Definition: "name: labs_csv\nversion: 2\n"}, true, nil},
		{"going back", v1, false, ErrFeedConflict},
		{"another feed", FeedVersion{Name: "vitals_csv", Version: 7, Table: "vitals", Definition: "v"}, true, nil},
	}
	for _, s := range steps {
		before := stamp()
		applied, err := c.ApplyFeed(ctx, s.fv)
		if applied != s.applied || !errors.Is(err, s.err) {
			t.Fatalf("%s: ApplyFeed = %v, %v; want %v, %v", s.name, applied, err, s.applied, s.err)
		}
		after := stamp()
		if applied && stamps[after] || !applied && after != before {
			t.Errorf("%s: FeedsStamp %s -> %s does not say whether a version was added", s.name, before, after)
		}
		stamps[after] = true
	}
	latest, ok, err := c.Feed(ctx, "labs_csv", 0)
	if err != nil || !ok || latest.Version != 2 || latest.SHA256 == "" || latest.AppliedAt.IsZero() {
		t.Fatalf("Feed(labs_csv, latest) = %+v, %v, %v", latest, ok, err)
	}
	if old, ok, _ := c.Feed(ctx, "labs_csv", 1); !ok || old.Definition != v1.Definition || old.AppliedBy != "ops" {
		t.Errorf("Feed(labs_csv, 1) = %+v", old)
	}
	if _, ok, _ := c.Feed(ctx, "nope", 0); ok {
		t.Error("found a feed never applied")
	}
	all, err := c.Feeds(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "labs_csv" || all[0].Version != 2 || all[1].Version != 7 {
		t.Errorf("Feeds = %+v, %v", all, err)
	}
	every, err := c.AllFeedVersions(ctx)
	if err != nil || len(every) != 3 || every[0].Version != 1 || every[1].Version != 2 || every[2].Name != "vitals_csv" {
		t.Errorf("AllFeedVersions = %+v, %v", every, err)
	}
	hist, err := c.FeedHistory(ctx, "labs_csv")
	if err != nil || len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 {
		t.Errorf("FeedHistory = %+v, %v", hist, err)
	}
}

func TestFeedsSQLite(t *testing.T) {
	c, err := Open(context.Background(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testFeeds(t, c)
}
