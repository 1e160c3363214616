package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/cmd/internal/cliconfig"
	"github.com/medlake/medlake/hub"
	"github.com/medlake/medlake/hub/broker"
	"github.com/medlake/medlake/hub/maintain"
	"github.com/medlake/medlake/query"
)

// Config is the central side's whole configuration. Every role reads its own section;
// the file, MEDLAKE_* variables (e.g. MEDLAKE_CATALOG_URI, MEDLAKE_QUERY_LISTEN) and
// flags override the defaults in that order.
type Config struct {
	// DataDir holds everything a single node keeps locally: the SQLite catalog and
	// local warehouse when no others are given, the query cache, broker sessions.
	DataDir string `yaml:"data_dir"`
	// HTTPListen serves /healthz, /readyz and /metrics.
	HTTPListen string `yaml:"http_listen"`
	LogLevel   string `yaml:"log_level"`
	LogFormat  string `yaml:"log_format"`

	Catalog catalog.Config `yaml:"catalog" envPrefix:"CATALOG_"`
	// Broker is the embedded MQTT broker, run only by the ingest role when
	// ingest.broker is empty.
	Broker broker.Config `yaml:"broker" envPrefix:"BROKER_"`
	Ingest hub.Config    `yaml:"ingest" envPrefix:"INGEST_"`
	Query  query.Config  `yaml:"query" envPrefix:"QUERY_"`
	// Maintenance is the maintain role's schedule and policies: compaction, snapshot
	// retention, orphan cleanup.
	Maintenance maintain.Config `yaml:"maintenance" envPrefix:"MAINTENANCE_"`
}

// DefaultConfig is a single node on loopback keeping everything under ./medlake-data.
func DefaultConfig() Config {
	return Config{
		DataDir:     "medlake-data",
		HTTPListen:  "127.0.0.1:9464",
		LogLevel:    "info",
		LogFormat:   "text",
		Broker:      broker.Config{Listen: broker.DefaultListen},
		Ingest:      hub.Config{}.WithDefaults(),
		Query:       query.Default(),
		Maintenance: maintain.DefaultConfig(),
	}
}

// Validate checks the parts every role shares and the maintenance policy (a bad
// retention is refused before any role starts); each other component validates its
// own section.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty"))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format %q: want text or json", c.LogFormat))
	}
	if err := c.Maintenance.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// resolve fills paths that default to places under DataDir.
func (c *Config) resolve() error {
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data_dir %s: %w", c.DataDir, err)
	}
	c.DataDir = abs
	if c.Catalog.DataDir == "" {
		c.Catalog.DataDir = abs
	}
	if c.Query.CacheDir == "" {
		c.Query.CacheDir = filepath.Join(abs, "cache")
	}
	if c.Broker.StateDir == "" {
		c.Broker.StateDir = filepath.Join(abs, "broker")
	}
	return nil
}

// loadConfig layers defaults, file, environment and the flags bound by bind, then
// validates. bind registers the subcommand's flags on fs against cfg.
// It also returns the arguments left after the flags.
func loadConfig(name, usage string, args []string, bind func(fs *flag.FlagSet, cfg *Config)) (*Config, []string, error) {
	return loadConfigOver(DefaultConfig(), name, usage, args, bind)
}

// loadConfigOver is loadConfig starting from other defaults.
func loadConfigOver(cfg Config, name, usage string, args []string, bind func(fs *flag.FlagSet, cfg *Config)) (*Config, []string, error) {
	path := cliconfig.ConfigPath(args, "MEDLAKE_CONFIG")
	if err := cliconfig.Load(&cfg, path, "MEDLAKE_"); err != nil {
		return nil, nil, err
	}
	fs := flag.NewFlagSet("medlake "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage, "\nFlags (defaults show the effective values):\n")
		fs.PrintDefaults()
	}
	fs.String("config", path, "YAML configuration file (env MEDLAKE_CONFIG)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "local state directory (env MEDLAKE_DATA_DIR)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	if bind != nil {
		bind(fs, &cfg)
	}
	if err := cliconfig.Parse(fs, args, &cfg); err != nil {
		return nil, nil, err
	}
	if err := cfg.resolve(); err != nil {
		return nil, nil, err
	}
	return &cfg, fs.Args(), nil
}

// printConfig writes the effective configuration with secrets replaced.
func printConfig(w io.Writer, cfg *Config) error {
	c := *cfg
	c.Catalog.URI = redactURL(c.Catalog.URI)
	c.Catalog.S3SecretKey = redact(c.Catalog.S3SecretKey)
	c.Ingest.Password = redact(c.Ingest.Password)
	c.Broker.Users = slices.Clone(c.Broker.Users)
	for i := range c.Broker.Users {
		c.Broker.Users[i].Password = redact(c.Broker.Users[i].Password)
	}
	c.Query.Users = slices.Clone(c.Query.Users)
	for i := range c.Query.Users {
		c.Query.Users[i].Password = redact(c.Query.Users[i].Password)
	}
	return cliconfig.Print(w, &c)
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "redacted")
	}
	return u.String()
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(cfg *Config) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
