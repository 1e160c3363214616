package normalize

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/medlake/medlake/protocol/feed"
)

// File-level XML errors. Run returns them wrapped with the source and line; the entry is
// unusable and the caller quarantines the file.
var (
	// ErrMalformedXML is wrapped when an entry is not well-formed XML (bad syntax, an
	// undefined entity, no root element, a second root element, text outside the root),
	// declares an encoding other than the feed's, or exceeds a parser limit: elements
	// nested deeper than MaxXMLDepth, or one piece of markup (tag, comment, processing
	// instruction, DOCTYPE) longer than MaxXMLMarkupBytes.
	ErrMalformedXML = errors.New("malformed xml")
	// ErrXMLRoot is wrapped when the root element is not the first step of the feed's
	// record path: the document is well-formed but not the export the feed describes, and
	// taking it as "no records" would lose it silently.
	ErrXMLRoot = errors.New("xml root element does not match the record path")
)

// XML limits. They bound what one entry can make the agent hold in memory.
const (
	// MaxXMLDepth is the deepest element nesting accepted, counted from the root.
	MaxXMLDepth = 256
	// MaxXMLFieldBytes is the most text one column takes from one record. Longer text is
	// not buffered: the rest of the text node or CDATA section is skipped as it streams
	// and the record rejected (an element no column takes keeps its record accepted).
	MaxXMLFieldBytes = 1 << 20
	// MaxXMLMarkupBytes is the longest single piece of markup (start tag with its
	// attributes, comment, processing instruction, DOCTYPE). CDATA sections are text
	// and bounded by MaxXMLFieldBytes instead.
	MaxXMLMarkupBytes = 4 << 20
	// MaxXMLRawBytes caps Reject.Raw for an XML record; a longer record's Raw is its
	// first MaxXMLRawBytes bytes (cut on a character boundary).
	MaxXMLRawBytes = 64 << 10
)

// xmlPlan is a definition's record path and column paths, split into local names.
type xmlPlan struct {
	record []string
	// elems maps a slash-joined element path relative to the record ("" is the record
	// element itself) to the slots (source fields) taking that element's text.
	elems map[string][]int
	// attrs maps an element path relative to the record to the slots taking one of its
	// attributes, by attribute local name.
	attrs map[string]map[string][]int
	// inner holds every proper ancestor path of a column path ("Name" for "Name/First",
	// "Address" for "Address/@zip"): such an element is not reported as unmapped.
	inner map[string]bool
	// ignore holds the paths the definition's ignore lists, in local names.
	ignore map[string]bool
}

// maxXMLUnmapped bounds Stats.Unmapped for one XML entry.
const maxXMLUnmapped = 100

// localName drops a namespace prefix: "hl7:id" → "id".
func localName(step string) string {
	if i := strings.IndexByte(step, ':'); i >= 0 {
		return step[i+1:]
	}
	return step
}

func newXMLPlan(def *feed.Definition, slots []string) *xmlPlan {
	p := &xmlPlan{elems: map[string][]int{}, attrs: map[string]map[string][]int{}, inner: map[string]bool{}, ignore: map[string]bool{}}
	for _, ig := range def.Ignore {
		steps := strings.Split(strings.TrimSpace(ig), "/")
		for j, st := range steps {
			if a, ok := strings.CutPrefix(st, "@"); ok {
				steps[j] = "@" + localName(a)
			} else {
				steps[j] = localName(st)
			}
		}
		p.ignore[strings.Join(steps, "/")] = true
	}
	for _, s := range strings.Split(def.Format.Record, "/") {
		p.record = append(p.record, localName(s))
	}
	for i, src := range slots {
		steps := strings.Split(src, "/")
		last := steps[len(steps)-1]
		for j := range steps {
			steps[j] = localName(steps[j])
		}
		for j := 1; j < len(steps); j++ {
			p.inner[strings.Join(steps[:j], "/")] = true
		}
		if strings.HasPrefix(last, "@") {
			key := strings.Join(steps[:len(steps)-1], "/")
			if p.attrs[key] == nil {
				p.attrs[key] = map[string][]int{}
			}
			name := localName(last[1:])
			p.attrs[key][name] = append(p.attrs[key][name], i)
			continue
		}
		key := strings.Join(steps, "/")
		p.elems[key] = append(p.elems[key], i)
	}
	return p
}

