package hub

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Defaults for Config.
const (
	DefaultCommitInterval    = time.Second
	DefaultCommitMaxRows     = 500_000
	DefaultCommitMaxBytes    = 256 << 20
	DefaultFeedsPollInterval = 5 * time.Second
)

// Config configures the ingest role. The catalog is passed to New separately.
type Config struct {
	// Broker is the MQTT broker URL, e.g. tcp://127.0.0.1:1883. The caller starts the
	// embedded broker (hub/broker) and puts its URL here when none is configured.
	Broker   string `yaml:"broker"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// ClientID must be unique across hubs: the broker allows one connection per client
	// id. Default
	// "medlake-hub-<hostname>".
	ClientID string `yaml:"client_id"`
	// FeedsDir optionally holds feed definitions (*.yaml) applied to the catalog at
	// start, as `medlake feeds apply -f DIR` would: seed input for a new install. The
	// hub accepts and pushes the feeds in the catalog; a file whose version the catalog
	// already has, or has a newer version of, changes nothing.
	FeedsDir string `yaml:"feeds_dir"`
	// FeedsPollInterval is how often the catalog is checked for newly applied feed
	// versions, which are then pushed to agents. Default 5s.
	FeedsPollInterval time.Duration `yaml:"feeds_poll_interval"`
	// CommitInterval is how long a table's first buffered batch waits for others before
	// the commit. Default 1s.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// CommitMaxRows and CommitMaxBytes (decoded Arrow size) trigger a commit early and
	// bound a table's buffer. Defaults 500000 rows and 256 MiB.
	CommitMaxRows  int64 `yaml:"commit_max_rows"`
	CommitMaxBytes int64 `yaml:"commit_max_bytes"`
}

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.ClientID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "local"
		}
		c.ClientID = "medlake-hub-" + sanitizeID(host)
	}
	if c.FeedsPollInterval == 0 {
		c.FeedsPollInterval = DefaultFeedsPollInterval
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.CommitMaxRows == 0 {
		c.CommitMaxRows = DefaultCommitMaxRows
	}
	if c.CommitMaxBytes == 0 {
		c.CommitMaxBytes = DefaultCommitMaxBytes
	}
	return c
}

// Validate reports the first setting the hub cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.Broker == "" {
		errs = append(errs, errors.New("hub broker url is empty"))
	}
	if c.FeedsPollInterval < 0 {
		errs = append(errs, fmt.Errorf("hub feeds_poll_interval %s is negative", c.FeedsPollInterval))
	}
	if c.CommitInterval < 0 {
		errs = append(errs, fmt.Errorf("hub commit_interval %s is negative", c.CommitInterval))
	}
	if c.CommitMaxRows < 0 {
		errs = append(errs, fmt.Errorf("hub commit_max_rows %d is negative", c.CommitMaxRows))
	}
	if c.CommitMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("hub commit_max_bytes %d is negative", c.CommitMaxBytes))
	}
	return errors.Join(errs...)
}

func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '-'
	}, s)
}
