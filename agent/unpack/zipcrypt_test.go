package unpack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// passwords returns a Limits.Passwords offering the given candidates for every entry.
func passwords(pw ...string) func(string, string) ([]string, error) {
	return func(string, string) ([]string, error) { return pw, nil }
}

// Encrypted archives are made by the archivers facilities use: Info-ZIP's `zip -P`
// (ZipCrypto with a data descriptor, so the check byte comes from the time), 7-Zip's
// ZipCrypto (no descriptor: the check byte comes from the CRC) and 7-Zip's WinZip AES
// (which writes AE-2).
func TestWalkEncrypted(t *testing.T) {
	all := got{"e.zip!a.csv": csvA, "e.zip!data/b.csv": csvB, "e.zip!data/sub/a.csv": csvA}
	tests := []struct {
		name   string
		script string // builds e.zip (or the named source) in the fixture dir
		source string
		pw     []string
		want   got
	}{
		{"zipcrypto info-zip", "zip -qr -P secret e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"zipcrypto info-zip stored", "zip -qr0 -P secret e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"zipcrypto info-zip streamed", "zip -qr -P secret - a.csv data > e.zip", "e.zip", []string{"secret"}, all},
		{"zipcrypto 7z", "7z a -tzip -bd -bso0 -psecret -mem=ZipCrypto e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"aes256", "7z a -tzip -bd -bso0 -psecret -mem=AES256 e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"aes192", "7z a -tzip -bd -bso0 -psecret -mem=AES192 e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"aes128", "7z a -tzip -bd -bso0 -psecret -mem=AES128 e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"aes256 stored", "7z a -tzip -bd -bso0 -mx0 -psecret -mem=AES256 e.zip a.csv data", "e.zip", []string{"secret"}, all},
		{"aes256 larger than a buffer", "seq 1 200000 > big.csv; 7z a -tzip -bd -bso0 -psecret -mem=AES256 e.zip big.csv; rm big.csv; seq 1 200000 > want", "e.zip", []string{"secret"}, nil},
		{"zipcrypto larger than a buffer", "seq 1 200000 > big.csv; zip -q -P secret e.zip big.csv; rm big.csv; seq 1 200000 > want", "e.zip", []string{"secret"}, nil},
		{"second candidate fits", "7z a -tzip -bd -bso0 -psecret -mem=AES256 e.zip a.csv data", "e.zip", []string{"wrong", "", "secret"}, all},
		{"second candidate fits zipcrypto", "zip -qr -P secret e.zip a.csv data", "e.zip", []string{"wrong", "secret"}, all},
		{"non-ASCII password", "zip -q -P 'grüße-✓' e.zip a.csv", "e.zip", []string{"grüße-✓"}, got{"e.zip!a.csv": csvA}},
		{"mixed encrypted and plain", "zip -q -P secret e.zip a.csv; zip -qr e.zip data", "e.zip", []string{"secret"}, all},
		{"encrypted zip nested in plain zip", "zip -qr -P secret in.zip a.csv; zip -q o.zip in.zip", "o.zip", []string{"secret"}, got{"o.zip!in.zip!a.csv": csvA}},
		{"encrypted gzip in encrypted zip", "gzip -k a.csv; 7z a -tzip -bd -bso0 -psecret -mem=AES128 e.zip a.csv.gz", "e.zip", []string{"secret"}, got{"e.zip!a.csv.gz!a.csv": csvA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixtures(t)
			sh(t, dir, tt.script)
			want := tt.want
			if want == nil {
				b, err := os.ReadFile(filepath.Join(dir, "want"))
				if err != nil {
					t.Fatal(err)
				}
				want = got{"e.zip!big.csv": string(b)}
			}
			g, err := collect(t, filepath.Join(dir, tt.source), Limits{TempDir: t.TempDir(), Passwords: passwords(tt.pw...)})
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			if !equal(g, want) {
				t.Errorf("entries:\n got %.200q\nwant %.200q", g, want)
			}
		})
	}
}

