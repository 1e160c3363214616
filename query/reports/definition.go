package reports

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/medlake/medlake/query/results"
)

// Definition is a report as written in a file for `medlake reports add -f`.
type Definition struct {
	Name   string `yaml:"name"`
	Cron   string `yaml:"cron"`
	Format string `yaml:"format"`
	SQL    string `yaml:"sql"`
}

var reportName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Check reports what is wrong with a definition, naming the field.
func (d Definition) Check() error {
	switch {
	case !reportName.MatchString(d.Name):
		return fmt.Errorf("report name %q: want lower case letters, digits and _, starting with a letter (it names the result folder)", d.Name)
	case strings.TrimSpace(d.SQL) == "":
		return fmt.Errorf("report %s: sql is empty", d.Name)
	}
	if _, err := ParseSchedule(d.Cron); err != nil {
		return fmt.Errorf("report %s: %w", d.Name, err)
	}
	if _, err := results.Lookup(d.Format); err != nil {
		return fmt.Errorf("report %s: %w", d.Name, err)
	}
	return nil
}

// ParseDefinition reads a definition file strictly: unknown fields are errors.
func ParseDefinition(data []byte) (Definition, error) {
	var d Definition
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return Definition{}, fmt.Errorf("report definition: %w", err)
	}
	return d, d.Check()
}

//go:embed examples/*.yaml
var examples embed.FS

// Examples returns the shipped example reports (daily census, weekly
// admissions, lab turnaround), by name.
func Examples() ([]Definition, error) {
	paths, err := fs.Glob(examples, "examples/*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []Definition
	for _, p := range paths {
		data, err := examples.ReadFile(p)
		if err != nil {
			return nil, err
		}
		d, err := ParseDefinition(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, d)
	}
	return out, nil
}
