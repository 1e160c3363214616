package feed

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// Table modes (Definition.Mode).
const (
	ModeAppend = "append" // every row is added (the default)
	ModeUpsert = "upsert" // a row replaces the row with its keys; the highest sequence wins
	ModeCDC    = "cdc"    // rows carry an explicit insert, update or delete operation
)

// Duplicate policies for append tables (Definition.Duplicates).
const (
	DuplicatesKeep = "keep" // every row is kept (the default)
	DuplicatesDrop = "drop" // a row whose keys were seen before is dropped
)

// TableMode says how rows change the table and where code tables for transforms live.
// The hub applies the mode; the agent only carries the columns it names.
type TableMode struct {
	// Mode is append (the default), upsert or cdc. Upsert and cdc need keys: the
	// primary key a later row replaces or deletes by.
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty" jsonschema:"enum=append,enum=upsert,enum=cdc"`
	// Sequence names the int, date or timestamp column whose highest value wins among
	// rows with the same keys (upsert and cdc only); empty means arrival order.
	Sequence string `yaml:"sequence,omitempty" json:"sequence,omitempty"`
	// Op says which string column holds each row's operation (cdc only, and required
	// there) and which values mean insert, update and delete.
	Op *Op `yaml:"op,omitempty" json:"op,omitempty"`
	// Duplicates is keep (the default) or drop: in an append table, drop discards a row
	// whose keys were seen before. Drop needs keys.
	Duplicates string `yaml:"duplicates,omitempty" json:"duplicates,omitempty" jsonschema:"enum=keep,enum=drop"`
	// Lookups are code tables for the lookup transform, by name: each maps a source code
	// to the value loaded ({M: male, F: female}).
	Lookups map[string]CodeTable `yaml:"lookups,omitempty" json:"lookups,omitempty"`
}

// CodeTable maps source codes to the values loaded. YAML scalars of any kind are read as
// the text written (Y: true maps "Y" to "true"); a null value (X: ~) maps to empty text,
// that is NULL.
type CodeTable map[string]string

// JSONSchema describes a CodeTable: an object of scalars.
func (CodeTable) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "object", AdditionalProperties: &jsonschema.Schema{
		AnyOf: []*jsonschema.Schema{{Type: "string"}, {Type: "number"}, {Type: "boolean"}, {Type: "null"}},
	}}
}

// Op names the operation column of a cdc feed and the values it holds. Values match
// case-insensitively; an empty list takes the default (I/INSERT, U/UPDATE, D/DELETE).
type Op struct {
	// Column is the string column holding the operation.
	Column string   `yaml:"column" json:"column" jsonschema:"required"`
	Insert []string `yaml:"insert,omitempty" json:"insert,omitempty"`
	Update []string `yaml:"update,omitempty" json:"update,omitempty"`
	Delete []string `yaml:"delete,omitempty" json:"delete,omitempty"`
}

// Values returns the values meaning insert, update and delete, defaults filled in.
func (o Op) Values() (insert, update, del []string) {
	pick := func(v []string, def ...string) []string {
		if len(v) == 0 {
			return def
		}
		return v
	}
	return pick(o.Insert, "I", "INSERT"), pick(o.Update, "U", "UPDATE"), pick(o.Delete, "D", "DELETE")
}