// xmlRecord is the state of the record being read.
type xmlRecord struct {
	row   int64
	line  int64
	start int64 // input offset of the record's start tag
	// keys[i] is the slash-joined local names of the open elements below the record
	// element down to depth i+1, built once per element.
	keys  []string
	text  [][]byte // per slot; reused from record to record
	count []int    // elements or attributes matched per slot
	all   []byte   // the slots' texts together, made one string per record
	// active[i] lists the slots collecting the text of the open element at depth i
	// (0 is the record element); kids[i] says it has had a child element.
	active [][]int
	kids   []bool
	reason Reject
	bad    bool
	// unmapped collects, across the entry, element and attribute paths no column takes.
	unmapped func(path string)
	// collect says the drift policy needs the values of leaves no column takes: they
	// are kept in drift as path, value pairs; leaf holds the text of the open element.
	collect bool
	drift   []string
	keyBuf  []string // drift rescue's scratch
	kvBuf   []string
	// atPaths caches "@name" drift paths of the record element's attributes.
	atPaths map[string]string
	leaf    []byte
	leafCut bool
}

// drifted records a leaf or attribute no column takes, unless ignore lists it.
func (rec *xmlRecord) drifted(p *xmlPlan, path, text string, cut bool) {
	if p.ignore[path] {
		return
	}
	rec.unmapped(path)
	if !rec.collect {
		return
	}
	if cut {
		rec.fail("", fmt.Sprintf("field %s: text longer than %d bytes", path, MaxXMLFieldBytes))
		return
	}
	rec.drift = append(rec.drift, path, text)
}

func (rec *xmlRecord) fail(column, reason string) {
	if !rec.bad {
		rec.bad = true
		rec.reason = Reject{Column: column, Reason: reason}
	}
}

