package normalize

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/medlake/medlake/protocol/feed"
)

// step is one compiled transform. It returns the new text, or a reason (without the
// "column x: " prefix) when the value rejects the row. Steps hold no per-run state and
// are safe for concurrent use.
type step func(s string) (out, reason string)

// compileStep prepares t for running: regexes are the ones compiled when the definition
// was read, lookup tables and secrets are resolved once here, never per row.
func compileStep(t feed.Transform, def *feed.Definition, key func(name string) ([]byte, error)) (step, error) {
	switch t.Step {
	case feed.StepTrim:
		return func(s string) (string, string) { return strings.TrimSpace(s), "" }, nil
	case feed.StepUpper:
		return func(s string) (string, string) { return strings.ToUpper(s), "" }, nil
	case feed.StepLower:
		return func(s string) (string, string) { return strings.ToLower(s), "" }, nil
	case feed.StepTitle:
		return func(s string) (string, string) { return title(s), "" }, nil
	case feed.StepDefault:
		d := t.Default
		return func(s string) (string, string) {
			if isBlank(s) {
				return d, ""
			}
			return s, ""
		}, nil
	case feed.StepNullIf:
		set := make(map[string]bool, len(t.NullIf))
		for _, v := range t.NullIf {
			set[strings.TrimSpace(v)] = true
		}
		return func(s string) (string, string) {
			if set[strings.TrimSpace(s)] {
				return "", ""
			}
			return s, ""
		}, nil
	case feed.StepLookup:
		return lookupStep(t.Lookup, def.Lookups[t.Lookup.Table]), nil
	case feed.StepSplit:
		sep, index := t.Split.Separator, t.Split.Index
		return func(s string) (string, string) {
			for range index - 1 {
				var ok bool
				if _, s, ok = strings.Cut(s, sep); !ok {
					return "", ""
				}
			}
			part, _, _ := strings.Cut(s, sep)
			return part, ""
		}, nil
	case feed.StepRegex:
		re, err := t.Regex.Pattern.Compiled()
		if err != nil {
			return nil, err
		}
		g := t.Regex.Group
		return func(s string) (string, string) {
			m := re.FindStringSubmatchIndex(s)
			if m == nil || m[2*g] < 0 {
				return "", ""
			}
			return s[m[2*g]:m[2*g+1]], ""
		}, nil
	case feed.StepReplace:
		re, err := t.Replace.Pattern.Compiled()
		if err != nil {
			return nil, err
		}
		with := t.Replace.With
		return func(s string) (string, string) { return re.ReplaceAllString(s, with), "" }, nil
	case feed.StepHash:
		k, err := key(t.Hash.Secret)
		if err != nil {
			return nil, err
		}
		return hashStep(k), nil
	case feed.StepMask:
		m := t.Mask
		ch := m.MaskChar()
		return func(s string) (string, string) { return mask(s, m.KeepFirst, m.KeepLast, ch), "" }, nil
	}
	return nil, fmt.Errorf("unknown transform %q", t.Step)
}

// isBlank reports whether text counts as empty: NULL once the transforms are done.
func isBlank(s string) bool { return strings.TrimSpace(s) == "" }

// lookupStep translates by a code table, compared trimmed; empty text stays empty.
func lookupStep(l feed.LookupStep, table map[string]string) step {
	name := l.Table
	return func(s string) (string, string) {
		k := strings.TrimSpace(s)
		if k == "" {
			return s, ""
		}
		if v, ok := table[k]; ok {
			return v, ""
		}
		switch l.Missing {
		case feed.MissingKeep:
			return s, ""
		case feed.MissingNull:
			return "", ""
		}
		return s, fmt.Sprintf("%s is not in lookup table %s", quote(s), name)
	}
}

// hashStep replaces non-empty text by its HMAC-SHA256 under key, in hex. Empty text
// stays empty, so NULL stays NULL instead of becoming the hash of nothing.
// Keyed hashes are pooled: setting one up costs two SHA-256 blocks, Reset none, and a
// pool keeps the step safe for concurrent Runs.
func hashStep(key []byte) step {
	pool := sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	return func(s string) (string, string) {
		if isBlank(s) {
			return s, ""
		}
		m := pool.Get().(hash.Hash)
		m.Reset()
		io.WriteString(m, s)
		var sum [sha256.Size]byte
		var out [2 * sha256.Size]byte
		hex.Encode(out[:], m.Sum(sum[:0]))
		pool.Put(m)
		return string(out[:]), ""
	}
}

