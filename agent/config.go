package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
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
	// FeedsDir holds the feed definitions (*.yaml).
	FeedsDir string        `yaml:"feeds_dir"`
	Watch    []WatchConfig `yaml:"watch"`
	// QuietPeriod is how long a file must be unchanged before it is taken.
	QuietPeriod time.Duration `yaml:"quiet_period"`
	// RescanInterval is how often watched folders are listed in full.
	RescanInterval time.Duration `yaml:"rescan_interval"`
	// BatchRows is the most rows in one batch.
	BatchRows int `yaml:"batch_rows"`
	// AckTimeout is how long a batch waits for the hub's ack before it is re-sent.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxInflight bounds batches sent and not yet acked.
	MaxInflight int `yaml:"max_inflight"`
	// SpoolMaxBytes and SpoolMaxBatches bound the spool; intake pauses when it is full.
	SpoolMaxBytes   int64 `yaml:"spool_max_bytes"`
	SpoolMaxBatches int   `yaml:"spool_max_batches"`
	// StatusInterval is how often the retained status is refreshed.
	StatusInterval time.Duration `yaml:"status_interval"`
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

// DefaultConfig returns the defaults; id, tenant, facility, broker, feeds_dir and watch
// must still be set.
func DefaultConfig() Config {
	return Config{
		StateDir:        defaultStateDir(),
		QuietPeriod:     2 * time.Second,
		RescanInterval:  30 * time.Second,
		BatchRows:       50000,
		AckTimeout:      60 * time.Second,
		MaxInflight:     32,
		SpoolMaxBytes:   10 << 30,
		SpoolMaxBatches: 100000,
		StatusInterval:  30 * time.Second,
	}
}

func defaultStateDir() string {
	if pd := os.Getenv("ProgramData"); pd != "" && filepath.Separator == '\\' {
		return filepath.Join(pd, "medlake-agent")
	}
	return "/var/lib/medlake-agent"
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
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LoadConfig reads and parses the config file at path.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading agent config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// applyDefaults fills zero fields a YAML file may have set to zero explicitly or left out
// of a list entry.
func (c *Config) applyDefaults() {
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

// ApplyEnv overrides scalar fields from MEDLAKE_AGENT_<YAML KEY> variables (for example
// MEDLAKE_AGENT_BROKER, MEDLAKE_AGENT_MAX_INFLIGHT); lookup is usually os.LookupEnv.
// Watch folders come from the file only.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	dur := func(p *time.Duration) func(string) error {
		return func(v string) error { d, err := time.ParseDuration(v); *p = d; return err }
	}
	num := func(p *int) func(string) error {
		return func(v string) error { n, err := strconv.Atoi(v); *p = n; return err }
	}
	num64 := func(p *int64) func(string) error {
		return func(v string) error { n, err := strconv.ParseInt(v, 10, 64); *p = n; return err }
	}
	fields := []struct {
		key string
		set func(string) error
	}{
		{"id", str(&c.ID)}, {"tenant", str(&c.Tenant)}, {"facility", str(&c.Facility)},
		{"broker", str(&c.Broker)}, {"username", str(&c.Username)}, {"password", str(&c.Password)},
		{"state_dir", str(&c.StateDir)}, {"feeds_dir", str(&c.FeedsDir)},
		{"quiet_period", dur(&c.QuietPeriod)}, {"rescan_interval", dur(&c.RescanInterval)},
		{"batch_rows", num(&c.BatchRows)}, {"ack_timeout", dur(&c.AckTimeout)},
		{"max_inflight", num(&c.MaxInflight)}, {"spool_max_bytes", num64(&c.SpoolMaxBytes)},
		{"spool_max_batches", num(&c.SpoolMaxBatches)}, {"status_interval", dur(&c.StatusInterval)},
	}
	for _, f := range fields {
		name := "MEDLAKE_AGENT_" + strings.ToUpper(f.key)
		if v, ok := lookup(name); ok {
			if err := f.set(v); err != nil {
				return fmt.Errorf("environment %s=%q: %w", name, v, err)
			}
		}
	}
	return nil
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
	if c.FeedsDir == "" {
		bad("feeds_dir: empty")
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
	pos("max_inflight", c.MaxInflight > 0, c.MaxInflight)
	pos("spool_max_bytes", c.SpoolMaxBytes > 0, c.SpoolMaxBytes)
	pos("spool_max_batches", c.SpoolMaxBatches > 0, c.SpoolMaxBatches)
	pos("status_interval", c.StatusInterval > 0, c.StatusInterval)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid agent config: %w", err)
	}
	return nil
}
