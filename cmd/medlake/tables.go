package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/hub/maintain"
)

const tablesUsage = `Usage: medlake tables [command] [flags] [TABLE]

Flags come before the table name.

Commands:
  list (the default)      every table: data files and bytes, delete files, small files,
                          snapshots, last commit, last compaction and health (what
                          scheduled maintenance would fix, or ok)
  show TABLE              one table's statistics in full
  compact [--quiet] TABLE compact small files per partition now, applying and dropping
                          delete files and sorting rows by facility and time; safe
                          while ingest commits
  expire TABLE            expire snapshots past the retention now (the newest
                          maintenance.retain_last are kept, and all younger than
                          maintenance.max_snapshot_age), deleting the files only they
                          referenced
  clean [--dry-run] TABLE remove files in the table's location that nothing references
                          and that are older than maintenance.orphan_min_age

Settings come from the maintenance section of the configuration (--config FILE,
MEDLAKE_MAINTENANCE_*, e.g. MEDLAKE_MAINTENANCE_RETAIN_LAST=20), as for the maintain
role of medlake serve, which runs all three on a schedule.
`

func runTables(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "list"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var (
		quiet, dryRun bool
		bind          func(*flag.FlagSet)
	)
	switch cmd {
	case "help":
		fmt.Fprint(stdout, tablesUsage)
		return nil
	case "compact":
		bind = func(fs *flag.FlagSet) { fs.BoolVar(&quiet, "quiet", false, "no progress bar") }
	case "clean":
		bind = func(fs *flag.FlagSet) { fs.BoolVar(&dryRun, "dry-run", false, "only list what would be removed") }
	case "list", "show", "expire":
	default:
		fmt.Fprint(os.Stderr, tablesUsage)
		return fmt.Errorf("tables: unknown command %q", cmd)
	}
	cfg, cat, rest, err := openMaintenanceCmd(ctx, "tables "+cmd, args, bind)
	if err != nil {
		return err
	}
	defer cat.Close()
	tables := maintain.CatalogTables(cat)
	if cmd == "list" {
		if len(rest) > 0 {
			return fmt.Errorf("tables list: takes no table name (use tables show %s)", rest[0])
		}
		return listTables(ctx, stdout, cat, cfg)
	}
	if len(rest) != 1 {
		return fmt.Errorf("tables %s: need one table name (flags come before it)", cmd)
	}
	name := rest[0]
	switch cmd {
	case "show":
		h, err := maintain.TableHealth(ctx, tables, name, cfg)
		if err != nil {
			return err
		}
		return printHealth(stdout, h)
	case "compact":
		opts := cfg.CompactOptions()
		var bar *progressbar.ProgressBar
		if !quiet {
			opts.Progress = func(done, total int) {
				if bar == nil {
					bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr),
						progressbar.OptionSetDescription("compacting "+name), progressbar.OptionShowCount(),
						progressbar.OptionClearOnFinish())
				}
				_ = bar.Set(done)
			}
		}
		res, err := maintain.Compact(ctx, tables, name, opts)
		if bar != nil {
			_ = bar.Finish()
		}
		if err != nil {
			return err
		}
		if res.SnapshotID == 0 {
			fmt.Fprintf(stdout, "table %s: nothing to compact\n", name)
			return nil
		}
		fmt.Fprintf(stdout, "table %s: %d groups, %d data files (%s) -> %d (%s), %d delete files folded, %d rows, snapshot %d\n",
			name, res.Groups, res.FilesRemoved, humanBytes(res.BytesBefore), res.FilesAdded, humanBytes(res.BytesAfter),
			res.DeleteFilesRemoved, res.RowsWritten, res.SnapshotID)
		return nil
	case "expire":
		res, err := maintain.Expire(ctx, tables, cat, name, cfg.Retention(), cfg.CommitRetries)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "table %s: %d of %d snapshots expired (retain last %d, max age %s)\n",
			name, res.SnapshotsExpired, res.SnapshotsBefore, cfg.RetainLast, cfg.MaxSnapshotAge)
		return nil
	default: // clean
		res, err := maintain.CleanOrphans(ctx, tables, name, cfg.OrphanMinAge, dryRun)
		if err != nil {
			return err
		}
		verb := "removed"
		if dryRun {
			verb = "would remove"
		}
		fmt.Fprintf(stdout, "table %s: %s %d orphan files (%s) older than %s\n", name, verb, res.Files, humanBytes(res.Bytes), cfg.OrphanMinAge)
		return nil
	}
}

// openMaintenanceCmd loads the configuration (catalog and maintenance sections) and
// opens the catalog.
func openMaintenanceCmd(ctx context.Context, name string, args []string, bind func(*flag.FlagSet)) (maintain.Config, *catalog.Catalog, []string, error) {
	cfg, rest, err := loadConfig(name, tablesUsage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&cfg.Catalog.URI, "catalog", cfg.Catalog.URI, `metadata database: "" (SQLite under data-dir), sqlite:///path.db or postgres://...`)
		fs.StringVar(&cfg.Catalog.Warehouse, "warehouse", cfg.Catalog.Warehouse, "table storage: a directory (default data-dir/warehouse) or s3://bucket/prefix")
		fs.StringVar(&cfg.Catalog.S3Endpoint, "s3-endpoint", cfg.Catalog.S3Endpoint, "S3/MinIO endpoint URL for an s3:// warehouse")
		if bind != nil {
			bind(fs)
		}
	})
	if err != nil {
		return maintain.Config{}, nil, nil, err
	}
	cat, err := catalog.Open(ctx, cfg.Catalog)
	if err != nil {
		return maintain.Config{}, nil, nil, fmt.Errorf("opening catalog: %w", err)
	}
	return cfg.Maintenance, cat, rest, nil
}

func listTables(ctx context.Context, w io.Writer, cat *catalog.Catalog, cfg maintain.Config) error {
	names, err := maintain.ListTables(ctx, cat)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tFILES\tSIZE\tDELETE FILES\tSMALL\tSNAPSHOTS\tLAST COMMIT\tLAST COMPACTION\tHEALTH")
	var errs []error
	for _, name := range names {
		h, err := maintain.TableHealth(ctx, maintain.CatalogTables(cat), name, cfg)
		if err != nil {
			errs = append(errs, err)
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\terror: %v\n", name, err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", name, h.DataFiles, humanBytes(h.DataBytes), h.DeleteFiles,
			h.SmallFiles, h.Snapshots, timeOrDash(h.LastCommit), timeOrDash(h.LastCompaction), h.Status())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

func printHealth(w io.Writer, h maintain.Health) error {
	_, err := fmt.Fprintf(w, `table:             %s
data files:        %d (%s, %d records before deletes)
delete files:      %d (%s)
small files:       %d
partitions:        %d (%d to compact)
snapshots:         %d
last commit:       %s
last compaction:   %s
health:            %s
`, h.Table, h.DataFiles, humanBytes(h.DataBytes), h.Records, h.DeleteFiles, humanBytes(h.DeleteBytes), h.SmallFiles,
		h.Partitions, h.CompactablePartitions, h.Snapshots, timeOrDash(h.LastCommit), timeOrDash(h.LastCompaction), h.Status())
	return err
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