// RowStage is what happens to a column's value between the source field and the row:
// which fields feed it, the transforms applied to its text, how the text converts, and
// the checks the converted value must pass. A value's life: source field(s) → joined →
// transforms in order → empty text is NULL (a required column then rejects the row) →
// conversion (type, timezone, precision) → validation (min, max, pattern, enum,
// max_length). A failed step rejects the row naming the column, the value and the rule.
type RowStage struct {
	// Precision is, for decimal columns, the total number of digits (1 to 38).
	Precision int `yaml:"precision,omitempty" json:"precision,omitempty" jsonschema:"minimum=1,maximum=38"`
	// Scale is, for decimal columns, the digits after the decimal point (0 to precision).
	// A value with more digits after the point (other than trailing zeros), or more
	// before it than precision-scale, rejects the row: nothing is rounded.
	Scale int `yaml:"scale,omitempty" json:"scale,omitempty" jsonschema:"minimum=0,maximum=38"`
	// Timezone is the IANA zone ("America/Chicago") of timestamps written without an
	// offset; default UTC. A timestamp with an offset keeps its offset. A wall time the
	// zone skips or repeats at a daylight saving change takes the offset in effect
	// before the change.
	Timezone string `yaml:"timezone,omitempty" json:"timezone,omitempty"`
	// Sources are several source fields (header names, or XML paths) whose texts are
	// joined, trimmed and with empty parts skipped, into this column's text. Excludes
	// source. A required column needs every one of them in the header.
	Sources []string `yaml:"sources,omitempty" json:"sources,omitempty" jsonschema:"minItems=1"`
	// Join separates the joined sources; default one space.
	Join *string `yaml:"join,omitempty" json:"join,omitempty"`
	// Transforms are applied in order to the text before conversion. Each is a bare step
	// (trim, upper, lower, title) or a map with one key: default, null_if, lookup, split,
	// regex, replace, hash, mask.
	Transforms []Transform `yaml:"transforms,omitempty" json:"transforms,omitempty"`
	// Min is the smallest value accepted, for int, float, decimal, date and timestamp
	// columns, written as a number or as date or timestamp text.
	Min Scalar `yaml:"min,omitempty" json:"min,omitempty"`
	// Max is the largest value accepted; see min.
	Max Scalar `yaml:"max,omitempty" json:"max,omitempty"`
	// Pattern is an RE2 regular expression a string column's whole final value must match.
	Pattern Regexp `yaml:"pattern,omitempty" json:"pattern,omitempty"`
	// Enum lists the values a string or int column accepts.
	Enum []Scalar `yaml:"enum,omitempty" json:"enum,omitempty"`
	// MaxLength is the most characters (runes) a string column's value may have.
	MaxLength int `yaml:"max_length,omitempty" json:"max_length,omitempty" jsonschema:"minimum=1"`
}

// SourceNames are the source fields feeding the column: Sources, or SourceName alone.
func (c Column) SourceNames() []string {
	if len(c.Sources) > 0 {
		return c.Sources
	}
	return []string{c.SourceName()}
}

// Separator is the text between joined sources.
func (c Column) Separator() string {
	if c.Join == nil {
		return " "
	}
	return *c.Join
}

// Location is the zone of timestamps written without an offset.
func (c Column) Location() (*time.Location, error) {
	if c.Timezone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(c.Timezone)
}

// Bound is a min or max converted to its column's type, ready to compare converted
// values with.
type Bound struct {
	Set bool
	// Int holds int values, dates as days since 1970-01-01 and timestamps as
	// microseconds since the epoch (UTC).
	Int     int64
	Float   float64
	Decimal decimal128.Num
	// Text is the bound as written, for reject reasons.
	Text string
}

// Bounds converts Min and Max to the column's type.
func (c Column) Bounds() (lo, hi Bound, err error) {
	if lo, err = c.bound(c.Min); err != nil {
		return lo, hi, fmt.Errorf("min: %w", err)
	}
	if hi, err = c.bound(c.Max); err != nil {
		return lo, hi, fmt.Errorf("max: %w", err)
	}
	return lo, hi, nil
}

