package gen

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/medlake/medlake/protocol/feed"
)

// style is how one export format renders values.
type style struct {
	format     string
	delim      byte
	timeLayout string
	dateLayout string
	upperHdr   bool // TXT exports name their columns in upper case
	fixed      bool // DAT exports: fixed-width columns (fixedWidth), no header
}

var styles = map[string]*style{
	FormatCSV: {format: FormatCSV, delim: ',', timeLayout: "2006-01-02 15:04:05", dateLayout: "2006-01-02"},
	FormatTXT: {format: FormatTXT, delim: '|', timeLayout: "20060102150405", dateLayout: "20060102", upperHdr: true},
	FormatXML: {format: FormatXML, timeLayout: "2006-01-02T15:04:05Z", dateLayout: "2006-01-02"},
	FormatDAT: {format: FormatDAT, timeLayout: "20060102150405", dateLayout: "20060102", fixed: true},
}

// fixedWidth is a column's width, in characters, in DAT exports: wide enough for every
// value the generator makes (a longer one is an error, never cut).
func fixedWidth(c column) int {
	switch c.typ {
	case feed.TypeInt:
		return 12
	case feed.TypeFloat:
		return 16
	case feed.TypeBool:
		return 5
	case feed.TypeDate:
		return 8
	case feed.TypeTimestamp:
		return 14
	}
	switch c.name {
	case "diagnosis_desc", "test_name", "comment":
		return 120
	case "address_line":
		return 60
	}
	return 40
}

func (s *style) headerName(c column) string {
	if s.upperHdr {
		return strings.ToUpper(c.name)
	}
	return c.name
}

// appendValue renders v without any quoting or escaping.
func (s *style) appendValue(b []byte, c column, v value) []byte {
	switch v.k {
	case kStr:
		return append(b, v.s...)
	case kInt:
		return strconv.AppendInt(b, v.i, 10)
	case kFloat:
		return strconv.AppendFloat(b, v.f, 'f', -1, 64)
	case kBool:
		return strconv.AppendBool(b, v.i != 0)
	case kDate:
		return time.Unix(v.i, 0).UTC().AppendFormat(b, s.dateLayout)
	case kTime:
		return time.Unix(v.i, 0).UTC().AppendFormat(b, s.timeLayout)
	}
	return b
}

// delimWriter writes delimited text (CSV quoting rules, RFC 4180) through a buffer.
type delimWriter struct {
	w       io.Writer
	st      *style
	buf     []byte
	scratch []byte
	raw     int64 // bytes encoded so far, buffered or not
	err     error
}

const flushAt = 32 << 10

func newDelimWriter(w io.Writer, st *style) *delimWriter {
	return &delimWriter{w: w, st: st, buf: make([]byte, 0, flushAt+4096)}
}

func (d *delimWriter) field(f []byte) {
	needs := len(f) > 0 && f[0] == ' '
	for _, c := range f {
		if c == d.st.delim || c == '"' || c == '\n' || c == '\r' {
			needs = true
			break
		}
	}
	if !needs {
		d.buf = append(d.buf, f...)
		return
	}
	d.buf = append(d.buf, '"')
	for _, c := range f {
		if c == '"' {
			d.buf = append(d.buf, '"')
		}
		d.buf = append(d.buf, c)
	}
	d.buf = append(d.buf, '"')
}

func (d *delimWriter) header(cols []column) {
	if d.st.fixed {
		return
	}
	start := len(d.buf)
	for i, c := range cols {
		if i > 0 {
			d.buf = append(d.buf, d.st.delim)
		}
		d.field([]byte(d.st.headerName(c)))
	}
	d.buf = append(d.buf, '\r', '\n')
	d.end(start)
}

func (d *delimWriter) row(cols []column, vals []value) {
	start := len(d.buf)
	if d.st.fixed {
		d.fixedRow(cols, vals)
		d.end(start)
		return
	}
	for i, c := range cols {
		if i > 0 {
			d.buf = append(d.buf, d.st.delim)
		}
		d.scratch = d.st.appendValue(d.scratch[:0], c, vals[i])
		d.field(d.scratch)
	}
	d.buf = append(d.buf, '\r', '\n')
	d.end(start)
}

// fixedRow renders a row of fixed-width fields, each padded with spaces to its width; a
// null is all spaces.
func (d *delimWriter) fixedRow(cols []column, vals []value) {
	for i, c := range cols {
		d.scratch = d.st.appendValue(d.scratch[:0], c, vals[i])
		n := utf8.RuneCount(d.scratch)
		w := fixedWidth(c)
		if n > w && d.err == nil {
			d.err = fmt.Errorf("value %q of column %s is longer than its fixed width %d", d.scratch, c.name, w)
		}
		d.buf = append(d.buf, d.scratch...)
		for ; n < w; n++ {
			d.buf = append(d.buf, ' ')
		}
	}
	d.buf = append(d.buf, '\r', '\n')
}

func (d *delimWriter) end(start int) {
	d.raw += int64(len(d.buf) - start)
	if len(d.buf) >= flushAt {
		d.flush()
	}
}

func (d *delimWriter) flush() error {
	if d.err == nil && len(d.buf) > 0 {
		_, d.err = d.w.Write(d.buf)
	}
	d.buf = d.buf[:0]
	return d.err
}

// appendXMLRecord renders one record as a complete XML document: one element per
// non-empty column under a root element named for the entity.
func appendXMLRecord(b []byte, e *entity, facility string, vals []value) []byte {
	st := styles[FormatXML]
	b = append(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<"...)
	b = append(b, e.record...)
	b = append(b, " facility=\""...)
	b = appendXMLText(b, []byte(facility))
	b = append(b, "\">\n"...)
	var tmp []byte
	for i, c := range e.cols {
		if vals[i].k == kNull {
			continue
		}
		b = append(b, "  <"...)
		b = append(b, c.name...)
		b = append(b, '>')
		tmp = st.appendValue(tmp[:0], c, vals[i])
		b = appendXMLText(b, tmp)
		b = append(b, "</"...)
		b = append(b, c.name...)
		b = append(b, ">\n"...)
	}
	b = append(b, "</"...)
	b = append(b, e.record...)
	return append(b, ">\n"...)
}

func appendXMLText(b, s []byte) []byte {
	if bytes.IndexAny(s, `&<>"'`) < 0 {
		return append(b, s...)
	}
	for _, c := range s {
		switch c {
		case '&':
			b = append(b, "&amp;"...)
		case '<':
			b = append(b, "&lt;"...)
		case '>':
			b = append(b, "&gt;"...)
		case '"':
			b = append(b, "&quot;"...)
		case '\'':
			b = append(b, "&apos;"...)
		default:
			b = append(b, c)
		}
	}
	return b
}
