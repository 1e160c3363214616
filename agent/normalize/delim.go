package normalize

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"
)

// delimReader reads delimited text in the dialects encoding/csv cannot: a quote other
// than '"', no quoting at all, or an escape character inside quoted fields. It follows
// encoding/csv's rules otherwise, so that a file both accept reads the same (a
// differential test holds it to that):
//
//   - a record ends at LF or CRLF outside quotes; empty lines are skipped; lines starting
//     with the comment character are skipped;
//   - a field starting with the quote is quoted: it may hold delimiters and line breaks
//     (a quoted CRLF reads as LF), and a quote inside it is written doubled, or, with an
//     escape character, preceded by it (escape followed by any character is that
//     character; a doubled quote is still one quote);
//   - a quote inside an unquoted field, text after a closing quote, a quoted field open
//     at the end of the input or an escape at the end of the input make the record bad:
//     it is returned with its reason and reading goes on at the next line.
//
// With quoting off, quote characters are ordinary text and every line break ends a
// record. The escape character is ordinary text outside quoted fields.
type delimReader struct {
	r       *bufio.Reader
	comma   rune
	quote   rune // meaningful when quoted
	quoted  bool
	escape  rune // 0: none
	comment rune // 0: none

	line   int64  // physical lines read so far
	raw    []byte // the current record's lines, terminators included
	buf    []byte // field bytes of the current record
	ends   []int  // end offset in buf of each field
	fields []string
}

func newDelimReader(r io.Reader, comma, quote rune, quoted bool, escape, comment rune) *delimReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &delimReader{r: br, comma: comma, quote: quote, quoted: quoted, escape: escape, comment: comment}
}

// readLine appends the next physical line, terminator included, to d.raw and returns
// it; io.EOF when there is none.
func (d *delimReader) readLine() ([]byte, error) {
	start := len(d.raw)
	for {
		b, err := d.r.ReadSlice('\n')
		d.raw = append(d.raw, b...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(d.raw) == start {
			return nil, io.EOF
		}
		d.line++
		return d.raw[start:], nil
	}
}

// lineBody is a line without its terminator: LF, CRLF, or (at the end of the input) CR,
// as encoding/csv reads lines.
func lineBody(l []byte) []byte {
	if n := len(l); n > 0 && l[n-1] == '\n' {
		l = l[:n-1]
	}
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l
}

// Read returns the next record's fields (valid until the next Read), the physical line it
// starts on and its raw text. A record with bad syntax returns err wrapping
// errRecordSyntax with the reason; io.EOF ends the input.
func (d *delimReader) Read() (fields []string, line int64, raw []byte, err error) {
	d.raw = d.raw[:0]
	var l []byte
	for {
		d.raw = d.raw[:0]
		l, err = d.readLine()
		if err != nil {
			return nil, 0, nil, err
		}
		body := lineBody(l)
		if len(body) == 0 {
			continue
		}
		if d.comment != 0 {
			if r, _ := utf8.DecodeRune(body); r == d.comment {
				continue
			}
		}
		break
	}
	line = d.line
	d.buf, d.ends = d.buf[:0], d.ends[:0]
	pos := 0 // offset in d.raw of the next byte to parse
	for {
		// One field, starting at pos.
		rest := d.raw[pos:]
		if d.quoted && len(rest) > 0 {
			if r, size := utf8.DecodeRune(rest); r == d.quote {
				var ok bool
				pos, ok, err = d.quotedField(pos+size, line)
				if err != nil {
					return nil, line, d.raw, err
				}
				if !ok {
					d.ends = append(d.ends, len(d.buf))
					break
				}
				continue
			}
		}
		// Unquoted: up to the delimiter or the line end.
		i := pos
		for i < len(d.raw) {
			c := d.raw[i]
			if c == '\n' || c == '\r' && (i+1 == len(d.raw) || d.raw[i+1] == '\n') {
				break
			}
			r, size := rune(c), 1
			if c >= utf8.RuneSelf {
				r, size = utf8.DecodeRune(d.raw[i:])
			}
			if r == d.comma {
				break
			}
			if d.quoted && r == d.quote {
				return nil, line, d.raw, d.bad(line, d.col(i), "bare %q in non-quoted field", string(d.quote))
			}
			i += size
		}
		d.buf = append(d.buf, d.raw[pos:i]...)
		d.ends = append(d.ends, len(d.buf))
		if i < len(d.raw) {
			if r, size := utf8.DecodeRune(d.raw[i:]); r == d.comma {
				pos = i + size
				continue
			}
		}
		break
	}
	return d.strings(), line, d.raw, nil
}

// quotedField reads a quoted field whose text starts at d.raw[pos], reading more lines
// as needed. It returns the offset after the field's delimiter and more=true when
// another field follows, more=false at the record's end.
func (d *delimReader) quotedField(pos int, startLine int64) (next int, more bool, err error) {
	for {
		if pos >= len(d.raw) {
			if _, err := d.readLine(); err == io.EOF {
				return 0, false, d.bad(startLine, 0, "quoted field not terminated before end of input")
			} else if err != nil {
				return 0, false, err
			}
			continue
		}
		c := d.raw[pos]
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(d.raw[pos:])
		}
		switch {
		case d.escape != 0 && r == d.escape:
			pos += size
			if pos >= len(d.raw) {
				if _, err := d.readLine(); err == io.EOF {
					return 0, false, d.bad(startLine, 0, "escape %q at end of input", string(d.escape))
				} else if err != nil {
					return 0, false, err
				}
			}
			_, n := utf8.DecodeRune(d.raw[pos:])
			if d.raw[pos] == '\r' && pos+1 < len(d.raw) && d.raw[pos+1] == '\n' {
				d.buf = append(d.buf, '\n')
				pos += 2
				continue
			}
			d.buf = append(d.buf, d.raw[pos:pos+n]...)
			pos += n
		case r == d.quote:
			pos += size
			nr, n := utf8.DecodeRune(d.raw[pos:])
			switch {
			case pos < len(d.raw) && nr == d.quote:
				d.buf = append(d.buf, d.raw[pos:pos+n]...)
				pos += n
			case pos < len(d.raw) && nr == d.comma:
				d.ends = append(d.ends, len(d.buf))
				return pos + n, true, nil
			case pos >= len(d.raw) || len(lineBody(d.raw[pos:])) == 0:
				return len(d.raw), false, nil
			default:
				return 0, false, d.bad(d.line, d.col(pos), "extraneous or missing %q in quoted field", string(d.quote))
			}
		case c == '\r' && pos+1 < len(d.raw) && d.raw[pos+1] == '\n':
			d.buf = append(d.buf, '\n')
			pos += 2
		default:
			d.buf = append(d.buf, d.raw[pos:pos+size]...)
			pos += size
		}
	}
}

// col is the 1-based character position in its line of d.raw[i].
func (d *delimReader) col(i int) int {
	start := bytes.LastIndexByte(d.raw[:i], '\n') + 1
	return utf8.RuneCount(d.raw[start:i]) + 1
}

// bad ends a record with bad syntax: the rest of the current line is dropped with it.
func (d *delimReader) bad(line int64, col int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if col > 0 {
		msg = fmt.Sprintf("line %d column %d: %s", line, col, msg)
	}
	return &recordError{reason: msg}
}

// strings cuts the record's fields out of one string, as encoding/csv does, so a record
// costs one allocation for its text.
func (d *delimReader) strings() []string {
	s := string(d.buf)
	d.fields = d.fields[:0]
	prev := 0
	for _, e := range d.ends {
		d.fields = append(d.fields, s[prev:e])
		prev = e
	}
	return d.fields
}
