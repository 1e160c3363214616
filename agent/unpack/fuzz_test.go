package unpack

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var fuzzNames = [...]string{"f.zip", "f.csv.gz", "f.tar.gz", "f.tar", "f.csv"}

// FuzzUnpack feeds arbitrary bytes to Walk under each archive name: it must never panic
// or hang, and every failure must carry a sentinel so the file can be quarantined.
func FuzzUnpack(f *testing.F) {
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("a.csv")
	io.WriteString(w, csvA)
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "s.csv", Method: zip.Store})
	io.WriteString(w, csvB)
	zw.Close()
	f.Add(zbuf.Bytes(), uint8(0))

	var gbuf bytes.Buffer
	gw := gzip.NewWriter(&gbuf)
	io.WriteString(gw, csvA)
	gw.Close()
	f.Add(gbuf.Bytes(), uint8(1))

	dir := f.TempDir()
	writeFile(f, filepath.Join(dir, "t.tar.gz"), "")
	tarGzWith(f, filepath.Join(dir, "t.tar.gz"), "a.csv", "d/b.csv")
	tgz, _ := os.ReadFile(filepath.Join(dir, "t.tar.gz"))
	f.Add(tgz, uint8(2))
	if zr, err := gzip.NewReader(bytes.NewReader(tgz)); err == nil {
		tarBytes, _ := io.ReadAll(zr)
		f.Add(tarBytes, uint8(3))
	}
	// A zip holding a gzip, so nesting is explored too.
	var nbuf bytes.Buffer
	nw := zip.NewWriter(&nbuf)
	w, _ = nw.Create("in.csv.gz")
	w.Write(gbuf.Bytes())
	nw.Close()
	f.Add(nbuf.Bytes(), uint8(0))
	f.Add([]byte(csvA), uint8(4))

	lim := Limits{MaxEntrySize: 1 << 20, MaxArchiveSize: 4 << 20, RatioGrace: 64 << 10, MaxEntries: 64, MemStage: 1 << 10, Passwords: passwords("secret")}
	f.Fuzz(func(t *testing.T, data []byte, k uint8) {
		dir := t.TempDir()
		p := filepath.Join(dir, fuzzNames[int(k)%len(fuzzNames)])
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l := lim
		l.TempDir = t.TempDir()
		err := Walk(context.Background(), p, l, func(e Entry) error {
			if e.Skip != "" {
				return nil
			}
			if _, err := io.Copy(io.Discard, e.Reader); err != nil {
				return fmt.Errorf("reading %s: %w", e.Name, err)
			}
			return nil
		})
		if err == nil {
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("unclassified error: %v", err)
	})
}

// FuzzDecryptZip feeds arbitrary bytes to the decryption readers (ZipCrypto and WinZip
// AES, stored or deflated inside) and, as whole archives, to Walk with a password. They
// must never panic or hang; every failure must be a failed password check or carry a
// sentinel; and data that reads to the end without error must have passed its checks.
// Seeds are the raw entries of archives that zip and 7z encrypt with "secret".
func FuzzDecryptZip(f *testing.F) {
	dir := f.TempDir()
	writeFile(f, filepath.Join(dir, "a.csv"), csvA)
	writeFile(f, filepath.Join(dir, "big.csv"), strings.Repeat(csvB, 400))
	for i, script := range []string{
		"zip -q0 -P secret z0.zip a.csv",
		"zip -q -P secret z8.zip big.csv",
		"7z a -tzip -bd -bso0 -mx0 -psecret -mem=ZipCrypto c0.zip a.csv",
		"7z a -tzip -bd -bso0 -psecret -mem=AES128 a1.zip big.csv",
		"7z a -tzip -bd -bso0 -psecret -mem=AES192 a2.zip a.csv",
		"7z a -tzip -bd -bso0 -mx0 -psecret -mem=AES256 a3.zip a.csv",
		"7z a -tzip -bd -bso0 -psecret -mem=AES256 a4.zip big.csv a.csv",
	} {
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = dir
		if err := cmd.Run(); err != nil {
			continue // archiver missing: the fuzzer still runs from nothing
		}
		var name string
		for _, w := range strings.Fields(script) {
			if strings.HasSuffix(w, ".zip") {
				name = w
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(255), uint8(0), uint32(0), uint32(0)) // the whole archive through Walk
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatalf("seed %d: %v", i, err)
		}
		zf := zr.File[0]
		enc, err := parseZipEncryption(&zf.FileHeader)
		if err != nil {
			f.Fatalf("seed %d: %v", i, err)
		}
		raw, _ := zf.OpenRaw()
		data, _ := io.ReadAll(raw)
		kind := uint8(0)
		if enc.aes {
			kind = 2 * enc.strength
		}
		if enc.method == zip.Deflate {
			kind |= 0x80
		}
		// A seed that does not decrypt would leave the fuzzer outside the readers.
		r, err := newEncryptedReader("seed", bytes.NewReader(data), int64(len(data)), zf.UncompressedSize64, zf.CRC32, enc, "secret")
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if err != nil {
			f.Fatalf("seed %d does not decrypt: %v", i, err)
		}
		f.Add(data, kind, enc.check, uint32(zf.UncompressedSize64), zf.CRC32)
	}
	f.Fuzz(func(t *testing.T, data []byte, kind, check uint8, usize, crc uint32) {
		if kind == 255 {
			p := filepath.Join(t.TempDir(), "f.zip")
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			lim := Limits{MaxEntrySize: 1 << 20, MaxArchiveSize: 4 << 20, RatioGrace: 64 << 10, MaxEntries: 64, MemStage: 1 << 10, TempDir: t.TempDir(), Passwords: passwords("wrong", "secret")}
			err := Walk(context.Background(), p, lim, func(e Entry) error {
				if e.Skip != "" {
					return nil
				}
				_, err := io.Copy(io.Discard, e.Reader)
				return err
			})
			if err != nil && !classified(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		// kind: bit 7 deflate; low bits 0 or 1 ZipCrypto with the given check byte,
		// 2/4/6 AES-128/192/256 as AE-2, 3/5/7 the same as AE-1.
		enc := zipEncryption{method: zip.Store, checkCRC: true, check: check}
		if kind&0x80 != 0 {
			enc.method = zip.Deflate
		}
		if k := kind & 0x7f % 8; k >= 2 {
			enc.aes, enc.strength, enc.version = true, k/2, uint16(2-k%2)
			enc.checkCRC = enc.version == 1
		}
		r, err := newEncryptedReader("f.zip!x", bytes.NewReader(data), int64(len(data)), uint64(usize), crc, enc, "secret")
		if errors.Is(err, errBadPassword) {
			return
		}
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified error opening: %v", err)
			}
			return
		}
		out, err := io.ReadAll(io.LimitReader(r, 1<<22))
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified error reading: %v", err)
			}
			return
		}
		if uint64(len(out)) != uint64(usize) {
			t.Fatalf("read %d bytes without error, declared %d", len(out), usize)
		}
		if enc.checkCRC && crc32.ChecksumIEEE(out) != crc {
			t.Fatalf("read to the end without error but the CRC-32 differs")
		}
	})
}

func classified(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
