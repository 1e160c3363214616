package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxConfigFeeds bounds the feeds one config message may carry, so a damaged or hostile
// message cannot make an agent parse without end.
const maxConfigFeeds = 10000

// Config is the hub's message on an agent's config topic, published retained: the whole
// set of feed definitions the agent should run. A feed missing from the set is no longer
// pushed to that agent. Revision names the set by its content, so an agent can tell
// whether it already runs it, and report which set it applied or refused.
type Config struct {
	Version  string       `json:"v"`
	Revision string       `json:"revision"`
	Time     time.Time    `json:"time,omitzero"`
	Feeds    []ConfigFeed `json:"feeds"`
}

// ConfigFeed is one feed definition in a Config: its YAML text as applied to the
// catalog, with the name and version the text declares.
type ConfigFeed struct {
	Name       string `json:"name"`
	Version    int    `json:"version"`
	SHA256     string `json:"sha256"` // hex SHA-256 of Definition
	Definition string `json:"definition"`
}

// NewConfigFeed fills SHA256 from the text.
func NewConfigFeed(name string, version int, definition string) ConfigFeed {
	sum := sha256.Sum256([]byte(definition))
	return ConfigFeed{Name: name, Version: version, SHA256: hex.EncodeToString(sum[:]), Definition: definition}
}

// ConfigRevision is the revision of a set of feeds: a hash over each feed's name,
// version and text hash, in name order. Equal sets have equal revisions whoever
// computes them, so several hubs publishing the same catalog agree.
func ConfigRevision(feeds []ConfigFeed) string {
	sorted := slices.Clone(feeds)
	slices.SortFunc(sorted, func(a, b ConfigFeed) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	for _, f := range sorted {
		h.Write([]byte(f.Name + "\x00" + strconv.Itoa(f.Version) + "\x00" + f.SHA256 + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// EncodeConfig sets the version, sorts the feeds by name, fills an empty revision and
// encodes the config.
func EncodeConfig(c Config) ([]byte, error) {
	c.Version = Version
	c.Feeds = slices.Clone(c.Feeds)
	slices.SortFunc(c.Feeds, func(a, b ConfigFeed) int { return strings.Compare(a.Name, b.Name) })
	if c.Feeds == nil {
		c.Feeds = []ConfigFeed{}
	}
	if c.Revision == "" {
		c.Revision = ConfigRevision(c.Feeds)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	return json.Marshal(c)
}

// DecodeConfig decodes and checks a config: every feed's text must match its hash and
// the revision must match the set, so a cut or altered message is refused as a whole.
func DecodeConfig(b []byte) (Config, error) {
	var c Config
	if err := decodeJSON("config", b, &c); err != nil {
		return Config{}, err
	}
	if err := checkVersion("config "+c.Revision, c.Version); err != nil {
		return Config{}, err
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("decoding config: %w", err)
	}
	return c, nil
}

func (c *Config) validate() error {
	if c.Revision == "" {
		return fmt.Errorf("config: empty revision: %w", ErrMalformed)
	}
	if len(c.Feeds) > maxConfigFeeds {
		return fmt.Errorf("config %s: %d feeds, at most %d: %w", c.Revision, len(c.Feeds), maxConfigFeeds, ErrMalformed)
	}
	seen := make(map[string]bool, len(c.Feeds))
	for i, f := range c.Feeds {
		switch {
		case f.Name == "":
			return fmt.Errorf("config %s: feeds[%d]: empty name: %w", c.Revision, i, ErrMalformed)
		case seen[f.Name]:
			return fmt.Errorf("config %s: feeds[%d]: feed %q listed twice: %w", c.Revision, i, f.Name, ErrMalformed)
		case f.Version < 1:
			return fmt.Errorf("config %s: feeds[%d] %q: version %d, want 1 or more: %w", c.Revision, i, f.Name, f.Version, ErrMalformed)
		}
		seen[f.Name] = true
		sum := sha256.Sum256([]byte(f.Definition))
		if hex.EncodeToString(sum[:]) != f.SHA256 {
			return fmt.Errorf("config %s: feeds[%d] %q version %d: definition does not match its sha256: %w", c.Revision, i, f.Name, f.Version, ErrChecksum)
		}
	}
	if want := ConfigRevision(c.Feeds); c.Revision != want {
		return fmt.Errorf("config %s: revision does not match its feeds (want %s): %w", c.Revision, want, ErrChecksum)
	}
	return nil
}

// ConfigState is an agent's account, in its status, of the pushed feed definitions.
type ConfigState struct {
	// Applied is the revision of the last config the agent switched to (wholly, or for
	// the feeds that were valid when Errors is not empty). Empty: none yet.
	Applied   string    `json:"applied,omitempty"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// Refused is the revision of the last config with at least one feed the agent could
	// not run; Errors says which and why. Such a feed keeps its last good version. Both
	// are cleared when a later config applies in full.
	Refused   string        `json:"refused,omitempty"`
	RefusedAt time.Time     `json:"refused_at,omitzero"`
	Errors    []ConfigError `json:"errors,omitempty"`
	// Feeds are the definitions the agent runs now, pushed or local.
	Feeds []RunningFeed `json:"feeds,omitempty"`
}

// ConfigError is why an agent refused one feed of a config.
type ConfigError struct {
	Feed    string `json:"feed"`
	Version int    `json:"version"`
	Error   string `json:"error"`
}

// Sources of a running feed definition.
const (
	FeedSourcePushed = "pushed" // from the hub's config message
	FeedSourceLocal  = "local"  // from the agent's feeds_dir
)

// RunningFeed is one feed definition an agent runs.
type RunningFeed struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Source  string `json:"source"`
}