// runXML streams records out of one XML entry. The rules (see the package doc):
//
//   - Names match by local name: namespace URIs and prefixes are ignored, and a path step
//     written "prefix:name" matches any element named name.
//   - Every element at the record path, counted from the root, is one record; _row is its
//     1-based number in the entry.
//   - A column's element must be a leaf: text (and CDATA) only. Its text is taken as
//     written, untrimmed; whitespace-only or absent text is NULL, as in CSV.
//   - A column path that matches more than one element or attribute in one record
//     rejects the record: none is chosen silently.
func (n *Normalizer) runXML(ctx context.Context, r io.Reader, source string, b *Batcher, reject func(Reject) error) (Stats, error) {
	var st Stats
	p := n.xml
	br := b.reader(0, r, 4096)
	enc := xmlEffectiveEncoding(br, n.def.Format.Encoding)
	text, err := DecodingReader(br, n.def.Format.Encoding)
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", source, err)
	}
	var src xmlTokens
	if b.xdoc == nil {
		b.xdoc = make([]byte, maxXMLScanBytes+1)
	}
	doc, rest, whole := readXMLPrefix(text, b.xdoc)
	if whole && !b.noScan && b.xscan.scan(bytes.TrimPrefix(doc, []byte(xmlBOM))) {
		src = &b.xscan
	} else {
		// Not for the scanner: encoding/xml reads the entry from its first byte.
		if whole {
			text = bytes.NewReader(doc)
		} else {
			text = io.MultiReader(bytes.NewReader(doc), rest)
		}
		in := b.xmlInput(b.reader(1, text, 64<<10))
		dec := xml.NewDecoder(in)
		dec.Strict = true
		// The text is already UTF-8; the declaration is checked against enc when its token
		// arrives (encoding/xml asks CharsetReader only about labels other than utf-8).
		dec.CharsetReader = func(_ string, input io.Reader) (io.Reader, error) { return input, nil }
		src = &xmlDecoderTokens{dec: dec, in: in}
	}

	bt := b.begin(source, &st)
	vals, fields, idx := b.xmlRow(n.nvals(), len(n.slots))
	policy := n.def.DriftPolicy()
	addCols := map[string]int{} // drift add: path → extra column
	var extra []value
	var extraSeen []bool

	rec := b.xmlRecord(len(n.slots))
	rec.collect = policy != feed.DriftIgnore
	rec.unmapped = func(path string) {
		// A few paths per entry: a linear search costs less than a map.
		if len(st.Unmapped) < maxXMLUnmapped && !slices.Contains(st.Unmapped, path) {
			st.Unmapped = append(st.Unmapped, path)
		}
	}
	var tok xmlToken
	inRecord := false
	depth := 0         // open elements
	prefixOK := 0      // the first prefixOK open elements match the record path
	roots := 0         // root elements seen
	tokens := 0        // for the context check
	var line int64 = 1 // line where the next token starts

	fileErr := func(sentinel error, format string, args ...any) error {
		return fmt.Errorf("%s line %d: %s: %w", source, line, fmt.Sprintf(format, args...), sentinel)
	}
	decodeErr := func(err error) error {
		if rerr := src.readErr(); rerr != nil && errors.Is(err, rerr) {
			if errors.Is(err, errMarkupTooLong) {
				return fileErr(ErrMalformedXML, "%v", err)
			}
			if errors.Is(err, ErrDecode) {
				return fmt.Errorf("%s line %d: %w: %w", source, line, ErrMalformedXML, err)
			}
			return fmt.Errorf("reading %s near line %d: %w", source, line, err)
		}
		if errors.Is(err, ErrMalformedXML) {
			return fmt.Errorf("%s line %d: %w", source, line, err)
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fileErr(ErrMalformedXML, "%v", err)
	}

	endRecord := func() error {
		inRecord = false
		st.Rows++
		if policy == feed.DriftReject && len(rec.drift) > 0 {
			var paths []string
			for i := 0; i < len(rec.drift); i += 2 {
				paths = append(paths, rec.drift[i])
			}
			return fmt.Errorf("%s record %d at line %d: field(s) %q that no column takes and ignore does not list, and drift is reject: %w", source, rec.row, rec.line, paths, ErrDrift)
		}
		if policy == feed.DriftAdd {
			extra, extraSeen = extra[:0], extraSeen[:0]
			for i := 0; i < len(rec.drift); i += 2 {
				path, text := rec.drift[i], rec.drift[i+1]
				ci, ok := addCols[path]
				if !ok {
					var err error
					if ci, err = bt.addColumn(path); err != nil {
						return fmt.Errorf("%s record %d at line %d: %w", source, rec.row, rec.line, err)
					}
					addCols[path] = ci
				}
				for len(extra) < len(addCols) {
					extra, extraSeen = append(extra, value{}), append(extraSeen, false)
				}
				if extraSeen[ci] {
					rec.fail("", fmt.Sprintf("field %s appears more than once in one record; drift add takes one value", path))
					continue
				}
				extraSeen[ci] = true
				extra[ci] = value{valid: strings.TrimSpace(text) != "", s: text}
			}
		}
		rj, ok := n.xmlValues(rec, fields, idx, vals)
		if !ok {
			rj.Source, rj.Row, rj.Line = source, rec.row, rec.line
			end, _ := src.pos()
			rj.Raw = src.raw(rec.start, end)
			st.Rejected++
			if err := reject(rj); err != nil {
				return fmt.Errorf("recording reject for %s row %d: %w", source, rj.Row, err)
			}
			return nil
		}
		if policy == feed.DriftRescue {
			keys := rec.keyBuf[:0]
			for i := 0; i < len(rec.drift); i += 2 {
				keys = append(keys, rec.drift[i])
			}
			rec.keyBuf = keys
			keys = uniqueKeys(keys)
			kv := rec.kvBuf[:0]
			for i := 0; i < len(rec.drift); i += 2 {
				if strings.TrimSpace(rec.drift[i+1]) != "" {
					kv = append(kv, keys[i/2], rec.drift[i+1])
				}
			}
			rec.kvBuf = kv
			vals[len(n.cols)] = rescued(kv)
		}
		return bt.add(vals, extra, rec.row)
	}

	for {
		if tokens++; tokens%4096 == 1 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
		startOff, l := src.pos()
		line = l
		src.mark(startOff, inRecord)
		err := src.next(&tok)
		if err == io.EOF && depth == 0 {
			break
		}
		if err != nil {
			return st, decodeErr(err)
		}
		switch tok.kind {
		case tokStart:
			t := xml.StartElement{Name: tok.name, Attr: tok.attr}
			depth++
			if depth > MaxXMLDepth {
				return st, fileErr(ErrMalformedXML, "elements nested deeper than %d", MaxXMLDepth)
			}
			if depth == 1 {
				if roots++; roots > 1 {
					return st, fileErr(ErrMalformedXML, "second root element <%s>", t.Name.Local)
				}
				if t.Name.Local != p.record[0] {
					return st, fileErr(ErrXMLRoot, "root element <%s>, record path %q starts with <%s>", t.Name.Local, n.def.Format.Record, p.record[0])
				}
			}
			if inRecord {
				rec.startChild(p, n, t)
				continue
			}
			if prefixOK == depth-1 && depth <= len(p.record) && t.Name.Local != p.record[depth-1] {
				// Beside the record path: whatever it holds is not read. Said in Unmapped so
				// that a misnamed record element is not lost unnoticed.
				rec.unmapped("/" + strings.Join(append(p.record[:depth-1:depth-1], t.Name.Local), "/"))
			}
			if prefixOK == depth-1 && depth <= len(p.record) && t.Name.Local == p.record[depth-1] {
				prefixOK = depth
				if depth == len(p.record) {
					inRecord = true
					rec.begin(st.Rows+1, line, startOff, len(n.slots))
					rec.startRecord(p, t)
				}
			}
		case tokEnd:
			depth--
			if prefixOK > depth {
				prefixOK = depth
			}
			if inRecord {
				if len(rec.active) == 1 {
					if err := endRecord(); err != nil {
						return st, err
					}
					continue
				}
				rec.endChild(p)
			}
		case tokText:
			t := tok.data
			cut := src.takeCut()
			if depth == 0 {
				if len(bytes.TrimSpace(t)) > 0 {
					return st, fileErr(ErrMalformedXML, "text outside the root element")
				}
				continue
			}
			if !inRecord {
				continue
			}
			if top := rec.active[len(rec.active)-1]; len(top) == 0 && rec.collect {
				if cut || len(rec.leaf)+len(t) > MaxXMLFieldBytes {
					rec.leafCut = true
				} else {
					rec.leaf = append(rec.leaf, t...)
				}
			}
			for _, sl := range rec.active[len(rec.active)-1] {
				b := &rec.text[sl]
				if cut || len(*b)+len(t) > MaxXMLFieldBytes {
					name := n.cols[n.slotCol[sl]].Name
					rec.fail(name, fmt.Sprintf("column %s: text longer than %d bytes", name, MaxXMLFieldBytes))
					break
				}
				*b = append(*b, t...)
			}
		case tokProcInst:
			if tok.target != "xml" {
				continue
			}
			if label := xmlDeclEncoding(tok.data); label != "" && !encodingsAgree(label, enc) {
				return st, fileErr(ErrMalformedXML, "document declares encoding %q but is read as %s (the feed's encoding, or its byte order mark)", label, enc)
			}
		case tokDirective, tokComment:
			// DOCTYPE and other directives are skipped, never processed: no DTD is read,
			// no external entity fetched, no custom entity defined.
		}
	}
	if roots == 0 {
		return st, fileErr(ErrMalformedXML, "no root element")
	}
	return st, nil
}