// title upper-cases the first letter or digit of every word and lower-cases the rest; a
// word is a run of letters, digits and apostrophes ("o'neil-smith" → "O'neil-Smith").
func title(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	start := true
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '\'':
			if start {
				b.WriteRune(unicode.ToTitle(r))
			} else {
				b.WriteRune(unicode.ToLower(r))
			}
			start = false
		default:
			b.WriteRune(r)
			start = true
		}
	}
	return b.String()
}

// mask hides every character but the first keepFirst and the last keepLast; text no
// longer than what would be kept is hidden whole, so a mask never shows a whole value.
func mask(s string, keepFirst, keepLast int, ch rune) string {
	if s == "" {
		return s
	}
	n := utf8.RuneCountInString(s)
	if n <= keepFirst+keepLast {
		keepFirst, keepLast = 0, 0
	}
	var b strings.Builder
	b.Grow(len(s))
	i := 0
	for _, r := range s {
		if i < keepFirst || i >= n-keepLast {
			b.WriteRune(r)
		} else {
			b.WriteRune(ch)
		}
		i++
	}
	return b.String()
}

// rules are a column's compiled validation checks, run on the converted value.
type rules struct {
	lo, hi    feed.Bound
	pattern   *regexp.Regexp // anchored: the whole value must match
	patText   string         // as written, for reasons
	enum      map[string]bool
	enumInts  map[int64]bool
	enumText  string // the allowed values, for reasons
	maxLength int
}

func compileRules(c feed.Column) (*rules, error) {
	if c.Min == "" && c.Max == "" && c.Pattern.IsZero() && len(c.Enum) == 0 && c.MaxLength == 0 {
		return nil, nil
	}
	r := &rules{maxLength: c.MaxLength}
	var err error
	if r.lo, r.hi, err = c.Bounds(); err != nil {
		return nil, err
	}
	if !c.Pattern.IsZero() {
		if _, err := c.Pattern.Compiled(); err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		// Compiled once here, anchored, so that a row costs one match.
		r.patText = c.Pattern.String()
		if r.pattern, err = regexp.Compile(`^(?:` + c.Pattern.String() + `)$`); err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
	}
	if len(c.Enum) > 0 {
		vals := make([]string, len(c.Enum))
		r.enum, r.enumInts = map[string]bool{}, map[int64]bool{}
		for i, e := range c.Enum {
			vals[i] = string(e)
			r.enum[string(e)] = true
			if c.Type == feed.TypeInt {
				var v value
				if err := parseInt(string(e), &v); err != nil {
					return nil, fmt.Errorf("enum[%d]: %w", i, err)
				}
				r.enumInts[v.i] = true
			}
		}
		r.enumText = strings.Join(vals, ", ")
	}
	return r, nil
}

// check returns why the converted value v (text s) breaks a rule, or "".
func (r *rules) check(c *column, s string, v *value) string {
	if r.lo.Set || r.hi.Set {
		var below, above bool
		switch c.Type {
		case feed.TypeFloat:
			below, above = r.lo.Set && v.f < r.lo.Float, r.hi.Set && v.f > r.hi.Float
		case feed.TypeDecimal:
			below, above = r.lo.Set && v.d.Less(r.lo.Decimal), r.hi.Set && v.d.Greater(r.hi.Decimal)
		default: // int, date, timestamp
			below, above = r.lo.Set && v.i < r.lo.Int, r.hi.Set && v.i > r.hi.Int
		}
		if below {
			return fmt.Sprintf("%s is below min %s", strings.TrimSpace(s), r.lo.Text)
		}
		if above {
			return fmt.Sprintf("%s is above max %s", strings.TrimSpace(s), r.hi.Text)
		}
	}
	if r.pattern != nil && !r.pattern.MatchString(v.s) {
		return fmt.Sprintf("%s does not match pattern %s", quote(v.s), r.patText)
	}
	if r.enum != nil {
		ok := r.enum[v.s]
		if c.Type == feed.TypeInt {
			ok = r.enumInts[v.i]
		}
		if !ok {
			return fmt.Sprintf("%s is not one of %s", quote(s), r.enumText)
		}
	}
	if r.maxLength > 0 {
		if n := utf8.RuneCountInString(v.s); n > r.maxLength {
			return fmt.Sprintf("%s is %d characters, longer than max_length %d", quote(v.s), n, r.maxLength)
		}
	}
	return ""
}
