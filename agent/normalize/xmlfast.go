package normalize

import (
	"bytes"
	"encoding/xml"
	"io"
	"unicode/utf8"
)

// The XML tokenizers. runXML reads tokens from an xmlTokens: encoding/xml's Decoder
// (xmlDecoderTokens), or, for a small entry of the plain shape exports use, a scanner
// over the whole entry in memory (xmlScan). The scanner takes a strict subset of XML and
// must give exactly the tokens, offsets and lines encoding/xml gives for it; for
// anything else (a DOCTYPE or other directive, CDATA, a namespace prefix, a character
// reference or entity other than the five predefined, a non-ASCII name, a processing
// instruction or XML declaration of an unusual form, or any error) it declines before
// runXML has seen a token, and the entry is read by encoding/xml from its first byte.
// Errors and their messages therefore always come from encoding/xml.

// maxXMLScanBytes is the largest entry (decoded text) the scanner takes: one-record
// files of a few kilobytes. It is below MaxXMLRawBytes, MaxXMLFieldBytes and
// MaxXMLMarkupBytes, so no limit of the streaming path can apply to a scanned entry.
const maxXMLScanBytes = 32 << 10

// xmlKind is the kind of an xmlToken.
type xmlKind uint8

const (
	tokStart xmlKind = iota + 1
	tokEnd
	tokText
	tokProcInst
	tokComment
	tokDirective
)

// xmlToken is one token as runXML consumes it; only the fields of its kind are set.
// Slices are valid until the next token.
type xmlToken struct {
	kind   xmlKind
	name   xml.Name   // tokStart, tokEnd
	attr   []xml.Attr // tokStart
	data   []byte     // tokText (decoded), tokProcInst (Inst), tokComment
	target string     // tokProcInst
}

// xmlTokens is a token source for runXML. It is used by one goroutine.
type xmlTokens interface {
	// pos returns the input offset and line where the next token starts.
	pos() (off, line int64)
	// mark says the next token starts at off; bytes before it may be dropped from Raw
	// unless keep is set.
	mark(off int64, keep bool)
	// next reads the next token into t; io.EOF at the end of the input.
	next(t *xmlToken) error
	// takeCut reports whether text of the token just read was skipped for length.
	takeCut() bool
	// raw returns the input from start to end, capped at MaxXMLRawBytes.
	raw(start, end int64) string
	// readErr is the first error reading the input (not io.EOF), or nil.
	readErr() error
}

// xmlDecoderTokens reads tokens with encoding/xml (Strict) over an xmlInput.
type xmlDecoderTokens struct {
	dec *xml.Decoder
	in  *xmlInput
}

func (s *xmlDecoderTokens) pos() (int64, int64) {
	l, _ := s.dec.InputPos()
	return s.dec.InputOffset(), int64(l) + s.in.skippedLines
}

func (s *xmlDecoderTokens) mark(off int64, keep bool) { s.in.mark(off, keep) }
func (s *xmlDecoderTokens) takeCut() bool             { return s.in.takeCut() }
func (s *xmlDecoderTokens) raw(start, end int64) string {
	return s.in.raw(start, end)
}
func (s *xmlDecoderTokens) readErr() error { return s.in.err }

func (s *xmlDecoderTokens) next(t *xmlToken) error {
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case xml.StartElement:
		t.kind, t.name, t.attr = tokStart, v.Name, v.Attr
	case xml.EndElement:
		t.kind, t.name = tokEnd, v.Name
	case xml.CharData:
		t.kind, t.data = tokText, v
	case xml.ProcInst:
		t.kind, t.target, t.data = tokProcInst, v.Target, v.Inst
	case xml.Comment:
		t.kind, t.data = tokComment, v
	case xml.Directive:
		t.kind, t.data = tokDirective, v
	}
	return nil
}

// scanTok is a scanned token with the offset and line where it starts.
type scanTok struct {
	xmlToken
	off, line int64
}