func TestWalkEncryptedPasswordsAsked(t *testing.T) {
	dir := fixtures(t)
	sh(t, dir, "zip -q -P secret in.zip data/b.csv; zip -q o.zip in.zip a.csv")
	var asked [][2]string
	_, err := collect(t, filepath.Join(dir, "o.zip"), Limits{TempDir: t.TempDir(), Passwords: func(archive, entry string) ([]string, error) {
		asked = append(asked, [2]string{archive, entry})
		return []string{"secret"}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Only the encrypted entry asks, with the innermost archive's base name.
	if want := [][2]string{{"in.zip", "b.csv"}}; !slices.Equal(asked, want) {
		t.Errorf("Passwords asked for %q, want %q", asked, want)
	}

	failing := errors.New("secret store unreadable")
	_, err = collect(t, filepath.Join(dir, "o.zip"), Limits{TempDir: t.TempDir(), Passwords: func(string, string) ([]string, error) { return nil, failing }})
	if err != failing {
		t.Errorf("Walk = %v, want the Passwords error as is", err)
	}
}

func TestWalkEncryptedRejects(t *testing.T) {
	type build func(t testing.TB, dir string) string
	script := func(s, src string) build {
		return func(t testing.TB, dir string) string { sh(t, dir, s); return filepath.Join(dir, src) }
	}
	mangle := func(s, src string, f func(t testing.TB, b []byte) []byte) build {
		return func(t testing.TB, dir string) string {
			sh(t, dir, s)
			p := filepath.Join(dir, src)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, string(f(t, b)))
			return p
		}
	}
	// flipData flips the byte at off within the first entry's data (negative: from its end).
	flipData := func(off int) func(testing.TB, []byte) []byte {
		return func(t testing.TB, b []byte) []byte {
			start, end := firstEntryData(t, b)
			if off < 0 {
				off += end - start
			}
			b[start+off] ^= 0x55
			return b
		}
	}
	const aes = "7z a -tzip -bd -bso0 -psecret -mem=AES256 "
	const zeros = "dd if=/dev/zero of=zero.csv bs=1M count=24 status=none; "
	tests := []struct {
		name  string
		build build
		pw    []string
		lim   Limits
		want  error
		where string // must appear in the error
	}{
		{"zipcrypto no password", script("zip -q -P secret e.zip a.csv", "e.zip"), nil, Limits{}, ErrEncrypted, "e.zip!a.csv"},
		{"aes no password", script(aes+"e.zip a.csv", "e.zip"), nil, Limits{}, ErrEncrypted, "e.zip!a.csv"},
		{"zipcrypto wrong password", script("zip -q -P secret e.zip a.csv", "e.zip"), []string{"Secret"}, Limits{}, ErrWrongPassword, "e.zip!a.csv"},
		{"zipcrypto 7z wrong password", script("7z a -tzip -bd -bso0 -psecret -mem=ZipCrypto e.zip a.csv", "e.zip"), []string{"Secret"}, Limits{}, ErrWrongPassword, "e.zip!a.csv"},
		{"aes wrong passwords", script(aes+"e.zip a.csv", "e.zip"), []string{"Secret", "secret "}, Limits{}, ErrWrongPassword, "e.zip!a.csv"},
		{"aes128 wrong password", script("7z a -tzip -bd -bso0 -psecret -mem=AES128 e.zip a.csv", "e.zip"), []string{"x"}, Limits{}, ErrWrongPassword, "e.zip!a.csv"},
		{"nested wrong password", script("zip -q -P secret in.zip a.csv; zip -q o.zip in.zip", "o.zip"), []string{"nope"}, Limits{}, ErrWrongPassword, "o.zip!in.zip!a.csv"},
		// Corruption inside the encrypted data: the AES code or the CRC-32 catches it.
		{"aes ciphertext altered", mangle(aes+"-mx0 e.zip a.csv", "e.zip", flipData(16+2+3)), []string{"secret"}, Limits{}, ErrCorrupt, "authentication code"},
		{"aes code altered", mangle(aes+"-mx0 e.zip a.csv", "e.zip", flipData(-1)), []string{"secret"}, Limits{}, ErrCorrupt, "authentication code"},
		{"aes deflated ciphertext altered", mangle(aes+"e.zip a.csv", "e.zip", flipData(16+2+5)), []string{"secret"}, Limits{}, ErrCorrupt, "e.zip!a.csv"},
		{"zipcrypto data altered", mangle("zip -q0 -P secret e.zip a.csv", "e.zip", flipData(12+3)), []string{"secret"}, Limits{}, ErrCorrupt, "CRC-32"},
		{"zipcrypto 7z data altered", mangle("7z a -tzip -bd -bso0 -mx0 -psecret -mem=ZipCrypto e.zip a.csv", "e.zip", flipData(12+3)), []string{"secret"}, Limits{}, ErrCorrupt, "CRC-32"},
		{"aes truncated archive", mangle(aes+"e.zip a.csv", "e.zip", func(_ testing.TB, b []byte) []byte { return b[:len(b)/2] }), []string{"secret"}, Limits{}, ErrCorrupt, "e.zip"},
		{"aes entry cut short", mangle(aes+"-mx0 e.zip a.csv", "e.zip", shortenFirstEntry(5)), []string{"secret"}, Limits{}, ErrCorrupt, "e.zip!a.csv"},
		{"zipcrypto entry cut short", mangle("zip -q0 -P secret e.zip a.csv", "e.zip", shortenFirstEntry(5)), []string{"secret"}, Limits{}, ErrCorrupt, "e.zip!a.csv"},
		// Limits hold for decrypted output: declared sizes, and streamed ratios of what is
		// inside (a gzip bomb stored in an encrypted zip).
		{"zipcrypto bomb", script(zeros+"zip -q -P secret bomb.zip zero.csv", "bomb.zip"), []string{"secret"}, Limits{}, ErrBomb, "bomb.zip!zero.csv"},
		{"aes bomb", script(zeros+aes+"bomb.zip zero.csv", "bomb.zip"), []string{"secret"}, Limits{}, ErrBomb, "bomb.zip!zero.csv"},
		{"aes bomb without password", script(zeros+aes+"bomb.zip zero.csv", "bomb.zip"), nil, Limits{}, ErrBomb, "bomb.zip!zero.csv"},
		{"gzip bomb in aes zip", script(zeros+"gzip zero.csv; "+aes+"-mx0 bomb.zip zero.csv.gz", "bomb.zip"), []string{"secret"}, Limits{}, ErrBomb, "bomb.zip!zero.csv.gz!zero.csv"},
		{"gzip bomb in zipcrypto zip", script(zeros+"gzip zero.csv; zip -q0 -P secret bomb.zip zero.csv.gz", "bomb.zip"), []string{"secret"}, Limits{}, ErrBomb, "bomb.zip!zero.csv.gz!zero.csv"},
		{"aes entry size limit", script(aes+"e.zip a.csv", "e.zip"), []string{"secret"}, Limits{MaxEntrySize: 10}, ErrBomb, "e.zip!a.csv"},
		{"aes archive size limit", script(aes+"e.zip a.csv data", "e.zip"), []string{"secret"}, Limits{MaxArchiveSize: 40}, ErrBomb, "e.zip!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixtures(t)
			src := tt.build(t, dir)
			tt.lim.TempDir = t.TempDir()
			tt.lim.Passwords = passwords(tt.pw...)
			_, err := collect(t, src, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Walk error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.where) {
				t.Errorf("error %q does not name %q", err, tt.where)
			}
			for _, pw := range tt.pw {
				if pw != "" && strings.Contains(err.Error(), pw) {
					t.Errorf("error %q shows the password %q", err, pw)
				}
			}
		})
	}
}

// TestWalkAE1 checks AE-1 entries, which store the CRC-32 as well as the code. 7-Zip
// writes AE-2 only, so its output is turned into AE-1 by setting the version in the
// 0x9901 field and the plaintext's CRC-32 in both headers, as an AE-1 writer would.
func TestWalkAE1(t *testing.T) {
	for _, tc := range []struct {
		name string
		crc  func(uint32) uint32
		want error
	}{
		{"right crc", func(c uint32) uint32 { return c }, nil},
		{"wrong crc", func(c uint32) uint32 { return c ^ 1 }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fixtures(t)
			sh(t, dir, "7z a -tzip -bd -bso0 -psecret -mem=AES256 e.zip a.csv")
			p := filepath.Join(dir, "e.zip")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			ae2 := []byte{0x01, 0x99, 0x07, 0x00, 0x02, 0x00, 'A', 'E'}
			if bytes.Count(b, ae2) != 2 {
				t.Fatalf("want the AE-2 field in the local and central header, found %d", bytes.Count(b, ae2))
			}
			b = bytes.ReplaceAll(b, ae2, []byte{0x01, 0x99, 0x07, 0x00, 0x01, 0x00, 'A', 'E'})
			crc := tc.crc(crc32.ChecksumIEEE([]byte(csvA)))
			binary.LittleEndian.PutUint32(b[14:], crc) // local header
			cd := bytes.Index(b, []byte("PK\x01\x02"))
			binary.LittleEndian.PutUint32(b[cd+16:], crc) // central directory header
			writeFile(t, p, string(b))
			g, err := collect(t, p, Limits{TempDir: t.TempDir(), Passwords: passwords("secret")})
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("Walk = %v, want %v", err, tc.want)
			}
			if err == nil && g["e.zip!a.csv"] != csvA {
				t.Fatalf("content %q", g)
			}
			if err != nil && !strings.Contains(err.Error(), "CRC-32") {
				t.Errorf("error %q does not say CRC-32", err)
			}
		})
	}
}

