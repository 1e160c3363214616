package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/medlake/medlake/protocol"
)

// Done modes for a watched folder.
const (
	DoneKeep = "keep" // leave the file; its content hash is remembered
	DoneMove = "move" // move it to done_dir once every batch is committed
)

// Config is the agent's configuration (YAML). Zero values are replaced by DefaultConfig.
type Config struct {
	ID       string `yaml:"id"`
	Tenant   string `yaml:"tenant"`
	Facility string `yaml:"facility"`
	// Broker is the MQTT 3.1.1 broker, tcp://host:port.
	Broker   string `yaml:"broker"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// StateDir holds state.db, spool/, dead-letter/, quarantine/ and rejects/.
	StateDir string `yaml:"state_dir"`
	// SecretsDir holds the secrets feeds name (match.password_secret, the keys of hash
	// transforms): the secret N is the file <secrets_dir>/N, its content less a trailing
	// newline. Files must not be accessible by group or others. Empty means
	// <state_dir>/secrets.
	SecretsDir string `yaml:"secrets_dir"`
	// FeedsDir holds local feed definitions (*.yaml), for an install that runs before
	// (or without) the hub pushing definitions from the catalog. Optional: the hub's
	// config message is the usual source. A pushed definition replaces the local one of
	// the same name when its version is higher.
	FeedsDir string        `yaml:"feeds_dir"`
	Watch    []WatchConfig `yaml:"watch"`
	// QuietPeriod is how long a file must be unchanged before it is taken.
	QuietPeriod time.Duration `yaml:"quiet_period"`
	// RescanInterval is how often watched folders are listed in full.
	RescanInterval time.Duration `yaml:"rescan_interval"`
	// BatchRows is the most rows in one batch.
	BatchRows int `yaml:"batch_rows"`
	// AckTimeout is the shortest wait for the hub's ack before a batch is re-sent
	// (default 5s). The wait adapts to the ack latency the agent observes (smoothed
	// latency plus four times its variation, as TCP's retransmission timeout), and a
	// batch re-sent again waits twice as long each time, with jitter, up to
	// AckTimeoutMax. Re-sends are safe: the hub recognizes a batch it has committed.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// AckTimeoutMax caps that wait (default 2m; never below ack_timeout).
	AckTimeoutMax time.Duration `yaml:"ack_timeout_max"`
	// MaxInflight bounds batches sent and not yet acked.
	MaxInflight int `yaml:"max_inflight"`
	// SpoolMaxBytes and SpoolMaxBatches bound the spool; intake pauses when it is full.
	SpoolMaxBytes   int64 `yaml:"spool_max_bytes"`
	SpoolMaxBatches int   `yaml:"spool_max_batches"`
	// StatusInterval is how often the retained status is refreshed.
	StatusInterval time.Duration `yaml:"status_interval"`
	// ArchiveRaw sends every file taken, as it is, to be kept in the lake's warehouse
	// under its SHA-256 (so history can be re-read with a newer feed definition); a
	// file is done only when the hub has stored it too. Default true; hubs must be
	// upgraded first (an older hub rejects the archive chunks).
	ArchiveRaw bool `yaml:"archive_raw"`
	// Limits guard the agent against hostile or broken files; zero means the default.
	Limits Limits `yaml:"limits"`
}

// Limits bound what one source file may make the agent unpack and hold. A file over a
// limit is quarantined with the limit named; it is never partly ingested.
type Limits struct {
	// MaxRatio is the largest uncompressed:compressed ratio of a zip entry or gzip
	// stream (zip bombs). Default 200.
	MaxRatio int64 `yaml:"max_ratio"`
	// MaxEntryBytes is the largest uncompressed entry. Default 2 GiB.
	MaxEntryBytes int64 `yaml:"max_entry_bytes"`
	// MaxFileBytes is the largest total uncompressed size of one source file's entries.
	// Default 8 GiB.
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// MaxEntries is the most entries one archive may hold. Default 100000.
	MaxEntries int `yaml:"max_entries"`
	// MaxDepth is how many archive levels are opened (2: an archive inside an archive).
	// Default 2.
	MaxDepth int `yaml:"max_depth"`
	// MaxRecordBytes is the longest delimited record (one line, or several when a quoted
	// field holds line breaks). Default 16 MiB.
	MaxRecordBytes int `yaml:"max_record_bytes"`
}

// WatchConfig is one watched export folder.
type WatchConfig struct {
	Path      string `yaml:"path"`
	Recursive bool   `yaml:"recursive"`
	// Done is keep or move.
	Done string `yaml:"done"`
	// DoneDir is where `done: move` puts finished files; default <path>/.medlake-done.
	DoneDir string `yaml:"done_dir"`
}

// DefaultConfig returns the defaults; id, tenant, facility, broker and watch must still
// be set.
func DefaultConfig() Config {
	return Config{
		StateDir:        defaultStateDir(),
		QuietPeriod:     2 * time.Second,
		RescanInterval:  30 * time.Second,
		BatchRows:       50000,
		AckTimeout:      5 * time.Second,
		AckTimeoutMax:   2 * time.Minute,
		MaxInflight:     32,
		SpoolMaxBytes:   10 << 30,
		SpoolMaxBatches: 100000,
		StatusInterval:  30 * time.Second,
		ArchiveRaw:      true,
	}
}

func defaultStateDir() string {
	if pd := os.Getenv("ProgramData"); pd != "" && filepath.Separator == '\\' {
		return filepath.Join(pd, "medlake-agent")
	}
	return "/var/lib/medlake-agent"
}

// SecretsPath is the secrets directory in effect: SecretsDir, or <state_dir>/secrets.
func (c Config) SecretsPath() string {
	if c.SecretsDir != "" {
		return c.SecretsDir
	}
	return filepath.Join(c.StateDir, "secrets")
}

// ParseConfig decodes YAML strictly (unknown fields are errors) over DefaultConfig and
// validates the result.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("parsing agent config: %w", err)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// ApplyDefaults fills what a file may leave out of a list entry: a watched folder's done
// mode (keep) and done folder. Loaders call it after every layer, before Validate.
func (c *Config) ApplyDefaults() {
	for i := range c.Watch {
		w := &c.Watch[i]
		if w.Done == "" {
			w.Done = DoneKeep
		}
		if w.DoneDir == "" && w.Path != "" {
			w.DoneDir = filepath.Join(w.Path, ".medlake-done")
		}
	}
}

// Validate reports every problem in the config, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, f := range []struct{ key, v string }{{"id", c.ID}, {"tenant", c.Tenant}, {"facility", c.Facility}} {
		if err := protocol.ValidateID(f.key, f.v); err != nil {
			bad("%s: %v", f.key, err)
		}
	}
	if !strings.HasPrefix(c.Broker, "tcp://") && !strings.HasPrefix(c.Broker, "ssl://") && !strings.HasPrefix(c.Broker, "tls://") && !strings.HasPrefix(c.Broker, "mqtt://") && !strings.HasPrefix(c.Broker, "mqtts://") {
		bad("broker: %q is not an MQTT url (tcp://host:port)", c.Broker)
	}
	if c.StateDir == "" {
		bad("state_dir: empty")
	}
	if len(c.Watch) == 0 {
		bad("watch: no folders to watch")
	}
	seen := map[string]bool{}
	for i, w := range c.Watch {
		switch {
		case w.Path == "":
			bad("watch[%d].path: empty", i)
		case !filepath.IsAbs(w.Path):
			bad("watch[%d].path: %q is not absolute", i, w.Path)
		case seen[filepath.Clean(w.Path)]:
			bad("watch[%d].path: %q listed twice", i, w.Path)
		}
		seen[filepath.Clean(w.Path)] = true
		switch w.Done {
		case DoneKeep, DoneMove:
		default:
			bad("watch[%d].done: %q, want keep or move", i, w.Done)
		}
		if w.Done == DoneMove && w.DoneDir != "" && !filepath.IsAbs(w.DoneDir) {
			bad("watch[%d].done_dir: %q is not absolute", i, w.DoneDir)
		}
	}
	pos := func(key string, ok bool, v any) {
		if !ok {
			bad("%s: %v must be positive", key, v)
		}
	}
	pos("quiet_period", c.QuietPeriod > 0, c.QuietPeriod)
	pos("rescan_interval", c.RescanInterval > 0, c.RescanInterval)
	pos("batch_rows", c.BatchRows > 0, c.BatchRows)
	pos("ack_timeout", c.AckTimeout > 0, c.AckTimeout)
	pos("ack_timeout_max", c.AckTimeoutMax > 0, c.AckTimeoutMax)
	pos("max_inflight", c.MaxInflight > 0, c.MaxInflight)
	pos("spool_max_bytes", c.SpoolMaxBytes > 0, c.SpoolMaxBytes)
	pos("spool_max_batches", c.SpoolMaxBatches > 0, c.SpoolMaxBatches)
	pos("status_interval", c.StatusInterval > 0, c.StatusInterval)
	for _, l := range []struct {
		key string
		v   int64
	}{
		{"limits.max_ratio", c.Limits.MaxRatio}, {"limits.max_entry_bytes", c.Limits.MaxEntryBytes},
		{"limits.max_file_bytes", c.Limits.MaxFileBytes}, {"limits.max_entries", int64(c.Limits.MaxEntries)},
		{"limits.max_depth", int64(c.Limits.MaxDepth)}, {"limits.max_record_bytes", int64(c.Limits.MaxRecordBytes)},
	} {
		if l.v < 0 {
			bad("%s: %d must not be negative (0 means the default)", l.key, l.v)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid agent config: %w", err)
	}
	return nil
}
