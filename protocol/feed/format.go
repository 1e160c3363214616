package feed

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Drift policies: what happens to a source field (a header name, an XML leaf path) that
// no column takes and Ignore does not list.
const (
	// DriftRescue keeps such fields' non-empty values in the ColRescued column, a JSON
	// object {source name: value}. The default.
	DriftRescue = "rescue"
	// DriftReject makes the entry a file error (quarantine) naming the fields.
	DriftReject = "reject"
	// DriftAdd loads each such field into an extra nullable string column named by
	// AddedColumnName; the hub adds the column to the table.
	DriftAdd = "add"
	// DriftIgnore does not load them; the normalizer's statistics still list them.
	DriftIgnore = "ignore"
)

// SniffBytes is how much of an entry's decoded text Match.Sniff sees.
const SniffBytes = 4096

// DriftPolicy is the effective drift policy.
func (d *Definition) DriftPolicy() string {
	if d.Drift == "" {
		return DriftRescue
	}
	return d.Drift
}

// Ignored reports whether Ignore lists the source field name (compared as header names
// are: case-insensitive, surrounding spaces dropped).
func (d *Definition) Ignored(name string) bool {
	k := strings.ToLower(strings.TrimSpace(name))
	for _, i := range d.Ignore {
		if strings.ToLower(strings.TrimSpace(i)) == k {
			return true
		}
	}
	return false
}

// QuoteRune is the csv quote character; ok is false when quoting is off.
func (f Format) QuoteRune() (r rune, ok bool) {
	if f.Quote == nil {
		return '"', true
	}
	if *f.Quote == "" || strings.EqualFold(*f.Quote, "none") {
		return 0, false
	}
	r, _ = utf8.DecodeRuneInString(*f.Quote)
	return r, true
}

// EscapeRune is the csv escape character, 0 when quotes are doubled instead.
func (f Format) EscapeRune() rune {
	r, _ := utf8.DecodeRuneInString(f.Escape)
	if f.Escape == "" {
		return 0
	}
	return r
}

// CommentRune is the comment character, 0 when there is none.
func (f Format) CommentRune() rune {
	if f.Comment == "" {
		return 0
	}
	r, _ := utf8.DecodeRuneInString(f.Comment)
	return r
}

// validateCSV checks the options of delimited text and its columns.
func (d *Definition) validateCSV(bad func(string, ...any)) {
	f := d.Format
	if f.Delimiter != "" && f.Delimiter != `\t` && utf8.RuneCountInString(f.Delimiter) != 1 {
		bad("format.delimiter %q must be one character", f.Delimiter)
	}
	comma := f.Comma()
	quote, quoted := f.QuoteRune()
	special := map[rune]string{comma: "format.delimiter"}
	lineBreak := func(r rune) bool { return r == '\n' || r == '\r' }
	if lineBreak(comma) || comma == utf8.RuneError {
		bad("format.delimiter %q cannot be a line break", f.Delimiter)
	}
	if f.Quote != nil && *f.Quote != "" && !strings.EqualFold(*f.Quote, "none") && utf8.RuneCountInString(*f.Quote) != 1 {
		bad(`format.quote %q must be one character, or "" for no quoting`, *f.Quote)
	} else if quoted {
		if lineBreak(quote) {
			bad("format.quote %q cannot be a line break", *f.Quote)
		}
		if quote == comma {
			bad("format.quote %q cannot be the delimiter", string(quote))
		}
		special[quote] = "format.quote"
	}
	if f.Escape != "" {
		switch e := f.EscapeRune(); {
		case utf8.RuneCountInString(f.Escape) != 1:
			bad("format.escape %q must be one character", f.Escape)
		case !quoted:
			bad("format.escape applies only with a format.quote")
		case lineBreak(e) || e == comma:
			bad("format.escape %q cannot be a line break or the delimiter", f.Escape)
		case e == quote:
			bad("format.escape %q is the quote; leave escape out for doubled quotes", f.Escape)
		}
	}
	d.validateComment(bad, special)
	d.validateSkip(bad)
	if f.Record != "" {
		bad("format.record applies only to xml")
	}
	header := f.HasHeader()
	for i, c := range d.Columns {
		switch {
		case c.Start != 0 || c.Width != 0:
			bad("columns[%d] %q: start and width apply only to format.type fixed", i, c.Name)
		case header && c.Index != 0:
			bad("columns[%d] %q: index applies only with format.header: false (columns are found by header name)", i, c.Name)
		case !header && c.Index < 1:
			bad("columns[%d] %q: index (1-based field number) is required with format.header: false", i, c.Name)
		case !header && c.Source != "":
			bad("columns[%d] %q: source names a header field; with format.header: false use index", i, c.Name)
		}
	}
	if !header {
		seen := map[int]string{}
		for i, c := range d.Columns {
			if c.Index < 1 {
				continue
			}
			if prev, ok := seen[c.Index]; ok {
				bad("columns[%d] %q: index %d is already taken by column %q", i, c.Name, c.Index, prev)
			}
			seen[c.Index] = c.Name
		}
	}
}

