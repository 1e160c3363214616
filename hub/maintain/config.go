package maintain

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Config.
const (
	DefaultInterval            = 10 * time.Minute
	DefaultLeaseTTL            = 10 * time.Minute
	DefaultTargetFileSize      = 128 << 20
	DefaultMinInputFiles       = 5
	DefaultDeleteFileThreshold = 5
	DefaultRetainLast          = 100
	DefaultMaxSnapshotAge      = time.Hour
	DefaultOrphanMinAge        = 24 * time.Hour
	DefaultOrphanInterval      = 24 * time.Hour
	DefaultCommitRetries       = 5
	// MinOrphanMinAge bounds orphan_min_age from below: a writer's files are
	// unreferenced until it commits, and no commit takes this long.
	MinOrphanMinAge = time.Hour
)

// Config is the maintenance role's section of medlake's configuration.
type Config struct {
	// Enabled runs the scheduled passes. `medlake tables compact|expire|clean` work
	// either way. Default true.
	Enabled bool `yaml:"enabled"`
	// Interval between passes over every table; the first pass runs one interval
	// after start. Default 10m.
	Interval time.Duration `yaml:"interval"`
	// LeaseTTL is how long a node holds the maintenance lease in the catalog without
	// renewing it; it renews after each table. A node that dies hands over after this.
	// Default 10m.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// TargetFileSize is the size compaction's output files aim at; files under 75%
	// of it are small. Compaction sorts a partition's group in memory, so it needs a
	// few times this in RAM. Default 128 MiB.
	TargetFileSize int64 `yaml:"target_file_size_bytes"`
	// MinInputFiles is the fewest small files of a partition worth rewriting.
	// Default 5.
	MinInputFiles int `yaml:"min_input_files"`
	// DeleteFileThreshold rewrites a data file with this many delete files whatever
	// its size. Default 5.
	DeleteFileThreshold int `yaml:"delete_file_threshold"`
	// RetainLast and MaxSnapshotAge are the snapshot retention: a snapshot stays while
	// it is one of the newest RetainLast or younger than MaxSnapshotAge (how far back
	// time travel reaches). Every retained snapshot is in the table's metadata file,
	// which each commit rewrites, and hubs commit about once a second: a long window
	// costs metadata size and commit time. Defaults 100 and 1h.
	RetainLast     int           `yaml:"retain_last"`
	MaxSnapshotAge time.Duration `yaml:"max_snapshot_age"`
	// OrphanMinAge is how old an unreferenced file in a table's location must be
	// before cleanup removes it; at least 1h. Default 24h.
	OrphanMinAge time.Duration `yaml:"orphan_min_age"`
	// OrphanInterval is how often a node runs orphan cleanup on a table, which lists
	// the table's whole location. Default 24h.
	OrphanInterval time.Duration `yaml:"orphan_interval"`
	// CommitRetries bounds re-applying a compaction or expiry after other commits
	// moved the table. Default 5.
	CommitRetries int `yaml:"commit_retries"`
}

// DefaultConfig returns the defaults above, enabled.
func DefaultConfig() Config {
	return Config{
		Enabled: true, Interval: DefaultInterval, LeaseTTL: DefaultLeaseTTL,
		TargetFileSize: DefaultTargetFileSize, MinInputFiles: DefaultMinInputFiles,
		DeleteFileThreshold: DefaultDeleteFileThreshold, RetainLast: DefaultRetainLast,
		MaxSnapshotAge: DefaultMaxSnapshotAge, OrphanMinAge: DefaultOrphanMinAge, OrphanInterval: DefaultOrphanInterval,
		CommitRetries: DefaultCommitRetries,
	}
}

// Validate reports every setting maintenance cannot run with.
func (c Config) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("maintenance %s %s must be positive", name, d))
		}
	}
	positive("interval", c.Interval)
	positive("lease_ttl", c.LeaseTTL)
	positive("orphan_interval", c.OrphanInterval)
	if c.TargetFileSize < 1<<20 {
		errs = append(errs, fmt.Errorf("maintenance target_file_size_bytes %d is under 1 MiB", c.TargetFileSize))
	}
	if c.MinInputFiles < 2 {
		errs = append(errs, fmt.Errorf("maintenance min_input_files %d must be at least 2", c.MinInputFiles))
	}
	if c.DeleteFileThreshold < 1 {
		errs = append(errs, fmt.Errorf("maintenance delete_file_threshold %d must be at least 1", c.DeleteFileThreshold))
	}
	if c.RetainLast < 1 {
		errs = append(errs, fmt.Errorf("maintenance retain_last %d must be at least 1", c.RetainLast))
	}
	if c.MaxSnapshotAge < 0 {
		errs = append(errs, fmt.Errorf("maintenance max_snapshot_age %s is negative", c.MaxSnapshotAge))
	}
	if c.OrphanMinAge < MinOrphanMinAge {
		errs = append(errs, fmt.Errorf("maintenance orphan_min_age %s is under %s: files of commits in flight could be removed", c.OrphanMinAge, MinOrphanMinAge))
	}
	if c.CommitRetries < 0 {
		errs = append(errs, fmt.Errorf("maintenance commit_retries %d is negative", c.CommitRetries))
	}
	return errors.Join(errs...)
}

// CompactOptions returns the compaction settings of c.
func (c Config) CompactOptions() CompactOptions {
	return CompactOptions{TargetFileSize: c.TargetFileSize, MinInputFiles: c.MinInputFiles,
		DeleteFileThreshold: c.DeleteFileThreshold, CommitRetries: c.CommitRetries}
}

// Retention returns the snapshot retention of c.
func (c Config) Retention() Retention {
	return Retention{RetainLast: c.RetainLast, MaxAge: c.MaxSnapshotAge}
}
