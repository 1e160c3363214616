package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/hub/replay"
)

const replayUsage = `Usage: medlake replay --feed NAME --since 720h|2026-03-01T00:00:00Z [--until TIME] [flags]

Re-reads the raw archives of a feed kept in the warehouse with the feed's newest
definition and replaces the rows they gave the feed's table, one Iceberg commit per
group of archives: the rows of those archives from that feed (_feed, _source_sha256)
are deleted and the new rows added in the same snapshot. Running it again changes
nothing. Archives are chosen by when the hub stored them. An archive whose new parse
rejects any row, or that is missing or fails its SHA-256, keeps its rows and is listed;
the command then exits non-zero. Columns the definition adds are added to the table.
`

func runReplay(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		feedName, since, until, secrets string
		perCommit                       int
		dryRun, quiet                   bool
	)
	cfg, rest, err := loadConfig("replay", replayUsage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&cfg.Catalog.URI, "catalog", cfg.Catalog.URI, `metadata database: "" (SQLite under data-dir), sqlite:///path.db or postgres://...`)
		fs.StringVar(&cfg.Catalog.Warehouse, "warehouse", cfg.Catalog.Warehouse, "table storage: a directory (default data-dir/warehouse) or s3://bucket/prefix")
		fs.StringVar(&cfg.Catalog.S3Endpoint, "s3-endpoint", cfg.Catalog.S3Endpoint, "S3/MinIO endpoint URL for an s3:// warehouse")
		fs.StringVar(&feedName, "feed", "", "the feed to replay (its newest definition is used)")
		fs.StringVar(&since, "since", "", "archives stored since this long ago (720h) or this time (RFC 3339)")
		fs.StringVar(&until, "until", "", "archives stored before this long ago or this time (default: now)")
		fs.StringVar(&secrets, "secrets", "", "folder of the secrets the feed names (zip passwords, hash keys), as on the agent")
		fs.IntVar(&perCommit, "per-commit", 32, "archives replaced by one commit")
		fs.BoolVar(&dryRun, "dry-run", false, "read and check every archive, commit nothing")
		fs.BoolVar(&quiet, "quiet", false, "no progress bar")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("replay: unexpected arguments: %v", rest)
	}
	if feedName == "" || since == "" {
		return errors.New("replay: --feed and --since are required")
	}
	now := time.Now()
	rc := replay.Config{Feed: feedName, SecretsDir: secrets, PerCommit: perCommit, DryRun: dryRun}
	if rc.Since, err = parseTimeFlag("since", since, now); err != nil {
		return err
	}
	if until != "" {
		if rc.Until, err = parseTimeFlag("until", until, now); err != nil {
			return err
		}
	}
	if !quiet {
		var bar *progressbar.ProgressBar
		rc.Progress = func(done, total int64) {
			if bar == nil {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("replaying "+feedName), progressbar.OptionShowBytes(true),
					progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			}
			_ = bar.Set64(done)
		}
	}
	cat, err := catalog.Open(ctx, cfg.Catalog)
	if err != nil {
		return fmt.Errorf("opening catalog: %w", err)
	}
	defer cat.Close()
	res, err := replay.Run(cat.WithObjectStore(ctx), cat, rc, newLogger(cfg))
	what := "replayed"
	if dryRun {
		what = "checked (dry run)"
	}
	fmt.Fprintf(stdout, "feed %s version %d, table %s: %d archives found, %d %s, %d rows, %d commits\n",
		res.Feed, res.FeedVersion, res.Table, res.Archives, res.Replayed, what, res.RowsWritten, res.Commits)
	if len(res.AddedColumns) > 0 {
		fmt.Fprintf(stdout, "columns added to %s: %v\n", res.Table, res.AddedColumns)
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(stdout, "kept as it was: %s %s: %s\n", s.SHA256, s.File, s.Reason)
	}
	if err != nil {
		return err
	}
	if len(res.Skipped) > 0 {
		return fmt.Errorf("replay: %d archives kept their rows as they were", len(res.Skipped))
	}
	return nil
}

// parseTimeFlag reads a duration back from now or an RFC 3339 time.
func parseTimeFlag(name, s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--%s %s: want a positive duration", name, s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want a duration (24h) or an RFC 3339 time", name, s)
	}
	return t, nil
}