// validateFixed checks fixed-width options and every column's start and width.
func (d *Definition) validateFixed(bad func(string, ...any)) {
	f := d.Format
	if f.Delimiter != "" || f.Quote != nil || f.Escape != "" || f.TrailingDelimiter {
		bad("format.delimiter, quote, escape and trailing_delimiter apply only to csv")
	}
	if f.Header != nil && *f.Header {
		bad("format.header: fixed-width files have no header line (use skip_lines to pass one)")
	}
	if f.Record != "" {
		bad("format.record applies only to xml")
	}
	d.validateComment(bad, nil)
	d.validateSkip(bad)
	for i, c := range d.Columns {
		if c.Index != 0 {
			bad("columns[%d] %q: index applies only to csv; fixed columns use start and width", i, c.Name)
		}
		if c.Source != "" {
			bad("columns[%d] %q: source does not apply to fixed width; use start and width", i, c.Name)
		}
		if c.Start < 1 {
			bad("columns[%d] %q: start (1-based rune position) is required for format.type fixed", i, c.Name)
		}
		if c.Width < 1 {
			bad("columns[%d] %q: width (runes) is required for format.type fixed", i, c.Name)
		}
	}
}

// validateTextOnly rejects the line-oriented options on a format that has no lines (xml).
func (d *Definition) validateTextOnly(bad func(string, ...any)) {
	f := d.Format
	if f.Quote != nil || f.Escape != "" || f.Comment != "" || f.SkipLines != 0 || f.TrailingDelimiter {
		bad("format.quote, escape, comment, skip_lines and trailing_delimiter do not apply to xml")
	}
	for i, c := range d.Columns {
		if c.Index != 0 || c.Start != 0 || c.Width != 0 {
			bad("columns[%d] %q: index, start and width do not apply to xml (use source)", i, c.Name)
		}
	}
}

func (d *Definition) validateComment(bad func(string, ...any), special map[rune]string) {
	f := d.Format
	if f.Comment == "" {
		return
	}
	c := f.CommentRune()
	switch {
	case utf8.RuneCountInString(f.Comment) != 1:
		bad("format.comment %q must be one character", f.Comment)
	case c == '\n' || c == '\r' || unicode.IsSpace(c):
		bad("format.comment %q cannot be white space or a line break", f.Comment)
	case special[c] != "":
		bad("format.comment %q cannot be the same as %s", f.Comment, special[c])
	case f.EscapeRune() == c:
		bad("format.comment %q cannot be the same as format.escape", f.Comment)
	}
}

func (d *Definition) validateSkip(bad func(string, ...any)) {
	if d.Format.SkipLines < 0 {
		bad("format.skip_lines must be 0 or more, got %d", d.Format.SkipLines)
	}
}