func (c Column) bound(s Scalar) (Bound, error) {
	b := Bound{Set: s != "", Text: string(s)}
	if !b.Set {
		return b, nil
	}
	text := strings.TrimSpace(string(s))
	var err error
	switch c.Type {
	case TypeInt:
		b.Int, err = strconv.ParseInt(text, 10, 64)
	case TypeFloat:
		b.Float, err = strconv.ParseFloat(text, 64)
		if err == nil && (math.IsNaN(b.Float) || math.IsInf(b.Float, 0)) {
			err = fmt.Errorf("%q is not a finite number", text)
		}
	case TypeDecimal:
		if b.Decimal, err = ParseDecimal(text, c.Precision, c.Scale); err != nil {
			return b, err
		}
	case TypeDate, TypeTimestamp:
		var t time.Time
		t, err = c.boundTime(text)
		if c.Type == TypeDate {
			b.Int = int64(arrow.Date32FromTime(t))
		} else {
			b.Int = t.UnixMicro()
		}
	default:
		return b, fmt.Errorf("applies only to int, float, decimal, date and timestamp columns, not %s", c.Type)
	}
	if err != nil {
		return b, fmt.Errorf("%q is not a %s value: %w", text, c.Type, err)
	}
	return b, nil
}

// boundTime reads a date or timestamp bound in the column's layouts or in ISO 8601.
func (c Column) boundTime(s string) (time.Time, error) {
	loc, err := c.Location()
	if err != nil {
		return time.Time{}, err
	}
	layouts := append(c.Layouts(), time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02")
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("want the column's format or ISO 8601")
}

// Scalar is a YAML scalar kept as its text: min, max and enum values may be written as
// numbers, dates or strings and are read in the column's type.
type Scalar string

// UnmarshalYAML takes any scalar as text.
func (s *Scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or text, not a list or map", n.Line)
	}
	*s = Scalar(n.Value)
	return nil
}

// JSONSchema describes a Scalar: a string or a number.
func (Scalar) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{{Type: "string"}, {Type: "number"}}}
}

// validateRowStage checks the row stage of every column and the table mode, each error
// naming its field path.
func (d *Definition) validateRowStage() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("feed %q: "+format, append([]any{d.Name}, args...)...))
	}
	for i, c := range d.Columns {
		for _, err := range d.checkColumn(c) {
			bad("columns[%d] %q: %v", i, c.Name, err)
		}
	}
	d.checkMode(bad)
	for name, tbl := range d.Lookups {
		if name == "" {
			bad("lookups: a table name is empty")
		}
		if len(tbl) == 0 {
			bad("lookups.%s: the table is empty", name)
		}
	}
	return errs
}

// checkColumn returns the row-stage problems of one column.
func (d *Definition) checkColumn(c Column) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Type == TypeDecimal {
		if c.Precision < 1 || c.Precision > 38 {
			bad("decimal precision must be 1 to 38, got %d", c.Precision)
		} else if c.Scale < 0 || c.Scale > c.Precision {
			bad("decimal scale must be 0 to precision (%d), got %d", c.Precision, c.Scale)
		}
	} else if c.Precision != 0 || c.Scale != 0 {
		bad("precision and scale apply only to decimal columns")
	}
	if c.Timezone != "" {
		if c.Type != TypeTimestamp {
			bad("timezone applies only to timestamp columns")
		} else if _, err := time.LoadLocation(c.Timezone); err != nil {
			bad("timezone %q is not an IANA zone name: %v", c.Timezone, err)
		}
	}
	if len(c.Sources) > 0 {
		if c.Source != "" {
			bad("source and sources exclude each other")
		}
		seen := map[string]bool{}
		for j, s := range c.Sources {
			switch {
			case strings.TrimSpace(s) == "":
				bad("sources[%d] is empty", j)
			case seen[s]:
				bad("sources[%d]: %q is named twice", j, s)
			case d.Format.Type == FormatXML:
				if err := checkXMLPath(s, true); err != nil {
					bad("sources[%d] %q: %v", j, s, err)
				}
			}
			seen[s] = true
		}
	} else if c.Join != nil {
		bad("join applies only with sources")
	}
	for j, t := range c.Transforms {
		if err := d.checkTransform(t); err != nil {
			bad("transforms[%d]: %v", j, err)
		}
	}
	if c.Min != "" || c.Max != "" {
		if lo, hi, err := c.Bounds(); err != nil {
			bad("%v", err)
		} else if lo.Set && hi.Set && boundLess(c.Type, hi, lo) {
			bad("min %s is above max %s", lo.Text, hi.Text)
		}
	}
	if !c.Pattern.IsZero() {
		if c.Type != TypeString {
			bad("pattern applies only to string columns")
		}
		if _, err := c.Pattern.Compiled(); err != nil {
			bad("pattern %q: %v", c.Pattern, err)
		}
	}
	if len(c.Enum) > 0 {
		switch c.Type {
		case TypeString:
		case TypeInt:
			for j, e := range c.Enum {
				if _, err := strconv.ParseInt(strings.TrimSpace(string(e)), 10, 64); err != nil {
					bad("enum[%d]: %q is not an integer", j, string(e))
				}
			}
		default:
			bad("enum applies only to string and int columns")
		}
	}
	if c.MaxLength != 0 {
		if c.Type != TypeString {
			bad("max_length applies only to string columns")
		} else if c.MaxLength < 0 {
			bad("max_length must be 1 or more, got %d", c.MaxLength)
		}
	}
	return errs
}

