package feed

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// Transform steps. The first four are written as bare strings, the others as a map with
// the step as its one key.
const (
	StepTrim    = "trim"    // drop leading and trailing white space
	StepUpper   = "upper"   // upper case
	StepLower   = "lower"   // lower case
	StepTitle   = "title"   // first letter of every word upper case, the rest lower
	StepDefault = "default" // default: "U": the text used when the text is empty
	StepNullIf  = "null_if" // null_if: ["NULL", "N/A"]: these values (trimmed) become empty
	StepLookup  = "lookup"  // lookup: table, or {table, missing}: replace by a code table
	StepSplit   = "split"   // split: {separator, index}: keep the index-th part (1-based)
	StepRegex   = "regex"   // regex: {pattern, group}: keep a group of the first match
	StepReplace = "replace" // replace: {pattern, with}: replace every match
	StepHash    = "hash"    // hash: {secret}: HMAC-SHA256 hex, keyed by an agent secret
	StepMask    = "mask"    // mask: {keep_first, keep_last, char}: hide the other characters
)

// What a lookup does with a value its table lacks (LookupStep.Missing).
const (
	MissingReject = "reject" // reject the row (the default)
	MissingKeep   = "keep"   // keep the value as it is
	MissingNull   = "null"   // make it empty
)

// bareSteps take no argument.
var bareSteps = []string{StepTrim, StepUpper, StepLower, StepTitle}

// Steps lists every transform step.
func Steps() []string {
	return append(slices.Clone(bareSteps), StepDefault, StepNullIf, StepLookup, StepSplit, StepRegex, StepReplace, StepHash, StepMask)
}

// Transform is one step applied to a column's text. In YAML it is a bare step name
// ("trim") or a map with the step as its one key ("default: U", "split: {separator: ^,
// index: 2}"). Step says which; only that step's argument field is set.
type Transform struct {
	Step    string
	Default string   // default
	NullIf  []string // null_if
	Lookup  LookupStep
	Split   SplitStep
	Regex   RegexStep
	Replace ReplaceStep
	Hash    HashStep
	Mask    MaskStep
}

// LookupStep replaces the text by its entry in a code table of Definition.Lookups. Empty
// text stays empty.
type LookupStep struct {
	Table string `yaml:"table"`
	// Missing is reject (the default), keep or null.
	Missing string `yaml:"missing,omitempty"`
}

// SplitStep keeps one part of the text cut at every Separator; a missing part is empty.
type SplitStep struct {
	Separator string `yaml:"separator"`
	Index     int    `yaml:"index"` // 1-based
}

// RegexStep keeps group Group (0: the whole match) of the pattern's first match; no
// match is empty text.
type RegexStep struct {
	Pattern Regexp `yaml:"pattern"`
	Group   int    `yaml:"group,omitempty"`
}

// ReplaceStep replaces every match of Pattern by With, in which $1 or ${name} stand for
// the match's groups.
type ReplaceStep struct {
	Pattern Regexp `yaml:"pattern"`
	With    string `yaml:"with"`
}

// HashStep replaces non-empty text by the lower-case hex HMAC-SHA256 of it, keyed by
// the agent secret named Secret: equal values stay joinable, and without the key the
// value cannot be recovered by hashing guesses.
type HashStep struct {
	Secret string `yaml:"secret"`
}

// MaskStep replaces every character but the first KeepFirst and the last KeepLast by
// Char (default "*"). A value no longer than what would be kept is masked whole, so a
// mask never shows a whole value.
type MaskStep struct {
	KeepFirst int    `yaml:"keep_first,omitempty"`
	KeepLast  int    `yaml:"keep_last,omitempty"`
	Char      string `yaml:"char,omitempty"`
}

// MaskChar is the character masking uses.
func (m MaskStep) MaskChar() rune {
	if m.Char == "" {
		return '*'
	}
	r, _ := utf8.DecodeRuneInString(m.Char)
	return r
}