func (rec *xmlRecord) begin(row, line, start int64, nslots int) {
	rec.row, rec.line, rec.start = row, line, start
	rec.keys, rec.active, rec.kids = rec.keys[:0], rec.active[:0], rec.kids[:0]
	rec.bad, rec.reason = false, Reject{}
	rec.drift = rec.drift[:0]
	rec.leaf, rec.leafCut = rec.leaf[:0], false
	for i := range nslots {
		rec.text[i] = rec.text[i][:0]
		rec.count[i] = 0
	}
}

// startRecord handles the record element itself: only attribute columns ("@id") can
// take from it, since a column's element path is never empty.
func (rec *xmlRecord) startRecord(p *xmlPlan, t xml.StartElement) {
	rec.active = append(rec.active, nil)
	rec.kids = append(rec.kids, false)
	rec.attrs(p, "", t.Attr)
}

func (rec *xmlRecord) startChild(p *xmlPlan, n *Normalizer, t xml.StartElement) {
	top := len(rec.active) - 1
	rec.kids[top] = true
	if parent := rec.active[top]; len(parent) > 0 {
		name := n.cols[n.slotCol[parent[0]]].Name
		rec.fail(name, fmt.Sprintf("column %s: element %s has child element <%s>; a column takes text only", name, n.slots[parent[0]], t.Name.Local))
	}
	rec.leaf = rec.leaf[:0]
	rec.leafCut = false
	key := t.Name.Local
	if k := len(rec.keys); k > 0 {
		key = rec.keys[k-1] + "/" + key
	}
	rec.keys = append(rec.keys, key)
	slots := p.elems[key]
	for _, sl := range slots {
		rec.count[sl]++
	}
	rec.active = append(rec.active, slots)
	rec.kids = append(rec.kids, false)
	rec.attrs(p, key, t.Attr)
}

