package normalize

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/medlake/medlake/protocol/feed"
)

// Encoding errors.
var (
	// ErrDecode is wrapped by every *DecodeError: the input holds bytes that are not
	// text in its encoding. The entry is unusable as declared; nothing is guessed.
	ErrDecode = errors.New("invalid encoded text")
	// ErrEncoding is wrapped when the declared encoding is not one of feed.Encodings.
	ErrEncoding = errors.New("unsupported encoding")
)

// DecodeError says where and why decoding stopped.
type DecodeError struct {
	// Encoding is the encoding applied: the declared one, or the one a byte order mark named.
	Encoding string
	// Offset is the 0-based byte offset of the first bad byte in the input, counting
	// any byte order mark.
	Offset int64
	// Reason says what is wrong with the bytes at Offset.
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s input at byte offset %d: %s", e.Encoding, e.Offset, e.Reason)
}

func (e *DecodeError) Unwrap() error { return ErrDecode }

// DecodingReader returns r's text as UTF-8, decoding it from encoding (one of
// feed.Encodings, any case; empty means UTF-8) as it streams: it never holds more than a
// few kilobytes. A leading byte order mark decides the encoding whatever is declared and
// is not part of the text: EF BB BF is UTF-8, FE FF UTF-16 big-endian, FF FE UTF-16
// little-endian.
//
// Nothing is ever replaced. golang.org/x/text decodes windows-1252's undefined bytes
// (0x81, 0x8D, 0x8F, 0x90, 0x9D), unpaired UTF-16 surrogates and a UTF-16 input of odd
// length to U+FFFD without an error, so those are checked before decoding and end the
// stream with a *DecodeError (wrapping ErrDecode) that gives the byte offset; the text
// before it is delivered first. Per encoding:
//
//   - utf-8: the bytes pass through unchanged. Invalid UTF-8 is left for the caller
//     (the CSV path rejects the row that holds it).
//   - windows-1252: the five undefined bytes are errors; all others are characters.
//   - latin-1 (ISO-8859-1): every byte is defined, but 0x80-0x9F are the C1 control
//     codes, which medical text never holds and which a windows-1252 file mislabelled
//     latin-1 (the euro sign is 0x80 there) would turn into; they are errors, so such a
//     file must be declared windows-1252 rather than silently mis-decoded.
//   - utf-16, utf-16le, utf-16be: unpaired surrogates and a trailing odd byte (a
//     truncated file) are errors. utf-16 without a byte order mark is big-endian.
//
// An unknown encoding is an error wrapping ErrEncoding. A read error from r passes
// through unchanged.
func DecodingReader(r io.Reader, encoding string) (io.Reader, error) {
	enc := strings.ToLower(encoding)
	switch enc {
	case "":
		enc = feed.EncodingUTF8
	case feed.EncodingUTF8, feed.EncodingWindows1252, feed.EncodingLatin1,
		feed.EncodingUTF16, feed.EncodingUTF16LE, feed.EncodingUTF16BE:
	default:
		return nil, fmt.Errorf("%w %q (%s)", ErrEncoding, encoding, strings.Join(feed.Encodings(), ", "))
	}
	br := bufio.NewReader(r)
	// A read error here is kept by br and returned by the first Read.
	head, _ := br.Peek(3)
	var bom int
	switch {
	case len(head) >= 3 && head[0] == 0xEF && head[1] == 0xBB && head[2] == 0xBF:
		enc, bom = feed.EncodingUTF8, 3
	case len(head) >= 2 && head[0] == 0xFE && head[1] == 0xFF:
		enc, bom = feed.EncodingUTF16BE, 2
	case len(head) >= 2 && head[0] == 0xFF && head[1] == 0xFE:
		enc, bom = feed.EncodingUTF16LE, 2
	}
	if _, err := br.Discard(bom); err != nil {
		return nil, fmt.Errorf("skipping byte order mark: %w", err) // cannot happen: peeked
	}
	var c *checked
	switch enc {
	case feed.EncodingUTF8:
		return br, nil
	case feed.EncodingWindows1252:
		c = &checked{dec: charmap.Windows1252.NewDecoder(), valid: validWindows1252}
	case feed.EncodingLatin1:
		c = &checked{dec: charmap.ISO8859_1.NewDecoder(), valid: validLatin1}
	case feed.EncodingUTF16, feed.EncodingUTF16BE:
		c = &checked{dec: unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM).NewDecoder(), valid: validUTF16(true)}
	case feed.EncodingUTF16LE:
		c = &checked{dec: unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewDecoder(), valid: validUTF16(false)}
	}
	c.enc, c.base = enc, int64(bom)
	return transform.NewReader(br, c), nil
}

// validator reports how many leading bytes of src are complete, valid input. When that is
// less than len(src) it also says why: reason is empty when the rest is merely incomplete
// (more input may complete it; never when atEOF), else the bytes at n are invalid.
type validator func(src []byte, atEOF bool) (n int, reason string)

// checked runs dec only over input that valid accepts, so dec never meets the bytes it
// would silently replace. It tracks the input offset for errors.
type checked struct {
	dec   transform.Transformer
	valid validator
	enc   string
	base  int64 // bytes before the first one transformed (the byte order mark)
	off   int64 // input offset of src[0] in the next Transform call
}

func (c *checked) Reset() {
	c.dec.Reset()
	c.off = c.base
}

