package normalize

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/medlake/medlake/protocol/feed"
)

// textReader yields the records of a delimited or fixed-width entry.
type textReader interface {
	// Read returns the next record's fields (valid until the next Read), the physical
	// line it starts on (1-based, skipped lines counted) and its raw text. A record that
	// must be rejected for its syntax returns an error wrapping errRecordSyntax, with
	// line and raw set; io.EOF ends the input; any other error ends the run.
	Read() (fields []string, line int64, raw []byte, err error)
}

// errRecordSyntax marks a record whose syntax is bad: the record is rejected, reading
// goes on.
var errRecordSyntax = errors.New("bad record syntax")

// recordError is a record rejected by its reader, naming the column when one is at fault.
type recordError struct {
	column, reason string
}

func (e *recordError) Error() string { return e.reason }
func (e *recordError) Unwrap() error { return errRecordSyntax }

// newTextReader picks the reader for the feed's format: encoding/csv for delimited text
// it can read (the common case, and the fast one), delimReader for a custom quote, no
// quoting or an escape character, fixedReader for fixed width. skip_lines are consumed
// here, so every reader counts lines from skipped+1.
func (n *Normalizer) newTextReader(text io.Reader) (textReader, error) {
	f := n.def.Format
	var skipped int64
	if f.SkipLines > 0 {
		br := bufio.NewReaderSize(text, 64<<10)
		for skipped < int64(f.SkipLines) {
			_, err := br.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
			skipped++
		}
		text = br
	}
	if f.Type == feed.FormatFixed {
		fr := &fixedReader{r: bufio.NewReaderSize(text, 64<<10), line: skipped, comment: f.CommentRune()}
		for _, c := range n.cols {
			fr.cols = append(fr.cols, fixedSpan{name: c.Name, start: c.Start, width: c.Width, required: c.Required})
			fr.maxEnd = max(fr.maxEnd, c.Start+c.Width-1)
		}
		return fr, nil
	}
	quote, quoted := f.QuoteRune()
	if quoted && quote == '"' && f.EscapeRune() == 0 {
		rec := &recorder{r: text, max: n.opts.MaxRecordBytes}
		cr := csv.NewReader(rec)
		cr.Comma = f.Comma()
		cr.Comment = f.CommentRune()
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		return &stdReader{cr: cr, rec: rec, skipped: skipped, comment: []byte(f.Comment)}, nil
	}
	d := newDelimReader(text, f.Comma(), quote, quoted, f.EscapeRune(), f.CommentRune())
	d.line = skipped
	return d, nil
}

// stdReader is encoding/csv with the positions and raw text rejects need.
type stdReader struct {
	cr      *csv.Reader
	rec     *recorder
	skipped int64
	comment []byte // comment lines are dropped from a record's raw text
}

func (s *stdReader) Read() ([]string, int64, []byte, error) {
	fields, err := s.cr.Read()
	if err == io.EOF {
		return nil, 0, nil, io.EOF
	}
	raw := s.rec.take(s.cr.InputOffset())
	if len(s.comment) > 0 {
		raw = dropComments(raw, s.comment)
	}
	if err != nil {
		if pe, ok := asParseError(err); ok {
			return nil, int64(pe.StartLine) + s.skipped, raw, &recordError{reason: fmt.Sprintf("line %d column %d: %v", int64(pe.Line)+s.skipped, pe.Column, pe.Err)}
		}
		if errors.Is(err, ErrRecordTooLong) {
			return nil, s.rec.lines + 1 + s.skipped, raw, err
		}
		line, _ := s.cr.FieldPos(0)
		return nil, int64(line) + s.skipped, raw, err
	}
	line, _ := s.cr.FieldPos(0)
	if bytes.Count(raw, []byte{'"'})%2 != 0 {
		// encoding/csv accepts a quoted field left open at end of input: a truncated
		// file must not pass its last record off as complete.
		return nil, int64(line) + s.skipped, raw, &recordError{reason: "quoted field not terminated before end of input"}
	}
	return fields, int64(line) + s.skipped, raw, nil
}

func asParseError(err error) (*csv.ParseError, bool) {
	var pe *csv.ParseError
	ok := errors.As(err, &pe)
	return pe, ok
}

func asRecordError(err error) (*recordError, bool) {
	var re *recordError
	ok := errors.As(err, &re)
	return re, ok
}

// dropComments removes the blank and comment lines encoding/csv skipped before a record.
func dropComments(raw, comment []byte) []byte {
	for {
		raw = bytes.TrimLeft(raw, "\r\n")
		if !bytes.HasPrefix(raw, comment) {
			return raw
		}
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return raw[:0]
		}
		raw = raw[i+1:]
	}
}

// fixedSpan is one fixed-width column's place in a line.
type fixedSpan struct {
	name         string
	start, width int
	required     bool
}