func (rec *xmlRecord) endChild(p *xmlPlan) {
	top := len(rec.active) - 1
	if key := rec.keys[top-1]; !rec.kids[top] && len(rec.active[top]) == 0 && !p.inner[key] {
		rec.drifted(p, key, string(rec.leaf), rec.leafCut)
	}
	rec.keys = rec.keys[:top-1]
	rec.active = rec.active[:top]
	rec.kids = rec.kids[:top]
}

func (rec *xmlRecord) attrs(p *xmlPlan, key string, attrs []xml.Attr) {
	want := p.attrs[key]
	for _, a := range attrs {
		if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
			continue
		}
		slots := want[a.Name.Local]
		if len(slots) == 0 {
			if key == "" {
				rec.drifted(p, rec.atPath(a.Name.Local), a.Value, false)
			} else {
				rec.drifted(p, key+"/@"+a.Name.Local, a.Value, false)
			}
		}
		for _, sl := range slots {
			rec.count[sl]++
			if rec.count[sl] == 1 {
				rec.text[sl] = append(rec.text[sl], a.Value...)
			}
		}
	}
}

// atPath returns "@"+name, made once per name while there is room.
func (rec *xmlRecord) atPath(name string) string {
	if path, ok := rec.atPaths[name]; ok {
		return path
	}
	path := "@" + name
	if len(rec.atPaths) < maxInterned {
		if rec.atPaths == nil {
			rec.atPaths = map[string]string{}
		}
		rec.atPaths[name] = path
	}
	return path
}

