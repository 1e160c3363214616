package normalize

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

// ErrHeader is wrapped by every file-level header problem: no header line, a required
// column missing from it, or one column named twice. The whole entry is unusable.
var ErrHeader = errors.New("unusable header")

// DefaultBatchRows is the batch size used when Options.BatchRows is zero.
const DefaultBatchRows = 50000

// Options tune a Normalizer.
type Options struct {
	// BatchRows is the most rows in one emitted batch. Default DefaultBatchRows.
	BatchRows int
	// Allocator backs the Arrow builders. Default memory.DefaultAllocator.
	Allocator memory.Allocator
	// MaxRecordBytes bounds one delimited record: a longer one (a runaway quoted field,
	// a file with no line breaks) fails the entry with ErrRecordTooLong instead of being
	// held in memory whole. Default DefaultMaxRecordBytes.
	MaxRecordBytes int
}

// DefaultMaxRecordBytes is the record bound used when Options.MaxRecordBytes is zero.
const DefaultMaxRecordBytes = 16 << 20

// ErrRecordTooLong is wrapped when a delimited record exceeds Options.MaxRecordBytes.
var ErrRecordTooLong = errors.New("record too long")

// Reject is one source record that did not become a row, with enough to find and fix it.
type Reject struct {
	// Source is the entry name Run was given ("archive.zip!inner.csv").
	Source string
	// Row is the 1-based data record number, the number the row would have had in _row.
	Row int64
	// Line is the 1-based physical line where the record starts (header is line 1; for
	// XML, the line of the record's start tag).
	Line int64
	// Column is the column at fault, empty when the record as a whole is bad.
	Column string
	// Raw is the record's source text, decoded to UTF-8, without its line terminator; for
	// XML, the record element's text, cut to MaxXMLRawBytes.
	Raw string
	// Reason says what is wrong, for people.
	Reason string
}

// Stats counts what one Run saw. Rows == Accepted + Rejected when Run returns nil.
type Stats struct {
	Rows     int64 // data records read
	Accepted int64 // rows emitted in batches
	Rejected int64 // records passed to reject
	Batches  int   // batches emitted
	// Unmapped lists header fields no column takes; their values are not loaded. For XML
	// it lists the leaf element and attribute paths, relative to the record, that no
	// column takes ("Address/Street", "@facility"), and, as absolute paths, elements
	// beside the record path whose content is not read ("/Export/Header"); at most 100,
	// in order of appearance.
	Unmapped []string
}

// Normalizer converts entries for one feed definition. It holds no per-run state, so one
// Normalizer may serve concurrent Runs.
type Normalizer struct {
	def    *feed.Definition
	schema *arrow.Schema
	cols   []column
	opts   Options
	xml    *xmlPlan // for xml feeds
}

type column struct {
	feed.Column
	parse   func(s string, v *value) error
	layouts []string
}

// value is one converted field, held until the whole record converts.
type value struct {
	valid bool
	s     string
	i     int64 // int, date32 days, timestamp micros
	f     float64
	b     bool
}

// New prepares a Normalizer for def, which must be valid (feed.Parse validates).
func New(def *feed.Definition, opts Options) (*Normalizer, error) {
	if def == nil {
		return nil, errors.New("normalize: nil feed definition")
	}
	if err := def.Validate(); err != nil {
		return nil, fmt.Errorf("normalize: %w", err)
	}
	if opts.BatchRows <= 0 {
		opts.BatchRows = DefaultBatchRows
	}
	if opts.Allocator == nil {
		opts.Allocator = memory.DefaultAllocator
	}
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = DefaultMaxRecordBytes
	}
	n := &Normalizer{def: def, schema: def.BatchSchema(), opts: opts}
	if def.Format.Type == feed.FormatXML {
		n.xml = newXMLPlan(def)
	}
	for _, c := range def.Columns {
		col := column{Column: c, layouts: c.Layouts()}
		switch c.Type {
		case feed.TypeString:
			col.parse = parseString
		case feed.TypeInt:
			col.parse = parseInt
		case feed.TypeFloat:
			col.parse = parseFloat
		case feed.TypeBool:
			col.parse = parseBool
		case feed.TypeDate:
			col.parse = col.parseDate
		case feed.TypeTimestamp:
			col.parse = col.parseTimestamp
		default:
			return nil, fmt.Errorf("normalize: feed %q column %q: unsupported type %q", def.Name, c.Name, c.Type)
		}
		n.cols = append(n.cols, col)
	}
	return n, nil
}

