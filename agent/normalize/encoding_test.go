package normalize

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"

	"github.com/medlake/medlake/protocol/feed"
)

// iconv converts UTF-8 text with the system's iconv, so the decoder is checked against an
// encoder that is not golang.org/x/text.
func iconv(t testing.TB, to, text string) []byte {
	t.Helper()
	path, err := exec.LookPath("iconv")
	if err != nil {
		t.Fatal("iconv is not installed: the encoded fixtures are made by it (Debian package libc-bin)")
	}
	cmd := exec.Command(path, "-f", "utf-8", "-t", to)
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("iconv -t %s: %v", to, err)
	}
	return out
}

// decodeAll reads everything DecodingReader gives for data, through readers that return
// the input whole, half at a time and one byte at a time; all must agree.
func decodeAll(t testing.TB, data []byte, enc string) (string, error) {
	t.Helper()
	var first string
	var firstErr error
	for i, wrap := range []func(io.Reader) io.Reader{
		func(r io.Reader) io.Reader { return r },
		iotest.HalfReader,
		iotest.OneByteReader,
	} {
		r, err := DecodingReader(wrap(bytes.NewReader(data)), enc)
		if err != nil {
			return "", err
		}
		got, err := io.ReadAll(r)
		if i == 0 {
			first, firstErr = string(got), err
			continue
		}
		if string(got) != first || errString(err) != errString(firstErr) {
			t.Fatalf("reader %d: %q, %v; whole input gave %q, %v", i, got, err, first, firstErr)
		}
	}
	return first, firstErr
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

const names = "José;Zoë;Müller;Ñúñez;12,50 €\r\nline 2\rline 3\n"

func TestDecodingReader(t *testing.T) {
	latin := strings.ReplaceAll(names, "€", "EUR")
	for _, tt := range []struct {
		name, enc string
		input     func(t testing.TB) []byte
		want      string
	}{
		{"utf-8", feed.EncodingUTF8, func(testing.TB) []byte { return []byte(names) }, names},
		{"empty means utf-8", "", func(testing.TB) []byte { return []byte(names) }, names},
		{"utf-8 bom", "UTF-8", func(testing.TB) []byte { return append([]byte("\xEF\xBB\xBF"), names...) }, names},
		{"utf-8 bom beats windows-1252", feed.EncodingWindows1252, func(testing.TB) []byte { return append([]byte("\xEF\xBB\xBF"), names...) }, names},
		{"utf-8 invalid passes through", "", func(testing.TB) []byte { return []byte("a\xffb\x81") }, "a\xffb\x81"},
		{"windows-1252", feed.EncodingWindows1252, func(t testing.TB) []byte { return iconv(t, "windows-1252", names) }, names},
		{"windows-1252 any case", "Windows-1252", func(t testing.TB) []byte { return iconv(t, "windows-1252", names) }, names},
		{"windows-1252 punctuation", feed.EncodingWindows1252, func(t testing.TB) []byte { return iconv(t, "windows-1252", "„Œ‰” – ™ ž Ÿ") }, "„Œ‰” – ™ ž Ÿ"},
		{"latin-1", feed.EncodingLatin1, func(t testing.TB) []byte { return iconv(t, "latin1", latin) }, latin},
		{"utf-16 bom (glibc: little-endian)", feed.EncodingUTF16, func(t testing.TB) []byte { return iconv(t, "utf-16", names) }, names},
		{"utf-16 no bom is big-endian", feed.EncodingUTF16, func(t testing.TB) []byte { return iconv(t, "utf-16be", names) }, names},
		{"utf-16le", feed.EncodingUTF16LE, func(t testing.TB) []byte { return iconv(t, "utf-16le", names) }, names},
		{"utf-16be", feed.EncodingUTF16BE, func(t testing.TB) []byte { return iconv(t, "utf-16be", names) }, names},
		{"utf-16 surrogate pair", feed.EncodingUTF16LE, func(t testing.TB) []byte { return iconv(t, "utf-16le", "a𝄞b😀") }, "a𝄞b😀"},
		{"utf-16le bom beats utf-16be", feed.EncodingUTF16BE, func(t testing.TB) []byte { return append([]byte{0xFF, 0xFE}, iconv(t, "utf-16le", names)...) }, names},
		{"utf-16be bom beats latin-1", feed.EncodingLatin1, func(t testing.TB) []byte { return append([]byte{0xFE, 0xFF}, iconv(t, "utf-16be", names)...) }, names},
		{"utf-16le bom beats utf-8", feed.EncodingUTF8, func(t testing.TB) []byte { return append([]byte{0xFF, 0xFE}, iconv(t, "utf-16le", names)...) }, names},
		{"empty input", feed.EncodingUTF16, func(testing.TB) []byte { return nil }, ""},
		{"bom only", feed.EncodingUTF16, func(testing.TB) []byte { return []byte{0xFF, 0xFE} }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(t, tt.input(t), tt.enc)
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDecodingReaderErrors(t *testing.T) {
	le := func(s string) []byte {
		b, _ := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewEncoder().Bytes([]byte(s))
		return b
	}
	be := func(s string) []byte {
		b, _ := unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM).NewEncoder().Bytes([]byte(s))
		return b
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tt := range []struct {
		name, enc string
		input     []byte
		before    string // text delivered before the error
		offset    int64
		reason    string
	}{
		{"windows-1252 0x81", feed.EncodingWindows1252, []byte("Jos\xe9\x81x"), "José", 4, "0x81"},
		{"windows-1252 0x8D", feed.EncodingWindows1252, []byte("\x8D"), "", 0, "0x8D"},
		{"windows-1252 0x8F", feed.EncodingWindows1252, []byte("ab\x80\x8F"), "ab€", 3, "0x8F"},
		{"windows-1252 0x90", feed.EncodingWindows1252, []byte("a\n\x90"), "a\n", 2, "0x90"},
		{"windows-1252 0x9D", feed.EncodingWindows1252, []byte("\x9D"), "", 0, "0x9D"},
		{"latin-1 c1 control", feed.EncodingLatin1, []byte("12,50 \x80"), "12,50 ", 6, "C1 control"},
		{"utf-16le odd length", feed.EncodingUTF16LE, cat(le("Zoë"), []byte{'x'}), "Zoë", 6, "odd number of bytes"},
		{"utf-16 bom counts in offset", feed.EncodingUTF16, cat([]byte{0xFF, 0xFE}, le("Zoë"), []byte{'x'}), "Zoë", 8, "odd number of bytes"},
		{"utf-16be lone low surrogate", feed.EncodingUTF16BE, cat(be("ab"), []byte{0xDC, 0x00}, be("c")), "ab", 4, "unpaired low surrogate U+DC00"},
		{"utf-16be high surrogate then letter", feed.EncodingUTF16BE, cat(be("a"), []byte{0xD8, 0x3D}, be("b")), "a", 2, "unpaired high surrogate U+D83D"},
		{"utf-16le high surrogate at end", feed.EncodingUTF16LE, cat(le("a"), []byte{0x3D, 0xD8}), "a", 2, "high surrogate U+D83D at end of input"},
		{"utf-16le two high surrogates", feed.EncodingUTF16LE, cat(le("a"), []byte{0x3D, 0xD8, 0x3D, 0xD8, 0x00, 0xDE}), "a", 2, "unpaired high surrogate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(t, tt.input, tt.enc)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrDecode) {
				t.Fatalf("got %q, %v; want a *DecodeError", got, err)
			}
			if got != tt.before || de.Offset != tt.offset || !strings.Contains(de.Reason, tt.reason) {
				t.Errorf("got %q, %v (offset %d); want %q, offset %d, reason with %q", got, err, de.Offset, tt.before, tt.offset, tt.reason)
			}
			if strings.ContainsRune(got, utf8.RuneError) {
				t.Errorf("replacement character in %q", got)
			}
		})
	}
}

func TestDecodingReaderUnknownEncoding(t *testing.T) {
	for _, enc := range []string{"ebcdic", "utf8", "iso-8859-15", " utf-8"} {
		if _, err := DecodingReader(strings.NewReader("x"), enc); !errors.Is(err, ErrEncoding) || !strings.Contains(err.Error(), enc) {
			t.Errorf("DecodingReader(%q) = %v, want ErrEncoding naming it", enc, err)
		}
	}
	for _, enc := range feed.Encodings() {
		if _, err := DecodingReader(strings.NewReader("x"), strings.ToUpper(enc)); err != nil {
			t.Errorf("DecodingReader(%q) = %v", enc, err)
		}
	}
}

func TestDecodingReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, enc := range feed.Encodings() {
		r, err := DecodingReader(io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(boom)), enc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(r); !errors.Is(err, boom) {
			t.Errorf("%s: read error %v, want boom", enc, err)
		}
		r, err = DecodingReader(iotest.ErrReader(boom), enc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(r); !errors.Is(err, boom) {
			t.Errorf("%s: first read error %v, want boom", enc, err)
		}
	}
}

func TestLineEnds(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"lf untouched", "a\nb\rc\n", "a\nb\rc\n"},
		{"crlf untouched", "a\r\nb\rc\r\n", "a\r\nb\rc\r\n"},
		{"lone cr", "a\rb\r\"x\ry\"\r", "a\nb\n\"x\ny\"\n"},
		{"lone cr keeps crlf", "a\rb\r\nc\r", "a\nb\r\nc\n"},
		{"cr at end", "a\r", "a\n"},
		{"no line break", "abc", "abc"},
		{"empty", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader} {
				r, err := csvText(wrap(strings.NewReader(tt.in)), "")
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil || string(got) != tt.want {
					t.Errorf("got %q, %v; want %q", got, err, tt.want)
				}
			}
		})
	}
}