// xmlValues hands a finished record's slots to the row stage the CSV path uses. A
// required column without transforms rejects the record when one of its sources is
// absent; with transforms an absent source is empty text (a default may fill it).
func (n *Normalizer) xmlValues(rec *xmlRecord, fields []string, idx []int, vals []value) (Reject, bool) {
	if rec.bad {
		return rec.reason, false
	}
	rec.all = rec.all[:0]
	for sl, src := range n.slots {
		c := &n.cols[n.slotCol[sl]]
		switch cnt := rec.count[sl]; {
		case cnt > 1:
			what := "elements"
			if strings.Contains(src, "@") {
				what = "attributes"
			}
			return c.reject(fmt.Sprintf("%s matches %d %s in one record, want at most one", src, cnt, what)), false
		case cnt == 0:
			if c.Required && len(c.steps) == 0 {
				return c.reject(fmt.Sprintf("required %s is missing", src)), false
			}
			idx[sl] = -1
		default:
			idx[sl] = sl
			rec.all = append(rec.all, rec.text[sl]...)
		}
	}
	all := string(rec.all) // one allocation for the record's texts
	for sl, i := range idx {
		if i >= 0 {
			fields[sl], all = all[:len(rec.text[sl])], all[len(rec.text[sl]):]
		}
	}
	return n.convert(fields, idx, vals)
}

// errMarkupTooLong is the input's error for markup beyond MaxXMLMarkupBytes.
var errMarkupTooLong = errors.New("markup longer than limit")

// xmlInput feeds the decoder byte by byte (it implements io.ByteReader, so the decoder
// adds no buffer of its own and its offsets are ours). It drops a leading UTF-8 byte
// order mark, keeps the bytes of the current record for Reject.Raw (up to
// MaxXMLRawBytes), and bounds tokens: text beyond MaxXMLFieldBytes is skipped up to the
// next '<', a CDATA section up to its "]]>" (the decoder sees a shortened node and the
// cut is reported), other markup beyond MaxXMLMarkupBytes fails the read.
type xmlInput struct {
	r   *bufio.Reader
	err error // first error returned other than io.EOF

	off  int64  // bytes handed to the decoder
	last byte   // the last of them
	prev byte   // the one before last
	bom  bool   // the start was checked for a byte order mark
	pend []byte // bytes to hand out before reading more: the end of a cut CDATA section

	buf  []byte // handed-out bytes from offset base, at most MaxXMLRawBytes
	base int64
	over bool // bytes after buf were handed out but not kept

	tokStart     int64 // offset where the decoder's current token starts
	text         bool  // the current token is character data
	inRef        bool  // inside an entity or character reference in text
	cdata        int   // leading bytes of the current markup token that match cdataOpen
	cut          bool  // text of the current token was skipped
	skippedLines int64 // line breaks in skipped text, which the decoder did not count
}

func newXMLInput(r *bufio.Reader) *xmlInput {
	return &xmlInput{r: r}
}

// xmlInput returns the batcher's xmlInput reset to read r, keeping the capacity of its
// record buffer: the entries of an archive are read one after another.
func (b *Batcher) xmlInput(r *bufio.Reader) *xmlInput {
	if b.xin == nil {
		b.xin = newXMLInput(r)
		return b.xin
	}
	*b.xin = xmlInput{r: r, buf: b.xin.buf[:0]}
	return b.xin
}

// xmlRow returns the batcher's buffers for one record's values, slot texts and slot
// indexes, which every record overwrites before use.
func (b *Batcher) xmlRow(nvals, nslots int) ([]value, []string, []int) {
	if len(b.xvals) != nvals || len(b.xfields) != nslots {
		b.xvals, b.xfields, b.xidx = make([]value, nvals), make([]string, nslots), make([]int, nslots)
	}
	return b.xvals, b.xfields, b.xidx
}

// xmlRecord returns the batcher's record state for a run over n slots; its buffers keep
// their capacity from record to record and entry to entry. begin resets it.
func (b *Batcher) xmlRecord(n int) *xmlRecord {
	if b.xrec == nil || len(b.xrec.text) != n {
		b.xrec = &xmlRecord{text: make([][]byte, n), count: make([]int, n)}
	}
	return b.xrec
}

