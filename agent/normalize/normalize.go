package normalize

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

// ErrHeader is wrapped by every file-level header problem: no header line, a required
// column missing from it, or one column named twice. The whole entry is unusable.
var ErrHeader = errors.New("unusable header")

// ErrDrift is wrapped when the drift policy makes an entry unusable: a field no column
// takes under drift reject, or, under drift add, a field whose column name is taken.
var ErrDrift = errors.New("schema drift")

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
	// Secret returns the named agent secret: the key of a hash transform. New reads each
	// named secret once and fails when one cannot be read (or Secret is nil), so a feed
	// whose values must be hashed never runs without its key. Secret values are never
	// logged or put in errors.
	Secret func(name string) ([]byte, error)
}

// DefaultMaxRecordBytes is the record bound used when Options.MaxRecordBytes is zero.
const DefaultMaxRecordBytes = 16 << 20

// ErrRecordTooLong is wrapped when a delimited record exceeds Options.MaxRecordBytes.
var ErrRecordTooLong = errors.New("record too long")

// EntryErrors lists the errors that make a whole entry unusable: a property of the file,
// which the caller quarantines, rather than a failure to retry.
func EntryErrors() []error {
	return []error{ErrHeader, ErrDecode, ErrRecordTooLong, ErrMalformedXML, ErrXMLRoot, ErrDrift}
}

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
	// Unmapped lists header fields no column takes and ignore does not list (an empty
	// header name as "fieldN"); the drift policy says what became of their values. For XML
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
	// slots are the source fields every format extracts, in column order: one per
	// column, or one per entry of a column's sources. slotCol is each slot's column.
	slots   []string
	slotCol []int
	xml     *xmlPlan // for xml feeds
}

// column is a definition column compiled for the row stage (row.go).
type column struct {
	feed.Column
	parse   func(s string, v *value) error
	layouts []string
	loc     *time.Location // of timestamps written without an offset
	slots   []int          // this column's slots, in order
	join    string
	steps   []step
	rules   *rules // nil: no validation
	// simple: one source, no transforms: the text goes straight to conversion.
	simple bool
}

// value is one converted field, held until the whole record converts.
type value struct {
	valid bool
	s     string
	i     int64 // int, date32 days, timestamp micros
	f     float64
	b     bool
	d     decimal128.Num
}

// New prepares a Normalizer for def, which must be valid (feed.Parse validates): it
// compiles every column's transforms and checks and reads the secrets hash steps name.
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
	if err := n.prepareColumns(secretKeys(opts.Secret)); err != nil {
		return nil, fmt.Errorf("normalize: feed %q: %w", def.Name, err)
	}
	if def.Format.Type == feed.FormatXML {
		n.xml = newXMLPlan(def, n.slots)
	}
	return n, nil
}

// Schema is the schema of every emitted batch, the definition's BatchSchema, unless
// drift is add: then a batch may carry extra string columns before _row, one per
// source field no column takes, named by feed.AddedColumnName.
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
	return n.runText(ctx, r, source, b, reject)
}

func headerKey(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Batcher builds the record batches of one or more runs of a Normalizer, shared by every
// format: it appends converted rows and emits a batch every BatchRows rows and on Flush.
// Under drift add it also holds the added string columns, which may grow while entries
// stream: a column added mid-batch is NULL for the rows before it, and one added by an
// entry stays for the later entries of the batcher (NULL where they lack the field). It
// is not safe for concurrent use.
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
	// XML scratch reused by the runs likewise (xml.go).
	xin     *xmlInput
	xdoc    []byte // an entry read whole for xscan
	xscan   xmlScan
	noScan  bool // tests: read every XML entry with encoding/xml
	xrec    *xmlRecord
	xvals   []value
	xfields []string
	xidx    []int

	extras      []*array.StringBuilder
	extraFields []arrow.Field
	taken       map[string]string // column name → source field that took it
	schema      *arrow.Schema     // with extraFields; nil when stale
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
		srcB: rb.Field(n.nvals()).(*array.StringBuilder),
		rowB: rb.Field(n.nvals() + 1).(*array.Int64Builder),
	}
}

// begin starts a run: rows added until the next begin come from source and count in st.
func (b *Batcher) begin(source string, st *Stats) *Batcher {
	b.source, b.st = source, st
	return b
}

// Rows is the number of rows added and not yet emitted.
func (b *Batcher) Rows() int { return b.pending }

// maxAddedColumns bounds the columns drift add makes in one batcher.
const maxAddedColumns = 100