// UnmarshalYAML reads a bare step or a one-key map. The step name and its arguments'
// values are checked by Definition.Validate, which names the column and position.
func (t *Transform) UnmarshalYAML(n *yaml.Node) error {
	*t = Transform{}
	if n.Kind == yaml.ScalarNode {
		t.Step = n.Value
		return nil
	}
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return fmt.Errorf("line %d: a transform is a step name (%s) or a map with one key", n.Line, strings.Join(bareSteps, ", "))
	}
	t.Step = n.Content[0].Value
	v := n.Content[1]
	switch t.Step {
	case StepTrim, StepUpper, StepLower, StepTitle:
		return fmt.Errorf("line %d: %s takes no argument: write it as a bare string", n.Line, t.Step)
	case StepDefault:
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: default: want a text", v.Line)
		}
		t.Default = v.Value
	case StepNullIf:
		if v.Kind == yaml.ScalarNode {
			t.NullIf = []string{v.Value}
			return nil
		}
		if v.Kind != yaml.SequenceNode {
			return fmt.Errorf("line %d: null_if: want a list of texts", v.Line)
		}
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: null_if: want a list of texts", e.Line)
			}
			t.NullIf = append(t.NullIf, e.Value)
		}
	case StepLookup:
		if v.Kind == yaml.ScalarNode {
			t.Lookup.Table = v.Value
			return nil
		}
		if err := decodeArgs(v, t.Step, &t.Lookup, "table", "missing"); err != nil {
			return err
		}
		// "missing: null" unquoted is a YAML null, which decodes to "": it means null.
		for i := 0; i < len(v.Content); i += 2 {
			if v.Content[i].Value == "missing" && v.Content[i+1].Tag == "!!null" {
				t.Lookup.Missing = MissingNull
			}
		}
	case StepSplit:
		return decodeArgs(v, t.Step, &t.Split, "separator", "index")
	case StepRegex:
		return decodeArgs(v, t.Step, &t.Regex, "pattern", "group")
	case StepReplace:
		return decodeArgs(v, t.Step, &t.Replace, "pattern", "with")
	case StepHash:
		return decodeArgs(v, t.Step, &t.Hash, "secret")
	case StepMask:
		return decodeArgs(v, t.Step, &t.Mask, "keep_first", "keep_last", "char")
	}
	return nil
}

// decodeArgs decodes a step's argument map, refusing unknown keys as Parse does
// elsewhere (a custom unmarshaler does not inherit the decoder's strictness).
func decodeArgs(n *yaml.Node, step string, out any, keys ...string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s: want a map with %s", n.Line, step, strings.Join(keys, ", "))
	}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !slices.Contains(keys, k) {
			return fmt.Errorf("line %d: %s: unknown field %q (want %s)", n.Content[i].Line, step, k, strings.Join(keys, ", "))
		}
	}
	if err := n.Decode(out); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	return nil
}

// MarshalYAML writes the form UnmarshalYAML reads.
func (t Transform) MarshalYAML() (any, error) {
	var arg any
	switch t.Step {
	case StepDefault:
		arg = t.Default
	case StepNullIf:
		arg = t.NullIf
	case StepLookup:
		arg = t.Lookup
		if t.Lookup.Missing == "" {
			arg = t.Lookup.Table
		}
	case StepSplit:
		arg = t.Split
	case StepRegex:
		arg = t.Regex
	case StepReplace:
		arg = t.Replace
	case StepHash:
		arg = t.Hash
	case StepMask:
		arg = t.Mask
	default:
		return t.Step, nil
	}
	return map[string]any{t.Step: arg}, nil
}

// checkTransform checks one step's arguments against the definition.
func (d *Definition) checkTransform(t Transform) error {
	switch t.Step {
	case StepTrim, StepUpper, StepLower, StepTitle, StepDefault:
	case StepNullIf:
		if len(t.NullIf) == 0 {
			return errors.New("null_if needs at least one value")
		}
	case StepLookup:
		if t.Lookup.Table == "" {
			return errors.New("lookup needs a table name")
		}
		if _, ok := d.Lookups[t.Lookup.Table]; !ok {
			return fmt.Errorf("lookup table %q is not defined (lookups)", t.Lookup.Table)
		}
		switch t.Lookup.Missing {
		case "", MissingReject, MissingKeep, MissingNull:
		default:
			return fmt.Errorf("lookup missing %q is not supported (reject, keep or null)", t.Lookup.Missing)
		}
	case StepSplit:
		if t.Split.Separator == "" {
			return errors.New("split needs a separator")
		}
		if t.Split.Index < 1 {
			return fmt.Errorf("split index must be 1 or more (1-based), got %d", t.Split.Index)
		}
	case StepRegex:
		re, err := t.Regex.Pattern.Compiled()
		if err != nil {
			return fmt.Errorf("regex pattern %q: %w", t.Regex.Pattern, err)
		}
		if t.Regex.Group < 0 || t.Regex.Group > re.NumSubexp() {
			return fmt.Errorf("regex group %d: the pattern has %d group(s)", t.Regex.Group, re.NumSubexp())
		}
	case StepReplace:
		if _, err := t.Replace.Pattern.Compiled(); err != nil {
			return fmt.Errorf("replace pattern %q: %w", t.Replace.Pattern, err)
		}
	case StepHash:
		if t.Hash.Secret == "" {
			return errors.New("hash needs a secret name (the key is never part of a definition)")
		}
	case StepMask:
		if t.Mask.KeepFirst < 0 || t.Mask.KeepLast < 0 {
			return fmt.Errorf("mask keep_first and keep_last must be 0 or more, got %d and %d", t.Mask.KeepFirst, t.Mask.KeepLast)
		}
		if t.Mask.Char != "" && utf8.RuneCountInString(t.Mask.Char) != 1 {
			return fmt.Errorf("mask char %q must be one character", t.Mask.Char)
		}
	case "":
		return errors.New("empty transform step")
	default:
		return fmt.Errorf("unknown transform %q (%s)", t.Step, strings.Join(Steps(), ", "))
	}
	return nil
}