// validateMatch checks match.folder and match.sniff.
func (d *Definition) validateMatch(bad func(string, ...any)) {
	if d.Match.Folder != "" {
		pat := strings.TrimSuffix(d.Match.Folder, "/**")
		if _, err := path.Match(pat, ""); err != nil {
			bad("match.folder %q: %v", d.Match.Folder, err)
		}
		if strings.HasPrefix(d.Match.Folder, "/") || strings.Contains(d.Match.Folder, `\`) {
			bad("match.folder %q must be a relative, slash-separated path", d.Match.Folder)
		}
	}
	if d.Match.Sniff != "" {
		if _, err := regexp.Compile(d.Match.Sniff); err != nil {
			bad("match.sniff %q: %v", d.Match.Sniff, err)
		}
	}
}

// validateDrift checks drift and ignore.
func (d *Definition) validateDrift(bad func(string, ...any)) {
	switch d.Drift {
	case "", DriftRescue, DriftReject, DriftAdd, DriftIgnore:
	default:
		bad("drift %q is not a policy (rescue, reject, add, ignore)", d.Drift)
	}
	if !d.Named() && (d.Format.Type == FormatCSV || d.Format.Type == FormatFixed) {
		if d.Drift == DriftReject || d.Drift == DriftAdd {
			bad("drift %q: a file without a header has no named fields to drift (rescue keeps an always-NULL _rescued column; ignore drops it)", d.Drift)
		}
		if len(d.Ignore) > 0 {
			bad("ignore: a file without a header has no field names to ignore")
		}
	}
	for i, name := range d.Ignore {
		if strings.TrimSpace(name) == "" {
			bad("ignore[%d]: empty field name", i)
			continue
		}
		for j, c := range d.Columns {
			if d.Format.Type != FormatXML && strings.EqualFold(strings.TrimSpace(c.SourceName()), strings.TrimSpace(name)) ||
				d.Format.Type == FormatXML && c.SourceName() == name {
				bad("ignore[%d]: %q is the source of columns[%d] %q", i, name, j, c.Name)
			}
		}
	}
}

// Named reports whether source fields have names (a csv header, xml paths), so that
// drift applies; fixed width and csv without a header are positional.
func (d *Definition) Named() bool {
	return d.Format.Type == FormatXML || d.Format.Type == FormatCSV && d.Format.HasHeader()
}

// HasRescued reports whether batches and the table carry the ColRescued column: drift is
// rescue. A positional format (fixed width, csv without a header) has no named fields to
// rescue, so its _rescued is always NULL; it keeps the column so that every feed writing
// one table, whatever its format, gives the table the same columns.
func (d *Definition) HasRescued() bool {
	return d.DriftPolicy() == DriftRescue
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// AddedColumnName is the table column drift add makes of a source field name: the name
// lower-cased, every run of characters other than a-z and 0-9 turned into one "_",
// leading and trailing "_" dropped, "f_" put before a name that is empty or starts with
// a digit, and cut to 63 bytes: "Patient ID" → "patient_id", "Address/@zip" →
// "address_zip", "2nd Phone" → "f_2nd_phone". Two fields that become one name, or a
// name a column already has, make the entry a file error.
func AddedColumnName(source string) string {
	s := nonIdent.ReplaceAllString(strings.ToLower(source), "_")
	s = strings.Trim(s, "_")
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		s = "f_" + s
	}
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "_")
	}
	return s
}

// MatchDir reports whether a file in dir, its directory relative to the watched folder
// (slash-separated, "" for the folder itself), satisfies match.folder.
func (d *Definition) MatchDir(dir string) bool {
	pat := d.Match.Folder
	if pat == "" {
		return true
	}
	dir = strings.Trim(dir, "/")
	if dir == "." {
		dir = ""
	}
	if p, ok := strings.CutSuffix(pat, "/**"); ok {
		for cur := dir; ; {
			if m, _ := path.Match(p, cur); m {
				return true
			}
			i := strings.LastIndexByte(cur, '/')
			if i < 0 {
				return false
			}
			cur = cur[:i]
		}
	}
	m, _ := path.Match(pat, dir)
	return m
}

// Accepts reports whether a file or archive entry belongs to the feed: its base name
// matches match.glob, its file's directory match.folder, and, when the feed has
// match.sniff, the entry's text does. head returns the first SniffBytes of the entry's
// text decoded from the given encoding; it is called only when the rest matches and the
// feed sniffs.
func (d *Definition) Accepts(dir, baseName string, head func(encoding string) (string, error)) (bool, error) {
	if !d.Matches(baseName) || !d.MatchDir(dir) {
		return false, nil
	}
	if d.Match.Sniff == "" {
		return true, nil
	}
	re, err := regexp.Compile(d.Match.Sniff)
	if err != nil {
		return false, fmt.Errorf("feed %q: match.sniff: %w", d.Name, err)
	}
	text, err := head(d.Format.Encoding)
	if err != nil {
		return false, err
	}
	return re.MatchString(text), nil
}