func boundLess(typ string, a, b Bound) bool {
	switch typ {
	case TypeFloat:
		return a.Float < b.Float
	case TypeDecimal:
		return a.Decimal.Less(b.Decimal)
	}
	return a.Int < b.Int
}

// checkMode checks mode, sequence, op and duplicates against the keys and columns.
func (d *Definition) checkMode(bad func(string, ...any)) {
	mode := d.Mode
	switch mode {
	case "", ModeAppend:
		mode = ModeAppend
	case ModeUpsert, ModeCDC:
		if len(d.Keys) == 0 {
			bad("mode %s needs keys (the primary key rows replace or delete by)", mode)
		}
	default:
		bad("mode %q is not supported (append, upsert or cdc)", d.Mode)
	}
	if d.Sequence != "" {
		c, ok := d.Column(d.Sequence)
		switch {
		case mode == ModeAppend:
			bad("sequence applies only to mode upsert or cdc")
		case !ok:
			bad("sequence: %q is not a column", d.Sequence)
		case c.Type != TypeInt && c.Type != TypeDate && c.Type != TypeTimestamp:
			bad("sequence: column %q is %s, want int, date or timestamp", d.Sequence, c.Type)
		}
	}
	switch {
	case d.Op == nil && mode == ModeCDC:
		bad("op is required for mode cdc (the column holding insert, update or delete)")
	case d.Op != nil && mode != ModeCDC:
		bad("op applies only to mode cdc")
	case d.Op != nil:
		if c, ok := d.Column(d.Op.Column); !ok {
			bad("op.column: %q is not a column", d.Op.Column)
		} else if c.Type != TypeString {
			bad("op.column: column %q is %s, want string", d.Op.Column, c.Type)
		}
		ins, upd, del := d.Op.Values()
		seen := map[string]string{}
		for _, l := range []struct {
			name string
			vals []string
		}{{"insert", ins}, {"update", upd}, {"delete", del}} {
			for j, v := range l.vals {
				k := strings.ToUpper(strings.TrimSpace(v))
				if k == "" {
					bad("op.%s[%d] is empty", l.name, j)
					continue
				}
				if prev, ok := seen[k]; ok && prev != l.name {
					bad("op.%s[%d]: %q also means %s", l.name, j, v, prev)
				}
				seen[k] = l.name
			}
		}
	}
	switch d.Duplicates {
	case "", DuplicatesKeep:
	case DuplicatesDrop:
		if mode != ModeAppend {
			bad("duplicates applies only to mode append (upsert and cdc replace by keys)")
		} else if len(d.Keys) == 0 {
			bad("duplicates: drop needs keys (the columns that make a row a duplicate)")
		}
	default:
		bad("duplicates %q is not supported (keep or drop)", d.Duplicates)
	}
}
