package cliconfig

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/caarlos0/env/v11"
	"go.yaml.in/yaml/v3"
)

// Validator is implemented by configurations that can check themselves.
type Validator interface {
	Validate() error
}

// Defaulter is implemented by configurations with defaults that depend on other values
// (a path under another path); Parse applies them after every layer.
type Defaulter interface {
	ApplyDefaults()
}

// ConfigPath finds the value of -config/--config in args, or else the environment
// variable envVar. Flags are bound to the configuration only after the file and the
// environment are loaded, so the file's name has to be known first.
func ConfigPath(args []string, envVar string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return os.Getenv(envVar)
}

// Load overlays the YAML file at path (if path is not empty) and then the environment
// variables named envPrefix + UPPER_SNAKE field name onto cfg, which holds the defaults.
// Nested structs take their own prefix from an `envPrefix` struct tag.
func Load(cfg any, path, envPrefix string) error {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading config file: %w", err)
		}
		if err := DecodeYAML(data, cfg); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := env.ParseWithOptions(cfg, env.Options{Prefix: envPrefix, UseFieldNameByDefault: true}); err != nil {
		return fmt.Errorf("environment %s*: %w", envPrefix, err)
	}
	return nil
}

// DecodeYAML decodes data onto cfg, rejecting unknown fields.
func DecodeYAML(data []byte, cfg any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Parse parses args with fs, whose flags the caller has bound to cfg's fields after Load
// (so their defaults show the effective values), then applies late defaults and validates.
func Parse(fs *flag.FlagSet, args []string, cfg any) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if d, ok := cfg.(Defaulter); ok {
		d.ApplyDefaults()
	}
	if v, ok := cfg.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("invalid configuration: %w", err)
		}
	}
	return nil
}

// Print writes cfg as YAML, the effective configuration after every layer.
func Print(w io.Writer, cfg any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return err
	}
	return enc.Close()
}