func (in *xmlInput) ReadByte() (byte, error) {
	if in.err != nil {
		return 0, in.err
	}
	if !in.bom {
		in.bom = true
		if b, err := in.r.Peek(3); err == nil && string(b) == "\uFEFF" {
			in.r.Discard(3)
		}
	}
	if len(in.pend) > 0 {
		b := in.pend[0]
		in.pend = in.pend[1:]
		return in.handOut(b), nil
	}
	b, err := in.r.ReadByte()
	if err != nil {
		if err != io.EOF {
			in.err = err
		}
		return 0, err
	}
	n := in.off - in.tokStart // bytes of this token already handed out
	if n == 0 {
		in.text, in.inRef, in.cdata = b != '<', false, 0
	}
	if !in.text && int64(in.cdata) == n && n < int64(len(cdataOpen)) && b == cdataOpen[n] {
		in.cdata++
	}
	if in.cdata == len(cdataOpen) && n >= MaxXMLFieldBytes && b&0xC0 != 0x80 {
		// Skip the rest of the CDATA section up to its "]]>" (which may begin in the
		// bytes already handed out), then hand out "]]>" so the decoder ends it there.
		w0, w1 := in.prev, in.last
		read := 1 // bytes read and not handed out, b included
		for !(w0 == ']' && w1 == ']' && b == '>') {
			if b == '\n' {
				in.skippedLines++
			}
			w0, w1 = w1, b
			if b, err = in.r.ReadByte(); err != nil {
				if err != io.EOF {
					in.err = err
				}
				return 0, err
			}
			read++
		}
		if read <= 3 {
			// Only (the rest of) "]]>" was read: nothing is lost, hand it out unchanged.
			term := "]]>"[3-read:]
			in.pend = append(in.pend[:0], term[1:]...)
			return in.handOut(term[0]), nil
		}
		in.cut = true
		in.pend = append(in.pend[:0], ']', '>')
		return in.handOut(']'), nil
	}
	if in.text {
		if n >= MaxXMLFieldBytes && b&0xC0 != 0x80 && (!in.inRef || n >= MaxXMLFieldBytes+64) {
			// Skip the rest of the text node; '<' starts the next token and is handed out.
			for b != '<' {
				in.cut = true
				if b == '\n' {
					in.skippedLines++
				}
				if b, err = in.r.ReadByte(); err != nil {
					if err != io.EOF {
						in.err = err
					}
					return 0, err
				}
			}
		}
		switch b {
		case '&':
			in.inRef = true
		case ';', '<':
			in.inRef = false
		}
	} else if n >= MaxXMLMarkupBytes {
		in.err = fmt.Errorf("%w: one piece of markup exceeds %d bytes", errMarkupTooLong, MaxXMLMarkupBytes)
		return 0, in.err
	}
	return in.handOut(b), nil
}

// cdataOpen starts a CDATA section.
const cdataOpen = "<![CDATA["

// handOut records b as handed to the decoder.
func (in *xmlInput) handOut(b byte) byte {
	if len(in.buf) < MaxXMLRawBytes {
		in.buf = append(in.buf, b)
	} else {
		in.over = true
	}
	in.off++
	in.prev, in.last = in.last, b
	return b
}

// mark tells the input that the decoder's next token starts at offset at. Unless keep is
// set, bytes before at are dropped.
func (in *xmlInput) mark(at int64, keep bool) {
	in.tokStart = at
	in.cdata = 0
	if in.off == at {
		in.text, in.inRef = false, false // decided by the next byte
	} else {
		// The decoder holds one byte back (at most): it is the first of the next token.
		in.text, in.inRef = in.last != '<', in.last == '&'
		if in.last == '<' {
			in.cdata = 1
		}
	}
	in.cut = false
	if keep {
		return
	}
	in.buf, in.over = in.buf[:0], false
	in.base = at
	if in.off > at {
		in.buf = append(in.buf, in.last)
	}
}

// takeCut reports whether text of the token just read was skipped.
func (in *xmlInput) takeCut() bool {
	c := in.cut
	in.cut = false
	return c
}

