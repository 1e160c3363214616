package normalize

import (
	"errors"
	"fmt"
	"strings"

	"github.com/medlake/medlake/protocol/feed"
)

// The row stage: every format hands convert the raw text of each source field (a slot),
// and convert takes every column's value through the same life:
//
//	source field(s) → joined → transforms → empty is NULL (required rejects)
//	→ type conversion (timezone, decimal) → validation → row
//
// A column with one source and no transforms or rules takes a short path that does no
// more than it did before transforms existed, so plain feeds pay nothing for them.

// prepareColumns compiles every column's row stage and lays out the source slots: a
// column with sources takes one slot per source, any other column one slot.
func (n *Normalizer) prepareColumns(key func(name string) ([]byte, error)) error {
	def := n.def
	n.cols = make([]column, len(def.Columns))
	for i, fc := range def.Columns {
		c := &n.cols[i]
		c.Column = fc
		c.layouts = fc.Layouts()
		c.join = fc.Separator()
		var err error
		if c.loc, err = fc.Location(); err != nil {
			return fmt.Errorf("column %q: timezone: %w", fc.Name, err)
		}
		for _, src := range fc.SourceNames() {
			c.slots = append(c.slots, len(n.slots))
			n.slots = append(n.slots, src)
			n.slotCol = append(n.slotCol, i)
		}
		for j, t := range fc.Transforms {
			st, err := compileStep(t, def, key)
			if err != nil {
				return fmt.Errorf("columns[%d] %q: transforms[%d]: %s: %w", i, fc.Name, j, t.Step, err)
			}
			c.steps = append(c.steps, st)
		}
		if c.rules, err = compileRules(fc); err != nil {
			return fmt.Errorf("columns[%d] %q: %w", i, fc.Name, err)
		}
		c.simple = len(c.slots) == 1 && len(c.steps) == 0
		switch fc.Type {
		case feed.TypeString:
			c.parse = parseString
		case feed.TypeInt:
			c.parse = parseInt
		case feed.TypeFloat:
			c.parse = parseFloat
		case feed.TypeBool:
			c.parse = parseBool
		case feed.TypeDate:
			c.parse = c.parseDate
		case feed.TypeTimestamp:
			c.parse = c.parseTimestamp
		case feed.TypeDecimal:
			c.parse = c.parseDecimal
		default:
			return fmt.Errorf("column %q: unsupported type %q", fc.Name, fc.Type)
		}
	}
	return nil
}

// secretKeys returns the key lookup hash steps use: each named secret read once through
// Options.Secret. Errors name the secret, never its value.
func secretKeys(secret func(name string) ([]byte, error)) func(name string) ([]byte, error) {
	keys := map[string][]byte{}
	return func(name string) ([]byte, error) {
		if k, ok := keys[name]; ok {
			return k, nil
		}
		if secret == nil {
			return nil, fmt.Errorf("secret %q: no secret store is configured (Options.Secret)", name)
		}
		k, err := secret(name)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", name, err)
		}
		if len(k) == 0 {
			return nil, fmt.Errorf("secret %q: %w", name, errors.New("the secret is empty"))
		}
		keys[name] = k
		return k, nil
	}
}

// convert takes one record's slot texts through every column's row stage into vals, or
// describes the first column that fails. fields[idx[slot]] is a slot's text; idx[slot]
// < 0 means the source field is absent (NULL, or empty text for transforms).
func (n *Normalizer) convert(fields []string, idx []int, vals []value) (Reject, bool) {
	for i := range n.cols {
		c := &n.cols[i]
		v := &vals[i]
		*v = value{}
		var s string
		if c.simple {
			f := idx[c.slots[0]]
			if f < 0 {
				continue
			}
			s = fields[f]
		} else {
			var reason string
			if s, reason = c.text(fields, idx); reason != "" {
				return c.reject(reason), false
			}
		}
		if isBlank(s) {
			if c.Required {
				return c.reject("required value is empty"), false
			}
			continue
		}
		if err := c.parse(s, v); err != nil {
			return c.reject(err.Error()), false
		}
		v.valid = true
		if c.rules != nil {
			if reason := c.rules.check(c, s, v); reason != "" {
				return c.reject(reason), false
			}
		}
	}
	return Reject{}, true
}

// text joins a column's sources, trimmed and skipping empty ones, and runs its
// transforms; a non-empty reason rejects the row.
func (c *column) text(fields []string, idx []int) (s, reason string) {
	if len(c.slots) == 1 {
		if f := idx[c.slots[0]]; f >= 0 {
			s = fields[f]
		}
	} else {
		var b strings.Builder
		for _, sl := range c.slots {
			f := idx[sl]
			if f < 0 {
				continue
			}
			part := strings.TrimSpace(fields[f])
			if part == "" {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(c.join)
			}
			b.WriteString(part)
		}
		s = b.String()
	}
	for _, st := range c.steps {
		if s, reason = st(s); reason != "" {
			return s, reason
		}
	}
	return s, ""
}

func (c *column) reject(reason string) Reject {
	return Reject{Column: c.Name, Reason: "column " + c.Name + ": " + reason}
}
