package catalog

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Feed definitions live in the catalog with every version ever applied, so the hub and
// the agents run one agreed definition and history says which version read which file.
// The catalog stores a definition's text as given; checking it is the feed package's
// job, done by the caller before ApplyFeed.
// ErrFeedConflict: the definition cannot be applied as it stands (a version already
// applied with other content, or older than the newest).
var ErrFeedConflict = errors.New("feed version conflict")

// FeedVersion is one applied version of a feed definition.
type FeedVersion struct {
	Name       string
	Version    int
	Table      string
	Definition string // as applied (YAML)
	SHA256     string // of Definition
	AppliedAt  time.Time
	AppliedBy  string
}

// ApplyFeed records a new version of a feed. Applying the exact text of an existing
// version changes nothing and reports applied=false, so apply is safe to repeat.
// A version number must grow: re-using one with other content, or going back, is
// ErrFeedConflict, because agents and the rows they wrote name the version.
func (c *Catalog) ApplyFeed(ctx context.Context, fv FeedVersion) (applied bool, err error) {
	sum := sha256.Sum256([]byte(fv.Definition))
	fv.SHA256 = hex.EncodeToString(sum[:])
	latest, ok, err := c.Feed(ctx, fv.Name, 0)
	if err != nil {
		return false, err
	}
	if ok {
		switch {
		case fv.Version == latest.Version && fv.SHA256 == latest.SHA256:
			return false, nil
		case fv.Version == latest.Version:
			return false, fmt.Errorf("feed %s version %d is already applied with other content; give the change a new version: %w", fv.Name, fv.Version, ErrFeedConflict)
		case fv.Version < latest.Version:
			return false, fmt.Errorf("feed %s version %d is older than the current version %d; to roll back, apply the old text as a new version: %w", fv.Name, fv.Version, latest.Version, ErrFeedConflict)
		}
	}
	p := c.placeholder
	res, err := c.db.ExecContext(ctx, `INSERT INTO medlake_feeds (name, version, table_name, definition, sha256, applied_at, applied_by) VALUES (`+
		p(1)+`, `+p(2)+`, `+p(3)+`, `+p(4)+`, `+p(5)+`, `+p(6)+`, `+p(7)+`) ON CONFLICT DO NOTHING`,
		fv.Name, fv.Version, fv.Table, fv.Definition, fv.SHA256, time.Now().UnixMicro(), fv.AppliedBy)
	if err != nil {
		return false, fmt.Errorf("recording feed %s version %d: %w", fv.Name, fv.Version, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		// Someone applied this version between our read and our insert.
		got, _, err := c.Feed(ctx, fv.Name, fv.Version)
		if err != nil {
			return false, err
		}
		if got.SHA256 == fv.SHA256 {
			return false, nil
		}
		return false, fmt.Errorf("feed %s version %d was just applied with other content: %w", fv.Name, fv.Version, ErrFeedConflict)
	}
	return true, nil
}

const feedColumns = `name, version, table_name, definition, sha256, applied_at, applied_by`

// Feed returns one version of a feed; version 0 means the newest.
func (c *Catalog) Feed(ctx context.Context, name string, version int) (FeedVersion, bool, error) {
	q := `SELECT ` + feedColumns + ` FROM medlake_feeds WHERE name = ` + c.placeholder(1)
	args := []any{name}
	if version > 0 {
		q += ` AND version = ` + c.placeholder(2)
		args = append(args, version)
	}
	q += ` ORDER BY version DESC LIMIT 1`
	fvs, err := c.queryFeeds(ctx, q, args...)
	if err != nil || len(fvs) == 0 {
		return FeedVersion{}, false, err
	}
	return fvs[0], true, nil
}

// Feeds returns the newest version of every feed, by name.
func (c *Catalog) Feeds(ctx context.Context) ([]FeedVersion, error) {
	return c.queryFeeds(ctx, `SELECT `+feedColumns+` FROM medlake_feeds f
WHERE version = (SELECT max(version) FROM medlake_feeds g WHERE g.name = f.name) ORDER BY name`)
}

// FeedHistory returns every version of a feed, oldest first.
func (c *Catalog) FeedHistory(ctx context.Context, name string) ([]FeedVersion, error) {
	return c.queryFeeds(ctx, `SELECT `+feedColumns+` FROM medlake_feeds WHERE name = `+c.placeholder(1)+` ORDER BY version`, name)
}

func (c *Catalog) queryFeeds(ctx context.Context, q string, args ...any) ([]FeedVersion, error) {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading feed definitions: %w", err)
	}
	defer rows.Close()
	var out []FeedVersion
	for rows.Next() {
		var fv FeedVersion
		var at int64
		if err := rows.Scan(&fv.Name, &fv.Version, &fv.Table, &fv.Definition, &fv.SHA256, &at, &fv.AppliedBy); err != nil {
			return nil, fmt.Errorf("reading feed definitions: %w", err)
		}
		fv.AppliedAt = time.UnixMicro(at).UTC()
		out = append(out, fv)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading feed definitions: %w", err)
	}
	return out, nil
}

// AllFeedVersions returns every version of every feed, by name then version. The hub
// validates each batch against the version that made it.
func (c *Catalog) AllFeedVersions(ctx context.Context) ([]FeedVersion, error) {
	return c.queryFeeds(ctx, `SELECT `+feedColumns+` FROM medlake_feeds ORDER BY name, version`)
}

// FeedsStamp returns a value that changes whenever a feed version is applied: feed
// versions are only ever added, so their count and newest apply time name the state.
// It is one cheap query, for polling.
func (c *Catalog) FeedsStamp(ctx context.Context) (string, error) {
	var n, at int64
	err := c.db.QueryRowContext(ctx, `SELECT count(*), coalesce(max(applied_at), 0) FROM medlake_feeds`).Scan(&n, &at)
	if err != nil {
		return "", fmt.Errorf("reading feed definitions stamp: %w", err)
	}
	return fmt.Sprintf("%d/%d", n, at), nil
}