// raw is the kept text from offset start to end, shortened to MaxXMLRawBytes.
func (in *xmlInput) raw(start, end int64) string {
	i, j := start-in.base, end-in.base
	if i < 0 || i > int64(len(in.buf)) {
		return ""
	}
	if j <= int64(len(in.buf)) {
		return string(in.buf[i:j])
	}
	s := in.buf[i:]
	for k := 0; k < utf8.UTFMax-1 && len(s) > 0; k++ {
		// Drop a character cut short by the cap.
		if r, size := utf8.DecodeLastRune(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return string(s)
}

// Read makes xmlInput an io.Reader; the decoder uses ReadByte.
func (in *xmlInput) Read(p []byte) (int, error) {
	for i := range p {
		b, err := in.ReadByte()
		if err != nil {
			return i, err
		}
		p[i] = b
	}
	return len(p), nil
}

// xmlEffectiveEncoding is the encoding DecodingReader will apply: a byte order mark's,
// else the feed's (utf-8 when empty), as a feed.Encoding* value.
func xmlEffectiveEncoding(br *bufio.Reader, declared string) string {
	head, _ := br.Peek(3)
	switch {
	case len(head) >= 3 && head[0] == 0xEF && head[1] == 0xBB && head[2] == 0xBF:
		return feed.EncodingUTF8
	case len(head) >= 2 && head[0] == 0xFE && head[1] == 0xFF:
		return feed.EncodingUTF16BE
	case len(head) >= 2 && head[0] == 0xFF && head[1] == 0xFE:
		return feed.EncodingUTF16LE
	case declared == "":
		return feed.EncodingUTF8
	}
	return strings.ToLower(declared)
}

// xmlDeclEncoding returns the encoding pseudo-attribute of an XML declaration's body
// (`version="1.0" encoding="UTF-8"`), or "" when there is none.
func xmlDeclEncoding(inst []byte) string {
	i := bytes.Index(inst, []byte("encoding"))
	if i < 0 {
		return ""
	}
	s := bytes.TrimLeft(inst[i+len("encoding"):], " \t\r\n")
	if len(s) == 0 || s[0] != '=' {
		return ""
	}
	s = bytes.TrimLeft(s[1:], " \t\r\n")
	if len(s) == 0 || s[0] != '"' && s[0] != '\'' {
		return ""
	}
	end := bytes.IndexByte(s[1:], s[0])
	if end < 0 {
		return ""
	}
	switch label := s[1 : 1+end]; string(label) {
	case "UTF-8": // the usual ones, without a copy
		return "UTF-8"
	case "utf-8":
		return "utf-8"
	default:
		return string(label)
	}
}

// encodingFamily groups the labels an XML declaration may use into the families of
// feed.Encodings. Windows-1252 and ISO-8859-1 are one family: exporters routinely label
// windows-1252 text ISO-8859-1, and DecodingReader refuses latin-1's C1 bytes, so
// neither choice mis-decodes a byte silently. ASCII agrees with every family whose
// first 128 code points it is.
func encodingFamily(label string) string {
	label = strings.TrimSpace(label)
	if strings.EqualFold(label, "utf-8") { // the usual label, without lower-casing a copy
		return "utf-8"
	}
	switch strings.ToLower(label) {
	case "utf-8", "utf8":
		return "utf-8"
	case "utf-16", "utf-16le", "utf-16be", "utf16", "ucs-2", "iso-10646-ucs-2":
		return "utf-16"
	case "windows-1252", "cp1252", "x-cp1252", "iso-8859-1", "iso8859-1", "iso_8859-1", "latin-1", "latin1", "l1", "cp819", "ibm819":
		return "8bit"
	case "us-ascii", "ascii", "iso-646", "iso646-us":
		return "ascii"
	}
	return label
}

// encodingsAgree reports whether a declaration's label fits the encoding the bytes are
// read with.
func encodingsAgree(label, enc string) bool {
	decl, read := encodingFamily(label), encodingFamily(enc)
	if decl == "ascii" {
		return read != "utf-16"
	}
	return decl == read
}