// xmlScan tokenizes a whole small entry held in memory (see the top of this file). A
// Batcher keeps one, so its buffers and interned names serve every entry of an archive.
type xmlScan struct {
	doc     []byte
	toks    []scanTok
	attrs   []xml.Attr
	scratch []byte   // decoded text of tokens holding references or CRs
	stack   []string // open elements
	intern  map[string]string
	i       int   // next token
	endLine int64 // line at the end of doc

	lineOff int   // newlines are counted in doc[:lineOff]
	line    int64 // 1 + newlines in doc[:lineOff]
}

// maxInterned bounds the names and short attribute values an xmlScan keeps.
const maxInterned = 4096

// str returns b as a string, shared with earlier equal ones while there is room.
func (s *xmlScan) str(b []byte) string {
	if v, ok := s.intern[string(b)]; ok {
		return v
	}
	v := string(b)
	if len(b) <= 64 && len(s.intern) < maxInterned {
		if s.intern == nil {
			s.intern = map[string]string{}
		}
		s.intern[v] = v
	}
	return v
}

// lineAt returns the line of offset off, which never decreases from call to call.
func (s *xmlScan) lineAt(off int) int64 {
	s.line += int64(bytes.Count(s.doc[s.lineOff:off], []byte("\n")))
	s.lineOff = off
	return s.line
}

// xmlBOM is a UTF-8 byte order mark, which xmlInput drops from the start of an entry.
const xmlBOM = "\uFEFF"

// scan tokenizes doc, the entry's text after any byte order mark. It returns false,
// having kept nothing that matters, when doc is not of the shape it takes.
func (s *xmlScan) scan(doc []byte) bool {
	s.doc, s.toks, s.attrs, s.scratch, s.stack = doc, s.toks[:0], s.attrs[:0], s.scratch[:0], s.stack[:0]
	s.i, s.lineOff, s.line = 0, 0, 1
	pos := 0
	for pos < len(doc) {
		t := scanTok{off: int64(pos), line: s.lineAt(pos)}
		if doc[pos] != '<' {
			end := bytes.IndexByte(doc[pos:], '<')
			if end < 0 {
				end = len(doc)
			} else {
				end += pos
			}
			data, ok := s.text(doc[pos:end], false)
			if !ok {
				return false
			}
			t.kind, t.data = tokText, data
			s.toks = append(s.toks, t)
			pos = end
			continue
		}
		if pos+1 >= len(doc) {
			return false
		}
		switch doc[pos+1] {
		case '/':
			name, p, ok := s.name(doc, pos+2)
			p = skipXMLSpace(doc, p)
			if !ok || p >= len(doc) || doc[p] != '>' || len(s.stack) == 0 || s.stack[len(s.stack)-1] != name {
				return false
			}
			s.stack = s.stack[:len(s.stack)-1]
			t.kind, t.name = tokEnd, xml.Name{Local: name}
			pos = p + 1
		case '?':
			target, p, ok := s.name(doc, pos+2)
			if !ok {
				return false
			}
			p = skipXMLSpace(doc, p)
			end := bytes.Index(doc[p:], []byte("?>"))
			if end < 0 {
				return false
			}
			data := doc[p : p+end]
			if target == "xml" && !plainXMLDecl(data) {
				return false
			}
			t.kind, t.target, t.data = tokProcInst, target, data
			pos = p + end + 2
		case '!':
			// Comments only: CDATA sections and DOCTYPEs are encoding/xml's.
			if !bytes.HasPrefix(doc[pos:], []byte("<!--")) {
				return false
			}
			body := doc[pos+4:]
			end := bytes.Index(body, []byte("--"))
			if end < 0 || end+2 >= len(body) || body[end+2] != '>' {
				return false
			}
			t.kind, t.data = tokComment, body[:end]
			pos += 4 + end + 3
		default:
			p, ok := s.startTag(&t, doc, pos+1)
			if !ok {
				return false
			}
			pos = p
			if doc[p-2] == '/' { // empty element: encoding/xml gives the end element too
				s.toks = append(s.toks, t, scanTok{xmlToken: xmlToken{kind: tokEnd, name: t.name}, off: int64(p), line: s.lineAt(p)})
				continue
			}
			s.stack = append(s.stack, t.name.Local)
		}
		s.toks = append(s.toks, t)
	}
	if len(s.stack) > 0 {
		return false
	}
	s.endLine = s.lineAt(len(doc))
	return true
}