// Schema is the schema of every emitted batch: the definition's BatchSchema.
func (n *Normalizer) Schema() *arrow.Schema { return n.schema }

// Run reads delimited text from r, decoded from the feed's format.encoding as
// DecodingReader does (lone-CR line breaks read as LF), and calls emit with batches of at
// most BatchRows rows, in source order, each row's _row set to its 1-based record number.
// The batch is released when emit returns: emit must Retain it to keep it. Records that
// cannot be converted (wrong field count, bad quoting, bad value, empty required value)
// go to reject and never stop the run. Run stops with an error on a header problem
// (ErrHeader), a read error (unpack's errors pass through), bytes that are not text in
// the feed's encoding (a *DecodeError wrapping ErrDecode, with the byte offset), or an
// error from emit or reject; batches already emitted then belong to an incomplete entry
// and the caller must discard them. An xml feed's entry is streamed record by record
// instead, under the rules in the package doc (file errors ErrMalformedXML, ErrXMLRoot).
func (n *Normalizer) Run(ctx context.Context, r io.Reader, source string, emit func(arrow.RecordBatch) error, reject func(Reject) error) (Stats, error) {
	b := n.NewBatcher(emit)
	defer b.Release()
	st, err := n.RunInto(ctx, r, source, b, reject)
	if err != nil {
		return st, err
	}
	before := b.batches
	if err := b.Flush(); err != nil {
		return st, err
	}
	st.Batches += b.batches - before
	return st, nil
}

// RunInto is Run appending the entry's rows to b, which may already hold rows of other
// entries of the same feed, and which the caller flushes: an archive of many small files
// then travels in a few full batches instead of one small batch per file. Stats.Batches
// counts the batches emitted while this entry ran. Each row's _source_file is source.
func (n *Normalizer) RunInto(ctx context.Context, r io.Reader, source string, b *Batcher, reject func(Reject) error) (Stats, error) {
	if b.n != n {
		return Stats{}, errors.New("normalize: batcher belongs to another normalizer")
	}
	if n.def.Format.Type == feed.FormatXML {
		return n.runXML(ctx, r, source, b, reject)
	}
	var st Stats
	text, err := csvText(r, n.def.Format.Encoding)
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", source, err)
	}
	rec := &recorder{r: text, max: n.opts.MaxRecordBytes}
	cr := csv.NewReader(rec)
	cr.Comma = n.def.Format.Comma()
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true

	idx, width, err := n.header(cr, rec, source, &st)
	if err != nil {
		return st, err
	}

	bt := b.begin(source, &st)
	vals := make([]value, len(n.cols))
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
		fields, err := cr.Read()
		if err == io.EOF {
			break
		}
		raw := rec.take(cr.InputOffset())
		var pe *csv.ParseError
		if err != nil && !errors.As(err, &pe) {
			if errors.Is(err, ErrRecordTooLong) {
				return st, fmt.Errorf("%s: record %d, starting on line %d: %w", source, st.Rows+1, rec.lines+1, err)
			}
			line, _ := cr.FieldPos(0)
			return st, fmt.Errorf("reading %s near line %d: %w", source, line, err)
		}
		st.Rows++
		row := st.Rows
		if pe != nil {
			if err := rejectRow(Reject{Row: row, Line: int64(pe.StartLine), Raw: rawText(raw), Reason: fmt.Sprintf("line %d column %d: %v", pe.Line, pe.Column, pe.Err)}); err != nil {
				return st, err
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		if bytes.Count(raw, []byte{'"'})%2 != 0 {
			// encoding/csv accepts a quoted field left open at end of input: a truncated
			// file must not pass its last record off as complete.
			if err := rejectRow(Reject{Row: row, Line: int64(line), Raw: rawText(raw), Reason: "quoted field not terminated before end of input"}); err != nil {
				return st, err
			}
			continue
		}
		if len(fields) != width {
			if err := rejectRow(Reject{Row: row, Line: int64(line), Raw: rawText(raw), Reason: fmt.Sprintf("record has %d fields, header has %d", len(fields), width)}); err != nil {
				return st, err
			}
			continue
		}
		if rj, ok := n.convert(fields, idx, vals); !ok {
			rj.Row, rj.Line, rj.Raw = row, int64(line), rawText(raw)
			if err := rejectRow(rj); err != nil {
				return st, err
			}
			continue
		}
		if err := bt.add(vals, row); err != nil {
			return st, err
		}
	}
	return st, nil
}

