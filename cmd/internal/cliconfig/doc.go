// Package cliconfig loads a medlake binary's configuration in layers: built-in defaults,
// then a YAML file, then MEDLAKE_* environment variables, then command-line flags.
//
// Each layer overrides the one before. Parsing is strict: an unknown key in the file is an
// error, so a typo never silently falls back to a default.
package cliconfig