// fixedReader reads fixed-width lines: each column is the runes [start, start+width) of
// its line with surrounding spaces trimmed. Empty lines and comment lines are skipped. A
// line that ends before a column does gives that column what it holds of it (exports
// often drop trailing padding), unless the column is required: then the record is bad.
type fixedReader struct {
	r       *bufio.Reader
	line    int64
	comment rune
	cols    []fixedSpan
	maxEnd  int
	raw     []byte
	offs    []int // byte offset of each rune position 0..maxEnd in the current line
	fields  []string
}

func (f *fixedReader) Read() ([]string, int64, []byte, error) {
	for {
		f.raw = f.raw[:0]
		for {
			b, err := f.r.ReadSlice('\n')
			f.raw = append(f.raw, b...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF && len(f.raw) == 0 {
				return nil, 0, nil, io.EOF
			}
			if err != nil && err != io.EOF {
				return nil, f.line + 1, nil, err
			}
			break
		}
		f.line++
		body := lineBody(f.raw)
		if len(body) == 0 {
			continue
		}
		if f.comment != 0 {
			if r, _ := utf8.DecodeRune(body); r == f.comment {
				continue
			}
		}
		return f.split(body)
	}
}

func (f *fixedReader) split(body []byte) ([]string, int64, []byte, error) {
	// offs[k] is the byte offset of rune k, up to the line's end or maxEnd runes.
	f.offs = append(f.offs[:0], 0)
	for i := 0; len(f.offs) <= f.maxEnd && i < len(body); {
		_, size := utf8.DecodeRune(body[i:])
		i += size
		f.offs = append(f.offs, i)
	}
	runes := len(f.offs) - 1
	text := string(body)
	f.fields = f.fields[:0]
	for _, c := range f.cols {
		end := c.start + c.width - 1
		if runes < end && c.required {
			return nil, f.line, body, &recordError{column: c.name, reason: fmt.Sprintf(
				"line %d has %d characters; column %s needs characters %d-%d", f.line, utf8.RuneCount(body), c.name, c.start, end)}
		}
		lo, hi := min(c.start-1, runes), min(end, runes)
		f.fields = append(f.fields, strings.Trim(text[f.offs[lo]:f.offs[hi]], " "))
	}
	return f.fields, f.line, body, nil
}

// textPlan is how one entry's fields map to columns, fixed by its header (or by the
// definition for a positional format).
type textPlan struct {
	idx       []int // field index per column, -1 when the field is absent
	width     int   // fields a record must have
	atLeast   bool  // a record may have more than width fields (positional)
	drift     []int // fields no column takes and ignore does not list
	names     []string
	extraCols []int // batcher extra column per drift field (drift add)
}

// runText normalizes delimited and fixed-width text.
func (n *Normalizer) runText(ctx context.Context, r io.Reader, source string, b *Batcher, reject func(Reject) error) (Stats, error) {
	var st Stats
	text, err := csvText(r, n.def.Format.Encoding)
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", source, err)
	}
	tr, err := n.newTextReader(text)
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", source, err)
	}
	trailing := n.def.Format.TrailingDelimiter
	bt := b.begin(source, &st)
	plan, err := n.textHeader(tr, source, &st, bt)
	if err != nil {
		return st, err
	}
	vals := make([]value, n.nvals())
	extra := make([]value, len(plan.extraCols))
	rejectRow := func(rj Reject) error {
		rj.Source = source
		st.Rejected++
		if err := reject(rj); err != nil {
			return fmt.Errorf("recording reject for %s row %d: %w", source, rj.Row, err)
		}
		return nil
	}
	for {
		if st.Rows%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
		fields, line, raw, err := tr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// Only here: taking an error's address per record would cost an allocation each.
			re, ok := asRecordError(err)
			if !ok {
				if errors.Is(err, ErrRecordTooLong) {
					return st, fmt.Errorf("%s: record %d, starting on line %d: %w", source, st.Rows+1, line, err)
				}
				return st, fmt.Errorf("reading %s near line %d: %w", source, line, err)
			}
			st.Rows++
			if err := rejectRow(Reject{Row: st.Rows, Line: line, Column: re.column, Raw: rawText(raw), Reason: re.reason}); err != nil {
				return st, err
			}
			continue
		}
		st.Rows++
		row := st.Rows
		if trailing {
			fields = dropTrailing(fields)
		}
		if len(fields) != plan.width && !(plan.atLeast && len(fields) > plan.width) {
			reason := fmt.Sprintf("record has %d fields, header has %d", len(fields), plan.width)
			if plan.atLeast {
				reason = fmt.Sprintf("record has %d fields, columns need %d", len(fields), plan.width)
			}
			if err := rejectRow(Reject{Row: row, Line: line, Raw: rawText(raw), Reason: reason}); err != nil {
				return st, err
			}
			continue
		}
		if rj, ok := n.convert(fields, plan.idx, vals); !ok {
			rj.Row, rj.Line, rj.Raw = row, line, rawText(raw)
			if err := rejectRow(rj); err != nil {
				return st, err
			}
			continue
		}
		if len(plan.drift) > 0 {
			n.textDrift(plan, fields, vals, extra)
		}
		if err := bt.add(vals, extra, row); err != nil {
			return st, err
		}
	}
	return st, nil
}