// header reads the header record and maps each column to its field index (-1: absent).
func (n *Normalizer) header(cr *csv.Reader, rec *recorder, source string, st *Stats) ([]int, int, error) {
	idx := make([]int, len(n.cols))
	if !n.def.Format.HasHeader() {
		for i := range idx {
			idx[i] = i
		}
		return idx, len(idx), nil
	}
	hdr, err := cr.Read()
	if err == io.EOF {
		return nil, 0, fmt.Errorf("%s: no header line: %w", source, ErrHeader)
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return nil, 0, fmt.Errorf("%s: header line %d: %w: %w", source, pe.Line, ErrHeader, err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s header: %w", source, err)
	}
	rec.take(cr.InputOffset())
	byName := make(map[string]int, len(n.cols))
	for i, c := range n.cols {
		idx[i] = -1
		byName[headerKey(c.SourceName())] = i
	}
	for f, h := range hdr {
		if f == 0 {
			h = strings.TrimPrefix(h, "\uFEFF")
		}
		ci, ok := byName[headerKey(h)]
		if !ok {
			st.Unmapped = append(st.Unmapped, h)
			continue
		}
		if idx[ci] >= 0 {
			return nil, 0, fmt.Errorf("%s: header names column %q twice (fields %d and %d): %w", source, h, idx[ci]+1, f+1, ErrHeader)
		}
		idx[ci] = f
	}
	var missing []string
	for i, c := range n.cols {
		if idx[i] < 0 && c.Required {
			missing = append(missing, c.SourceName())
		}
	}
	if len(missing) > 0 {
		return nil, 0, fmt.Errorf("%s: header lacks required column(s) %q: %w", source, missing, ErrHeader)
	}
	return idx, len(hdr), nil
}

func headerKey(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// convert parses one record into vals, or describes the first field that fails.
func (n *Normalizer) convert(fields []string, idx []int, vals []value) (Reject, bool) {
	for i, c := range n.cols {
		v := &vals[i]
		*v = value{}
		if idx[i] < 0 {
			continue
		}
		s := fields[idx[i]]
		if strings.TrimSpace(s) == "" {
			if c.Required {
				return Reject{Column: c.Name, Reason: fmt.Sprintf("column %s: required value is empty", c.Name)}, false
			}
			continue
		}
		if err := c.parse(s, v); err != nil {
			return Reject{Column: c.Name, Reason: fmt.Sprintf("column %s: %v", c.Name, err)}, false
		}
		v.valid = true
	}
	return Reject{}, true
}

// Batcher builds the record batches of one or more runs of a Normalizer, shared by every
// format: it appends converted rows and emits a batch every BatchRows rows and on Flush.
// It is not safe for concurrent use.
type Batcher struct {
	n       *Normalizer
	rb      *array.RecordBuilder
	srcB    *array.StringBuilder
	rowB    *array.Int64Builder
	emit    func(arrow.RecordBatch) error
	pending int
	batches int // emitted since NewBatcher

	// The current run's source and stats.
	source string
	st     *Stats

	// Read buffers reused by the runs, which are sequential: an archive's hundreds of
	// one-record XML files would otherwise each allocate and clear tens of kilobytes.
	bufs [2]*bufio.Reader
}

// reader returns buffer i reset to read r, made with size on first use.
func (b *Batcher) reader(i int, r io.Reader, size int) *bufio.Reader {
	if b.bufs[i] == nil {
		b.bufs[i] = bufio.NewReaderSize(r, size)
	} else {
		b.bufs[i].Reset(r)
	}
	return b.bufs[i]
}

// NewBatcher returns an empty Batcher calling emit with each full batch. The batch is
// released when emit returns: emit must Retain it to keep it. Release it when done.
func (n *Normalizer) NewBatcher(emit func(arrow.RecordBatch) error) *Batcher {
	rb := array.NewRecordBuilder(n.opts.Allocator, n.schema)
	return &Batcher{
		n: n, rb: rb, emit: emit,
		srcB: rb.Field(len(n.cols)).(*array.StringBuilder),
		rowB: rb.Field(len(n.cols) + 1).(*array.Int64Builder),
	}
}

// begin starts a run: rows added until the next begin come from source and count in st.
func (b *Batcher) begin(source string, st *Stats) *Batcher {
	b.source, b.st = source, st
	return b
}

// Rows is the number of rows added and not yet emitted.
func (b *Batcher) Rows() int { return b.pending }

// add appends one converted row with its source position, flushing a full batch.
func (b *Batcher) add(vals []value, row int64) error {
	b.n.append(b.rb, vals)
	b.srcB.Append(b.source)
	b.rowB.Append(row)
	b.st.Accepted++
	b.pending++
	if b.pending >= b.n.opts.BatchRows {
		before := b.batches
		err := b.Flush()
		b.st.Batches += b.batches - before
		return err
	}
	return nil
}

// Flush emits the rows added since the last flush, if any.
func (b *Batcher) Flush() error {
	if b.pending == 0 {
		return nil
	}
	rec := b.rb.NewRecordBatch()
	defer rec.Release()
	b.pending = 0
	if err := b.emit(rec); err != nil {
		return err
	}
	b.batches++
	return nil
}

// Release frees the builders; rows not flushed are dropped.
func (b *Batcher) Release() { b.rb.Release() }

func (n *Normalizer) append(rb *array.RecordBuilder, vals []value) {
	for i, c := range n.cols {
		v := vals[i]
		fb := rb.Field(i)
		if !v.valid {
			fb.AppendNull()
			continue
		}
		switch c.Type {
		case feed.TypeString:
			fb.(*array.StringBuilder).Append(v.s)
		case feed.TypeInt:
			fb.(*array.Int64Builder).Append(v.i)
		case feed.TypeFloat:
			fb.(*array.Float64Builder).Append(v.f)
		case feed.TypeBool:
			fb.(*array.BooleanBuilder).Append(v.b)
		case feed.TypeDate:
			fb.(*array.Date32Builder).Append(arrow.Date32(v.i))
		case feed.TypeTimestamp:
			fb.(*array.TimestampBuilder).Append(arrow.Timestamp(v.i))
		}
	}
}

// quote shortens a value for a reason text; the full record is in Reject.Raw.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}

func parseString(s string, v *value) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", quote(s))
	}
	v.s = s
	return nil
}