// JSONSchema describes a transform: a bare step name or a map with one step key.
func (Transform) JSONSchema() *jsonschema.Schema {
	str := func(desc string) *jsonschema.Schema { return &jsonschema.Schema{Type: "string", Description: desc} }
	integer := func(min int, desc string) *jsonschema.Schema {
		return &jsonschema.Schema{Type: "integer", Minimum: json.Number(fmt.Sprint(min)), Description: desc}
	}
	object := func(required []string, props ...any) *jsonschema.Schema {
		p := jsonschema.NewProperties()
		for i := 0; i < len(props); i += 2 {
			p.Set(props[i].(string), props[i+1].(*jsonschema.Schema))
		}
		return &jsonschema.Schema{Type: "object", Properties: p, Required: required, AdditionalProperties: jsonschema.FalseSchema}
	}
	step := func(name, desc string, arg *jsonschema.Schema) *jsonschema.Schema {
		s := object([]string{name}, name, arg)
		s.Description = desc
		return s
	}
	bare := make([]any, len(bareSteps))
	for i, s := range bareSteps {
		bare[i] = s
	}
	return &jsonschema.Schema{
		Description: "A transform: a bare step (trim, upper, lower, title) or a map with one step key.",
		OneOf: []*jsonschema.Schema{
			{Type: "string", Enum: bare, Description: "trim: drop surrounding white space; upper, lower: change case; title: capitalize every word."},
			step(StepDefault, "The text used when the text is empty.", str("")),
			// An unquoted NULL in the list is a YAML null; Parse reads it as the text written.
			step(StepNullIf, "These values (compared trimmed) become empty, that is NULL.",
				&jsonschema.Schema{AnyOf: []*jsonschema.Schema{{Type: "string"}, {Type: "array", Items: &jsonschema.Schema{AnyOf: []*jsonschema.Schema{{Type: "string"}, {Type: "null"}}}}}}),
			step(StepLookup, "Replace the text by its entry in a table of lookups; a value the table lacks rejects the row unless missing says keep or null.",
				&jsonschema.Schema{AnyOf: []*jsonschema.Schema{
					str("table name"),
					object([]string{"table"}, "table", str("table name"), "missing", &jsonschema.Schema{Type: "string", Enum: []any{MissingReject, MissingKeep, MissingNull}}),
				}}),
			step(StepSplit, "Keep the index-th part (1-based) of the text cut at every separator; a missing part is empty.",
				object([]string{"separator", "index"}, "separator", str(""), "index", integer(1, "1-based part number"))),
			step(StepRegex, "Keep a group of the first match of an RE2 pattern (group 0: the whole match); no match is empty.",
				object([]string{"pattern"}, "pattern", str("RE2 regular expression"), "group", integer(0, ""))),
			step(StepReplace, "Replace every match of an RE2 pattern; $1 in with stands for a group.",
				object([]string{"pattern", "with"}, "pattern", str("RE2 regular expression"), "with", str(""))),
			step(StepHash, "Replace the text by its HMAC-SHA256 (hex) keyed by the named agent secret.",
				object([]string{"secret"}, "secret", str("name of the agent secret holding the key"))),
			step(StepMask, "Replace every character but the first keep_first and last keep_last by char (default *).",
				object(nil, "keep_first", integer(0, ""), "keep_last", integer(0, ""), "char", str("one character"))),
		},
	}
}

// Regexp is an RE2 regular expression from a definition, compiled once when it is read.
// The zero value is no pattern.
type Regexp struct {
	text string
	re   *regexp.Regexp
	err  error
}

// NewRegexp compiles text; a compile error is kept for Validate to report.
func NewRegexp(text string) Regexp {
	re, err := regexp.Compile(text)
	return Regexp{text: text, re: re, err: err}
}

// String is the pattern as written.
func (r Regexp) String() string { return r.text }

// IsZero reports whether no pattern is set.
func (r Regexp) IsZero() bool { return r.text == "" }

// Compiled returns the compiled pattern, or why it does not compile. An empty pattern is
// an error.
func (r Regexp) Compiled() (*regexp.Regexp, error) {
	switch {
	case r.text == "":
		return nil, errors.New("the pattern is empty")
	case r.err != nil:
		return nil, r.err
	case r.re == nil:
		return regexp.Compile(r.text)
	}
	return r.re, nil
}

// UnmarshalYAML reads and compiles a pattern.
func (r *Regexp) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a regular expression", n.Line)
	}
	*r = NewRegexp(n.Value)
	return nil
}

// MarshalYAML writes the pattern as written.
func (r Regexp) MarshalYAML() (any, error) { return r.text, nil }

// MarshalJSON writes the pattern as a string.
func (r Regexp) MarshalJSON() ([]byte, error) { return json.Marshal(r.text) }

// UnmarshalJSON reads and compiles a pattern.
func (r *Regexp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*r = NewRegexp(s)
	return nil
}

// JSONSchema describes a Regexp: a string.
func (Regexp) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string", Description: "An RE2 regular expression."}
}