// dropTrailing drops the empty field a trailing delimiter leaves at the end of a record.
// A record without the trailing delimiter keeps its fields: what it holds is complete,
// and the field count still catches a record with a field too many or too few.
func dropTrailing(fields []string) []string {
	if k := len(fields); k > 0 && fields[k-1] == "" {
		return fields[:k-1]
	}
	return fields
}

// textHeader reads the header record, when the format has one, and maps columns to
// fields; it applies the drift policy to the fields no column takes.
func (n *Normalizer) textHeader(tr textReader, source string, st *Stats, bt *Batcher) (*textPlan, error) {
	// Columns read their values through slots (one per source of a joined column); a
	// positional format has one slot per column.
	plan := &textPlan{idx: make([]int, len(n.slots))}
	if n.def.Format.Type == feed.FormatFixed {
		for sl := range plan.idx {
			plan.idx[sl] = n.slotCol[sl]
		}
		plan.width = len(n.cols)
		return plan, nil
	}
	if !n.def.Format.HasHeader() {
		for sl := range plan.idx {
			c := n.cols[n.slotCol[sl]]
			plan.idx[sl] = c.Index - 1
			plan.width = max(plan.width, c.Index)
		}
		plan.atLeast = true
		return plan, nil
	}
	hdr, line, _, err := tr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%s: no header line: %w", source, ErrHeader)
	}
	if errors.Is(err, errRecordSyntax) {
		return nil, fmt.Errorf("%s: header line %d: %w: %w", source, line, ErrHeader, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s header: %w", source, err)
	}
	if n.def.Format.TrailingDelimiter {
		hdr = dropTrailing(hdr)
	}
	// One header field may feed several slots (a column of its own and part of a
	// joined column).
	byName := make(map[string][]int, len(n.slots))
	for sl, name := range n.slots {
		plan.idx[sl] = -1
		k := headerKey(name)
		byName[k] = append(byName[k], sl)
	}
	for f, h := range hdr {
		if f == 0 {
			h = strings.TrimPrefix(h, "\uFEFF")
		}
		slots, ok := byName[headerKey(h)]
		if !ok {
			if n.def.Ignored(h) {
				continue
			}
			name := h
			if strings.TrimSpace(h) == "" {
				name = fmt.Sprintf("field%d", f+1)
			}
			st.Unmapped = append(st.Unmapped, name)
			plan.drift = append(plan.drift, f)
			plan.names = append(plan.names, name)
			continue
		}
		for _, sl := range slots {
			if plan.idx[sl] >= 0 {
				return nil, fmt.Errorf("%s: header names column %q twice (fields %d and %d): %w", source, h, plan.idx[sl]+1, f+1, ErrHeader)
			}
			plan.idx[sl] = f
		}
	}
	var missing []string
	for sl, name := range n.slots {
		if plan.idx[sl] < 0 && n.cols[n.slotCol[sl]].Required && !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: header lacks required column(s) %q: %w", source, missing, ErrHeader)
	}
	plan.width = len(hdr)
	switch n.def.DriftPolicy() {
	case feed.DriftIgnore:
		plan.drift, plan.names = nil, nil
	case feed.DriftReject:
		if len(plan.drift) > 0 {
			return nil, fmt.Errorf("%s: header line %d has field(s) %q that no column takes and ignore does not list, and drift is reject: %w", source, line, plan.names, ErrDrift)
		}
	case feed.DriftRescue:
		plan.names = uniqueKeys(plan.names)
	case feed.DriftAdd:
		for _, name := range plan.names {
			ci, err := bt.addColumn(name)
			if err != nil {
				return nil, fmt.Errorf("%s: header line %d: %w", source, line, err)
			}
			plan.extraCols = append(plan.extraCols, ci)
		}
	}
	return plan, nil
}

// textDrift fills the rescued value or the added columns' values of one record.
func (n *Normalizer) textDrift(plan *textPlan, fields []string, vals, extra []value) {
	if len(plan.extraCols) > 0 {
		for j, f := range plan.drift {
			s := fields[f]
			extra[j] = value{valid: strings.TrimSpace(s) != "", s: s}
		}
		return
	}
	var kv []string
	for j, f := range plan.drift {
		if s := fields[f]; strings.TrimSpace(s) != "" {
			kv = append(kv, plan.names[j], s)
		}
	}
	vals[len(n.cols)] = rescued(kv)
}