// TestRunLineEnds checks that every line-ending style gives the same rows and the same
// physical line numbers in rejects, and that a quoted line break stays in its field.
func TestRunLineEnds(t *testing.T) {
	def := loadDef(t, "testdata/cases/rejects/feed.yaml")
	const lf = "visit_id,note\nV1,\"two\nlines\"\nV2,ok\n,missing id\nV4,\"x\"\n"
	var want string
	for i, eol := range []string{"\n", "\r\n", "\r"} {
		got, st, err := run(t, def, strings.NewReader(strings.ReplaceAll(lf, "\n", eol)), 10)
		if err != nil || st.Rows != 4 || st.Rejected != 1 || !strings.Contains(got, "line=5") || !strings.Contains(got, `note="two\nlines"`) {
			t.Errorf("%q: %+v, %v\n%s", eol, st, err, got)
		}
		if i == 0 {
			want = got
		} else if got != want {
			t.Errorf("%q line endings give\n%s\nLF gives\n%s", eol, got, want)
		}
	}
}

// TestRunDecodeError checks that a bad byte in the middle of a file stops Run with an
// error naming the file, the line and the byte offset, after the rows before it.
func TestRunDecodeError(t *testing.T) {
	def := loadDef(t, "testdata/cases/rejects/feed.yaml")
	for _, tt := range []struct {
		name, enc string
		input     []byte
		want      []string
	}{
		{"windows-1252", feed.EncodingWindows1252, []byte("visit_id,note\r\nV1,Jos\xe9\r\nV2,M\xfcller\r\nV3,bad \x81 byte\r\nV4,ok\r\n"), []string{"export.zip!visits.csv", "line 4", "byte offset 42", "0x81"}},
		{"utf-16le truncated", feed.EncodingUTF16LE, append(iconv(t, "utf-16le", "visit_id,note\nV1,Zoë\nV2,x"), 'y'), []string{"export.zip!visits.csv", "line 3", "byte offset 50", "odd number of bytes"}},
		{"in the header", feed.EncodingLatin1, []byte("visit_id,n\x85ote\nV1,x\n"), []string{"export.zip!visits.csv header", "byte offset 10", "C1 control"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := *def
			d.Format.Encoding = tt.enc
			_, st, err := run(t, &d, bytes.NewReader(tt.input), 10)
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("Run = %+v, %v; want ErrDecode", st, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestRunLargeUTF16 streams a file far larger than any buffer through Run.
func TestRunLargeUTF16(t *testing.T) {
	def := loadDef(t, "testdata/cases/rejects/feed.yaml")
	d := *def
	d.Format.Encoding = feed.EncodingUTF16
	var text strings.Builder
	text.WriteString("visit_id,note\r\n")
	const rows = 20000
	for i := range rows {
		text.WriteString("V")
		text.WriteString(strings.Repeat("é€𝄞", i%7))
		text.WriteString(",Ñúñez\r\n")
	}
	enc, err := unicode.UTF16(unicode.BigEndian, unicode.UseBOM).NewEncoder().Bytes([]byte(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(&d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := n.Run(context.Background(), iotest.HalfReader(bytes.NewReader(enc)), "big.csv",
		func(arrow.RecordBatch) error { return nil }, func(r Reject) error { t.Fatalf("reject %+v", r); return nil })
	if err != nil || st.Accepted != rows {
		t.Fatalf("Run = %+v, %v", st, err)
	}
}

// FuzzDecodingReader checks, for every encoding, that decoding never substitutes: when it
// succeeds the text is valid UTF-8 (except for UTF-8 passed through) and encodes back to
// exactly the input without its byte order mark; when it fails, the error is a
// *DecodeError whose offset is in the input and the text delivered is the decoding of
// the input before that offset. Chunking of the input must not change either.
func FuzzDecodingReader(f *testing.F) {
	for _, s := range []string{"", "a,b\r\nc\n", "\xEF\xBB\xBFJos\xc3\xa9", "\xFF\xFEa\x00", "\xFE\xFF\x00a\xD8", "Jos\xe9\x81", "\x80\x9f", "a\x00\x00\xDC", "\r\r\n\r"} {
		for i := range feed.Encodings() {
			f.Add([]byte(s), uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		encs := feed.Encodings()
		declared := encs[int(which)%len(encs)]
		got, err := decodeAll(t, data, declared)
		enc, body := declared, data
		switch {
		case bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}):
			enc, body = feed.EncodingUTF8, data[3:]
		case bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
			enc, body = feed.EncodingUTF16BE, data[2:]
		case bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
			enc, body = feed.EncodingUTF16LE, data[2:]
		}
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Encoding != enc || de.Offset < int64(len(data)-len(body)) || de.Offset >= int64(len(data)) {
				t.Fatalf("%s: error %v (%+v) for %d bytes", declared, err, de, len(data))
			}
			prefix, perr := decodeAll(t, data[:de.Offset], declared)
			if perr != nil || prefix != got {
				t.Fatalf("%s: text before the error %q; input before offset %d decodes to %q, %v", declared, got, de.Offset, prefix, perr)
			}
			return
		}
		var e encoding.Encoding
		switch enc {
		case feed.EncodingUTF8:
			if got != string(body) {
				t.Fatalf("utf-8: %q passed through as %q", body, got)
			}
			return
		case feed.EncodingWindows1252:
			e = charmap.Windows1252
		case feed.EncodingLatin1:
			e = charmap.ISO8859_1
		case feed.EncodingUTF16, feed.EncodingUTF16BE:
			e = unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
		case feed.EncodingUTF16LE:
			e = unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("%s: invalid UTF-8 %q", enc, got)
		}
		back, err := e.NewEncoder().Bytes([]byte(got))
		if err != nil || !bytes.Equal(back, body) {
			t.Fatalf("%s: %x decoded to %q, which encodes back to %x, %v", enc, body, got, back, err)
		}
	})
}

// TestEncodedInputs checks that the committed enc_* inputs are what iconv makes from
// testdata/encode-inputs.sh, so no fixture comes from the code under test.
func TestEncodedInputs(t *testing.T) {
	if _, err := exec.LookPath("iconv"); err != nil {
		t.Fatal("iconv is not installed: the encoded fixtures are made by it (Debian package libc-bin)")
	}
	cases, err := filepath.Glob("testdata/cases/enc_*")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no enc_* cases: %v", err)
	}
	out := t.TempDir()
	for _, c := range cases {
		if err := os.Mkdir(filepath.Join(out, filepath.Base(c)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "encode-inputs.sh", out)
	cmd.Dir = "testdata"
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("encode-inputs.sh: %v\n%s", err, b)
	}
	for _, c := range cases {
		name := filepath.Join(filepath.Base(c), "input.csv")
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s: %v (add the case to encode-inputs.sh)", name, err)
		}
		got, err := os.ReadFile(filepath.Join(c, "input.csv"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what encode-inputs.sh makes: rerun it", c)
		}
	}
}

func TestSniffText(t *testing.T) {
	long := "a" + strings.Repeat("é", feed.SniffBytes) // byte SniffBytes is inside an é
	for _, tt := range []struct {
		name, enc string
		raw       []byte
		want      string
	}{
		{"utf-8", "", []byte("MSH|^~\\&|\r"), "MSH|^~\\&|\r"},
		{"bom wins", "windows-1252", []byte("\xEF\xBB\xBFMSH|"), "MSH|"},
		{"utf-16le cut mid character", "utf-16le", []byte("M\x00S\x00H"), "MS"},
		{"windows-1252", "windows-1252", []byte("Jos\xe9|"), "José|"},
		{"undefined byte ends the text", "windows-1252", []byte("ab\x81cd"), "ab"},
		{"long text cut on a rune boundary", "", []byte(long), long[:feed.SniffBytes-1]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SniffText(tt.raw, tt.enc)
			if err != nil || got != tt.want {
				t.Errorf("SniffText = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := SniffText([]byte("x"), "ebcdic"); !errors.Is(err, ErrEncoding) {
		t.Errorf("unknown encoding: %v", err)
	}
}