// startTag reads a start tag's name and attributes from doc[p:] (just past '<') into t
// and returns the offset after its '>'.
func (s *xmlScan) startTag(t *scanTok, doc []byte, p int) (int, bool) {
	name, p, ok := s.name(doc, p)
	if !ok {
		return 0, false
	}
	a0 := len(s.attrs)
	for {
		p = skipXMLSpace(doc, p)
		if p >= len(doc) {
			return 0, false
		}
		if doc[p] == '/' {
			if p+1 >= len(doc) || doc[p+1] != '>' {
				return 0, false
			}
			p += 2
			break
		}
		if doc[p] == '>' {
			p++
			break
		}
		an, q, ok := s.name(doc, p)
		if !ok {
			return 0, false
		}
		q = skipXMLSpace(doc, q)
		if q >= len(doc) || doc[q] != '=' {
			return 0, false
		}
		q = skipXMLSpace(doc, q+1)
		if q >= len(doc) || doc[q] != '"' && doc[q] != '\'' {
			return 0, false
		}
		end := bytes.IndexByte(doc[q+1:], doc[q])
		if end < 0 {
			return 0, false
		}
		val, ok := s.text(doc[q+1:q+1+end], true)
		if !ok {
			return 0, false
		}
		s.attrs = append(s.attrs, xml.Attr{Name: xml.Name{Local: an}, Value: s.str(val)})
		p = q + 1 + end + 1
	}
	t.kind, t.name = tokStart, xml.Name{Local: name}
	t.attr = s.attrs[a0:len(s.attrs):len(s.attrs)]
	if len(t.attr) == 0 {
		t.attr = []xml.Attr{} // as encoding/xml gives it
	}
	return p, true
}

// name reads an XML name at doc[p:]: ASCII only and without a colon (a prefixed name
// or any other is declined), and returns the offset after it.
func (s *xmlScan) name(doc []byte, p int) (string, int, bool) {
	start := p
	if p >= len(doc) || !(doc[p] >= 'a' && doc[p] <= 'z' || doc[p] >= 'A' && doc[p] <= 'Z' || doc[p] == '_') {
		return "", 0, false
	}
	for p++; p < len(doc); p++ {
		c := doc[p]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			continue
		}
		if c == ':' || c >= utf8.RuneSelf { // part of the name for encoding/xml
			return "", 0, false
		}
		break
	}
	return s.str(doc[start:p]), p, true
}

// text checks and decodes character data (attr: an attribute value between its quotes)
// as encoding/xml does: the five predefined entities, CR and CRLF read as LF, and every
// character must be one XML allows. Any other reference, "]]>" in text, or an error
// declines.
func (s *xmlScan) text(seg []byte, attr bool) ([]byte, bool) {
	plain := true
	for i := 0; i < len(seg); {
		c := seg[i]
		switch {
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(seg[i:])
			if r == utf8.RuneError && size == 1 || !isXMLChar(r) {
				return nil, false
			}
			i += size
			continue
		case c == '&' || c == '\r':
			plain = false
		case c == '<':
			return nil, false
		case c < 0x20 && c != '\t' && c != '\n':
			return nil, false
		case c == '>' && !attr && i >= 2 && seg[i-1] == ']' && seg[i-2] == ']':
			return nil, false
		}
		i++
	}
	if plain {
		return seg, true
	}
	start := len(s.scratch)
	for i := 0; i < len(seg); i++ {
		switch c := seg[i]; c {
		case '\r':
			s.scratch = append(s.scratch, '\n')
			if i+1 < len(seg) && seg[i+1] == '\n' {
				i++
			}
		case '&':
			semi := bytes.IndexByte(seg[i:], ';')
			if semi < 0 {
				return nil, false
			}
			var r byte
			switch string(seg[i+1 : i+semi]) {
			case "lt":
				r = '<'
			case "gt":
				r = '>'
			case "amp":
				r = '&'
			case "apos":
				r = '\''
			case "quot":
				r = '"'
			default:
				return nil, false
			}
			s.scratch = append(s.scratch, r)
			i += semi
		default:
			s.scratch = append(s.scratch, c)
		}
	}
	return s.scratch[start:], true
}