// firstEntryData returns where the first entry's data starts and ends in a zip whose
// first local header is at offset 0 and has no data descriptor-only sizes.
func firstEntryData(t testing.TB, b []byte) (int, int) {
	t.Helper()
	if len(b) < 30 || string(b[:4]) != "PK\x03\x04" {
		t.Fatal("no local header at 0")
	}
	n, x := int(binary.LittleEndian.Uint16(b[26:])), int(binary.LittleEndian.Uint16(b[28:]))
	start := 30 + n + x
	// Sizes from the central directory: the local ones are zero with a data descriptor.
	cd := bytes.Index(b, []byte("PK\x01\x02"))
	if cd < 0 {
		t.Fatal("no central directory")
	}
	return start, start + int(binary.LittleEndian.Uint32(b[cd+20:]))
}

// shortenFirstEntry declares the first entry's compressed size k bytes smaller in the
// central directory, as if its data had been cut short.
func shortenFirstEntry(k uint32) func(testing.TB, []byte) []byte {
	return func(t testing.TB, b []byte) []byte {
		cd := bytes.Index(b, []byte("PK\x01\x02"))
		if cd < 0 {
			t.Fatal("no central directory")
		}
		cs := binary.LittleEndian.Uint32(b[cd+20:])
		binary.LittleEndian.PutUint32(b[cd+20:], cs-k)
		return b
	}
}

// BenchmarkWalkEncrypted measures Walk over an 8 MB CSV-like entry, plain and encrypted:
// go test ./agent/unpack/ -run XXX -bench WalkEncrypted
func BenchmarkWalkEncrypted(b *testing.B) {
	dir := b.TempDir()
	sh(b, dir, "seq 1 1100000 | sed 's/$/,P,12.5/' > big.csv")
	for _, tc := range []struct{ name, script string }{
		{"plain", "zip -q e.zip big.csv"},
		{"zipcrypto", "zip -q -P secret e.zip big.csv"},
		{"aes256", "7z a -tzip -bd -bso0 -psecret -mem=AES256 e.zip big.csv"},
		{"aes256 stored", "7z a -tzip -bd -bso0 -mx0 -psecret -mem=AES256 e.zip big.csv"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sh(b, dir, "rm -f e.zip; "+tc.script)
			st, err := os.Stat(filepath.Join(dir, "big.csv"))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(st.Size())
			lim := Limits{TempDir: b.TempDir(), Passwords: passwords("secret")}
			for b.Loop() {
				err := Walk(context.Background(), filepath.Join(dir, "e.zip"), lim, func(e Entry) error {
					_, err := io.Copy(io.Discard, e.Reader)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