func parseInt(s string, v *value) error {
	i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not an integer", quote(s))
	}
	v.i = i
	return nil
}

func parseFloat(s string, v *value) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%s is not a finite number", quote(s))
	}
	v.f = f
	return nil
}

func parseBool(s string, v *value) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "t", "yes", "y", "1":
		v.b = true
	case "false", "f", "no", "n", "0":
		v.b = false
	default:
		return fmt.Errorf("%s is not a boolean (true/false, yes/no, 1/0)", quote(s))
	}
	return nil
}

func (c column) parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range c.layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	want := make([]string, len(c.layouts))
	for i, l := range c.layouts {
		want[i] = strconv.Quote(l)
	}
	return time.Time{}, fmt.Errorf("%s does not match layout %s", quote(s), strings.Join(want, " or "))
}

func (c column) parseDate(s string, v *value) error {
	t, err := c.parseTime(s)
	if err != nil {
		return err
	}
	v.i = int64(arrow.Date32FromTime(t))
	return nil
}

func (c column) parseTimestamp(s string, v *value) error {
	t, err := c.parseTime(s)
	if err != nil {
		return err
	}
	v.i = t.UnixMicro()
	return nil
}

// rawText is a record's source text for a reject, without blank lines before it (which
// encoding/csv skips) or its terminator.
func rawText(b []byte) string {
	return string(bytes.Trim(b, "\r\n"))
}

// recorder keeps the bytes the csv reader consumed so a rejected record can be reported
// exactly as it appeared in the file.
type recorder struct {
	r     io.Reader
	max   int // most bytes of one record held
	buf   []byte
	start int   // buf[start:] is not yet taken
	base  int64 // input offset of buf[0]
	lines int64 // line breaks in the bytes taken
}

func (c *recorder) Read(p []byte) (int, error) {
	if len(c.buf)-c.start > c.max {
		return 0, fmt.Errorf("no record end within %d bytes: %w", c.max, ErrRecordTooLong)
	}
	n, err := c.r.Read(p)
	if c.start > 0 && c.start >= len(c.buf)/2 {
		// Compact only when the taken prefix dominates, so per-record cost stays small.
		m := copy(c.buf, c.buf[c.start:])
		c.base += int64(c.start)
		c.buf, c.start = c.buf[:m], 0
	}
	c.buf = append(c.buf, p[:n]...)
	return n, err
}

// take returns the bytes up to input offset off not taken before; valid until the next Read.
func (c *recorder) take(off int64) []byte {
	end := int(off - c.base)
	b := c.buf[c.start:end]
	c.start = end
	c.lines += int64(bytes.Count(b, []byte{'\n'}))
	return b
}