// addColumn adds a string column for a source field under drift add and returns its
// index among the extras; a field an earlier entry added keeps its column. A name a
// defined column or another field already has is an error.
func (b *Batcher) addColumn(source string) (int, error) {
	name := feed.AddedColumnName(source)
	if b.taken == nil {
		b.taken = map[string]string{}
		for _, f := range b.n.schema.Fields() {
			b.taken[f.Name] = ""
		}
		for _, f := range feed.LineageFields() {
			b.taken[f.Name] = ""
		}
	}
	if prev, ok := b.taken[name]; ok {
		if prev == source {
			for i, f := range b.extraFields {
				if f.Name == name {
					return i, nil
				}
			}
		}
		if prev == "" {
			return 0, fmt.Errorf("field %q would be added as column %q, which the table already has (drift add): %w", source, name, ErrDrift)
		}
		return 0, fmt.Errorf("fields %q and %q would both be added as column %q (drift add): %w", prev, source, name, ErrDrift)
	}
	if len(b.extras) >= maxAddedColumns {
		return 0, fmt.Errorf("field %q: more than %d fields to add as columns (drift add): %w", source, maxAddedColumns, ErrDrift)
	}
	b.taken[name] = source
	sb := array.NewStringBuilder(b.n.opts.Allocator)
	sb.AppendNulls(b.pending)
	b.extras = append(b.extras, sb)
	b.extraFields = append(b.extraFields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
	b.schema = nil
	return len(b.extras) - 1, nil
}

// add appends one converted row with its source position, flushing a full batch. extra
// holds the added columns' values, by extras index; columns beyond it are NULL.
func (b *Batcher) add(vals, extra []value, row int64) error {
	b.n.append(b.rb, vals)
	for i, sb := range b.extras {
		if i < len(extra) && extra[i].valid {
			sb.Append(extra[i].s)
		} else {
			sb.AppendNull()
		}
	}
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
	if len(b.extras) > 0 {
		rec = b.withExtras(rec)
		defer rec.Release()
	}
	if err := b.emit(rec); err != nil {
		return err
	}
	b.batches++
	return nil
}

// withExtras returns rec with the added columns put before _source_file and _row.
func (b *Batcher) withExtras(rec arrow.RecordBatch) arrow.RecordBatch {
	if b.schema == nil {
		base := b.n.schema.Fields()
		k := len(base) - 2
		fields := append(append(append([]arrow.Field{}, base[:k]...), b.extraFields...), base[k:]...)
		md := b.n.schema.Metadata()
		b.schema = arrow.NewSchema(fields, &md)
	}
	cols := rec.Columns()
	k := len(cols) - 2
	arrs := make([]arrow.Array, 0, len(cols)+len(b.extras))
	arrs = append(arrs, cols[:k]...)
	for _, sb := range b.extras {
		a := sb.NewArray()
		defer a.Release()
		arrs = append(arrs, a)
	}
	arrs = append(arrs, cols[k:]...)
	return array.NewRecordBatch(b.schema, arrs, rec.NumRows())
}

// Release frees the builders; rows not flushed are dropped.
func (b *Batcher) Release() {
	b.rb.Release()
	for _, sb := range b.extras {
		sb.Release()
	}
}

// nvals is the number of values a row carries before _source_file and _row: the
// columns, then _rescued when the feed rescues drift.
func (n *Normalizer) nvals() int {
	if n.def.HasRescued() {
		return len(n.cols) + 1
	}
	return len(n.cols)
}

// uniqueKeys makes repeated source names distinct JSON keys: "Phone", "Phone[2]", ...
// Names without repeats are returned as they are.
func uniqueKeys(names []string) []string {
	if len(names) <= 16 {
		repeated := false
		for i := 1; i < len(names) && !repeated; i++ {
			repeated = slices.Contains(names[:i], names[i])
		}
		if !repeated {
			return names
		}
	}
	seen := map[string]int{}
	out := make([]string, len(names))
	for i, s := range names {
		seen[s]++
		out[i] = s
		if k := seen[s]; k > 1 {
			out[i] = fmt.Sprintf("%s[%d]", s, k)
		}
	}
	return out
}

// rescued is the _rescued value of key/value pairs: a JSON object in source order, NULL
// when there are none. Strings are written as encoding/json writes them with HTML
// escaping off (medical text holds < > &; keep it readable).
func rescued(kv []string) value {
	if len(kv) == 0 {
		return value{}
	}
	var stack [512]byte
	b := append(stack[:0], '{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, kv[i])
		b = append(b, ':')
		b = appendJSONString(b, kv[i+1])
	}
	b = append(b, '}')
	return value{valid: true, s: string(b)}
}

// appendJSONString appends s as a JSON string exactly as encoding/json encodes it with
// SetEscapeHTML(false): '"', '\\' and control characters escaped, invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func (n *Normalizer) append(rb *array.RecordBuilder, vals []value) {
	if len(vals) > len(n.cols) {
		sb := rb.Field(len(n.cols)).(*array.StringBuilder)
		if v := vals[len(n.cols)]; v.valid {
			sb.Append(v.s)
		} else {
			sb.AppendNull()
		}
	}
	for i := range n.cols {
		v := &vals[i]
		fb := rb.Field(i)
		if !v.valid {
			fb.AppendNull()
			continue
		}
		switch n.cols[i].Type {
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
		case feed.TypeDecimal:
			fb.(*array.Decimal128Builder).Append(v.d)
		}
	}
}

// quote shortens a value for a reason text; the full record is in Reject.Raw.
func quote(s string) string { return feed.QuoteValue(s) }

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

// parseTime reads s in the column's layouts; text without an offset is in the column's
// timezone (UTC unless set).
func (c *column) parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range c.layouts {
		if t, err := time.ParseInLocation(l, s, c.loc); err == nil {
			return t.UTC(), nil
		}
	}
	want := make([]string, len(c.layouts))
	for i, l := range c.layouts {
		want[i] = strconv.Quote(l)
	}
	return time.Time{}, fmt.Errorf("%s does not match layout %s", quote(s), strings.Join(want, " or "))
}

func (c *column) parseDate(s string, v *value) error {
	t, err := c.parseTime(s)
	if err != nil {
		return err
	}
	v.i = int64(arrow.Date32FromTime(t))
	return nil
}

func (c *column) parseTimestamp(s string, v *value) error {
	t, err := c.parseTime(s)
	if err != nil {
		return err
	}
	v.i = t.UnixMicro()
	return nil
}

// parseDecimal reads s exactly at the column's precision and scale: a value that would
// need rounding or more digits than the precision rejects the row.
func (c *column) parseDecimal(s string, v *value) error {
	d, err := feed.ParseDecimal(strings.TrimSpace(s), c.Precision, c.Scale)
	if err != nil {
		return err
	}
	v.d = d
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