// isXMLChar is XML's Char production, as encoding/xml checks it.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

func skipXMLSpace(doc []byte, p int) int {
	for p < len(doc) && (doc[p] == ' ' || doc[p] == '\t' || doc[p] == '\n' || doc[p] == '\r') {
		p++
	}
	return p
}

// plainXMLDecl reports whether an XML declaration's body is of the plain form
// `version="1.0"`, then optionally ` encoding="<label>"` and ` standalone="yes|no"`
// (either quote, one or more spaces between), which encoding/xml reads as version 1.0
// and that label.
func plainXMLDecl(b []byte) bool {
	rest, ok := declParam(b, "version", func(v []byte) bool { return string(v) == "1.0" })
	if !ok {
		return false
	}
	if r, ok := declParam(skipSpaceRequired(rest), "encoding", func(v []byte) bool {
		if len(v) == 0 || !(v[0] >= 'a' && v[0] <= 'z' || v[0] >= 'A' && v[0] <= 'Z') {
			return false
		}
		for _, c := range v {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
		return true
	}); ok {
		rest = r
	}
	if r, ok := declParam(skipSpaceRequired(rest), "standalone", func(v []byte) bool {
		return string(v) == "yes" || string(v) == "no"
	}); ok {
		rest = r
	}
	return skipXMLSpace(rest, 0) == len(rest)
}

// skipSpaceRequired drops the leading white space of b, or returns nil when there is none.
func skipSpaceRequired(b []byte) []byte {
	if p := skipXMLSpace(b, 0); p > 0 {
		return b[p:]
	}
	return nil
}

// declParam reads `name="value"` (or single quotes) at the start of b, value passing ok,
// and returns what follows.
func declParam(b []byte, name string, ok func([]byte) bool) ([]byte, bool) {
	if len(b) < len(name)+3 || string(b[:len(name)]) != name || b[len(name)] != '=' {
		return nil, false
	}
	q := b[len(name)+1]
	if q != '"' && q != '\'' {
		return nil, false
	}
	v := b[len(name)+2:]
	end := bytes.IndexByte(v, q)
	if end < 0 || !ok(v[:end]) {
		return nil, false
	}
	return v[end+1:], true
}

func (s *xmlScan) pos() (int64, int64) {
	if s.i < len(s.toks) {
		return s.toks[s.i].off, s.toks[s.i].line
	}
	return int64(len(s.doc)), s.endLine
}

func (s *xmlScan) mark(int64, bool) {}
func (s *xmlScan) takeCut() bool    { return false }
func (s *xmlScan) readErr() error   { return nil }

func (s *xmlScan) raw(start, end int64) string {
	if start < 0 || start > end || end > int64(len(s.doc)) {
		return ""
	}
	return string(s.doc[start:end])
}

func (s *xmlScan) next(t *xmlToken) error {
	if s.i >= len(s.toks) {
		return io.EOF
	}
	*t = s.toks[s.i].xmlToken
	s.i++
	return nil
}

// readXMLPrefix reads r into buf up to maxXMLScanBytes. whole says r ended there (with
// io.EOF); otherwise rest continues r after data, repeating a read error r gave.
func readXMLPrefix(r io.Reader, buf []byte) (data []byte, rest io.Reader, whole bool) {
	buf = buf[:maxXMLScanBytes+1]
	n, err := io.ReadFull(r, buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		return buf[:n], nil, true
	case nil:
		return buf[:n], r, false
	}
	return buf[:n], errReader{err}, false
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