func (c *checked) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	n, reason := c.valid(src, atEOF)
	nDst, nSrc, err = c.dec.Transform(dst, src[:n], atEOF && n == len(src))
	c.off += int64(nSrc)
	if err != nil || n == len(src) {
		return nDst, nSrc, err
	}
	if nSrc < n {
		// dec stopped early without saying why; let the caller come back.
		return nDst, nSrc, transform.ErrShortSrc
	}
	if reason == "" {
		return nDst, nSrc, transform.ErrShortSrc
	}
	return nDst, nSrc, &DecodeError{Encoding: c.enc, Offset: c.off, Reason: reason}
}

// windows1252Undefined are the bytes windows-1252 leaves without a character.
var windows1252Undefined = [256]bool{0x81: true, 0x8D: true, 0x8F: true, 0x90: true, 0x9D: true}

func validWindows1252(src []byte, _ bool) (int, string) {
	for i, b := range src {
		if windows1252Undefined[b] {
			return i, fmt.Sprintf("byte 0x%02X is not a windows-1252 character", b)
		}
	}
	return len(src), ""
}

func validLatin1(src []byte, _ bool) (int, string) {
	for i, b := range src {
		if b >= 0x80 && b <= 0x9F {
			return i, fmt.Sprintf("byte 0x%02X is a C1 control code, not text (windows-1252 data declared as latin-1?)", b)
		}
	}
	return len(src), ""
}

func validUTF16(bigEndian bool) validator {
	unit := func(b []byte) rune {
		if bigEndian {
			return rune(b[0])<<8 | rune(b[1])
		}
		return rune(b[1])<<8 | rune(b[0])
	}
	return func(src []byte, atEOF bool) (int, string) {
		i := 0
		for i+1 < len(src) {
			u := unit(src[i:])
			switch {
			case u >= 0xDC00 && u <= 0xDFFF:
				return i, fmt.Sprintf("unpaired low surrogate U+%04X", u)
			case u >= 0xD800 && u <= 0xDBFF:
				if i+3 >= len(src) {
					if atEOF {
						return i, fmt.Sprintf("high surrogate U+%04X at end of input", u)
					}
					return i, ""
				}
				if v := unit(src[i+2:]); !utf16.IsSurrogate(v) || v < 0xDC00 {
					return i, fmt.Sprintf("unpaired high surrogate U+%04X", u)
				}
				i += 4
			default:
				i += 2
			}
		}
		if i < len(src) && atEOF {
			return i, "odd number of bytes: the input ends inside a UTF-16 code unit"
		}
		return i, ""
	}
}

// csvText is the UTF-8 text the CSV path parses: r decoded from encoding, with lone CR
// line breaks made LF when the file uses them.
func csvText(r io.Reader, encoding string) (io.Reader, error) {
	text, err := DecodingReader(r, encoding)
	if err != nil {
		return nil, err
	}
	return transform.NewReader(text, &lineEnds{}), nil
}

// lineEnds lets encoding/csv, which ends lines only at LF (dropping a CR before it), read
// files whose lines end with a lone CR (classic Mac OS exports). The first line break
// decides: a lone CR makes every lone CR after it an LF, including one inside a quoted
// field (encoding/csv turns a quoted CRLF into LF too); an LF or CRLF leaves the whole
// file untouched, so a stray CR in such a file stays part of its field. Bytes are never
// added or removed, so record boundaries and byte counts are those of the decoded text.
type lineEnds struct {
	mode int // lineEndsUnknown until the first line break
}

const (
	lineEndsUnknown = iota
	lineEndsAsIs
	lineEndsCR
)

func (t *lineEnds) Reset() { t.mode = lineEndsUnknown }

func (t *lineEnds) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc < len(src) {
		if nDst == len(dst) {
			return nDst, nSrc, transform.ErrShortDst
		}
		if t.mode == lineEndsAsIs {
			n := copy(dst[nDst:], src[nSrc:])
			nDst += n
			nSrc += n
			continue
		}
		// Copy up to the next CR (and, before the first line break, LF).
		end := len(src)
		for i := nSrc; i < len(src); i++ {
			if src[i] == '\r' || (src[i] == '\n' && t.mode == lineEndsUnknown) {
				end = i
				break
			}
		}
		if end > nSrc {
			n := copy(dst[nDst:], src[nSrc:end])
			nDst += n
			nSrc += n
			continue
		}
		b := src[nSrc]
		if b == '\n' {
			t.mode = lineEndsAsIs
		} else {
			if nSrc+1 == len(src) && !atEOF {
				return nDst, nSrc, transform.ErrShortSrc
			}
			lone := nSrc+1 == len(src) || src[nSrc+1] != '\n'
			if t.mode == lineEndsUnknown {
				t.mode = lineEndsAsIs
				if lone {
					t.mode = lineEndsCR
				}
			}
			if lone && t.mode == lineEndsCR {
				b = '\n'
			}
		}
		dst[nDst] = b
		nDst++
		nSrc++
	}
	return nDst, nSrc, nil
}

// SniffPeekBytes is how many leading bytes of an entry to peek for SniffText: enough for
// feed.SniffBytes of text in any supported encoding.
const SniffPeekBytes = 4 * feed.SniffBytes

// SniffText decodes the start of an entry for match.sniff: at most feed.SniffBytes of
// text, cut on a character boundary. Bytes that do not decode end the text there (the
// peek may end inside a character); Run reports them if the entry is read. Only an
// unknown encoding is an error.
func SniffText(raw []byte, encoding string) (string, error) {
	text, err := DecodingReader(bytes.NewReader(raw), encoding)
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(io.LimitReader(text, feed.SniffBytes+utf8.UTFMax))
	if len(b) > feed.SniffBytes {
		cut := feed.SniffBytes
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		b = b[:cut]
	}
	return string(b), nil
}
