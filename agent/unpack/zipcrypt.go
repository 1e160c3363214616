package unpack

// Decryption of password-protected zip entries, in the two schemes facility tools write:
//
//   - Traditional PKWARE encryption ("ZipCrypto"): PKWARE APPNOTE.TXT 6.3.10, section 6.1
//     "Traditional PKWARE Encryption". A 12-byte header precedes the data; its last byte
//     must equal the high byte of the entry's CRC-32, or of its MS-DOS modification time
//     when general purpose flag bit 3 (data descriptor) is set, as Info-ZIP writes it
//     (APPNOTE 6.1.6). The check is one byte, so the CRC-32 of the decrypted entry is
//     what really proves the password.
//   - WinZip AES, AE-1 and AE-2: https://www.winzip.com/en/support/aes-encryption/
//     Compression method 99 with extra field 0x9901 (version, vendor "AE", key strength,
//     real compression method). The data is salt | 2-byte password verifier | AES-CTR
//     ciphertext | 10-byte authentication code. Keys come from PBKDF2-HMAC-SHA1 with 1000
//     iterations: encryption key, HMAC key, then the verifier. The CTR counter is a
//     little-endian integer starting at 1 (Gladman's fileenc.c, which WinZip uses); the
//     code is HMAC-SHA1 over the ciphertext, truncated to 10 bytes. AE-2 stores no CRC
//     (the code replaces it); AE-1 stores one and it is checked too.
//
// Entries are read with (*zip.File).OpenRaw and decrypted, decompressed and verified
// here, so archive/zip never sees an encrypted stream.

import (
	"archive/zip"
	"compress/flate"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

const (
	zipFlagEncrypted      = 0x1
	zipFlagDataDescriptor = 0x8
	zipMethodAES          = 99     // WinZip AES
	zipExtraAES           = 0x9901 // WinZip AES extra field id
	zipCryptoHeaderLen    = 12
	aesVerifierLen        = 2
	aesMACLen             = 10
	aesIterations         = 1000
)

// errBadPassword: a candidate password failed the quick check (ZipCrypto check byte, AES
// verifier). Callers try the next candidate and report ErrWrongPassword when none fits.
var errBadPassword = errors.New("password check failed")

// zipEncryption describes how one entry is encrypted.
type zipEncryption struct {
	aes      bool
	strength byte   // AES: 1, 2, 3 for 128, 192, 256-bit keys
	version  uint16 // AES: 1 (AE-1) or 2 (AE-2)
	method   uint16 // compression method of the plaintext
	check    byte   // ZipCrypto: expected last byte of the decrypted header
	checkCRC bool   // whether the stored CRC-32 is meaningful (not AE-2)
}

// parseZipEncryption reads the encryption scheme of an entry from its header.
func parseZipEncryption(h *zip.FileHeader) (zipEncryption, error) {
	if h.Method != zipMethodAES {
		e := zipEncryption{method: h.Method, checkCRC: true, check: byte(h.CRC32 >> 24)}
		if h.Flags&zipFlagDataDescriptor != 0 {
			e.check = byte(h.ModifiedTime >> 8) //nolint:staticcheck // the DOS time is what the check byte is made from
		}
		return e, nil
	}
	// Walk the extra fields (APPNOTE 4.5: 2-byte id, 2-byte size, data) for 0x9901.
	x := h.Extra
	for len(x) >= 4 {
		id, n := binary.LittleEndian.Uint16(x), int(binary.LittleEndian.Uint16(x[2:]))
		x = x[4:]
		if n > len(x) {
			break
		}
		if id == zipExtraAES {
			if n < 7 {
				return zipEncryption{}, fmt.Errorf("AES extra field of %d bytes: %w", n, ErrCorrupt)
			}
			d := x[:n]
			e := zipEncryption{aes: true, version: binary.LittleEndian.Uint16(d), strength: d[4], method: binary.LittleEndian.Uint16(d[5:])}
			if string(d[2:4]) != "AE" {
				return zipEncryption{}, fmt.Errorf("AES extra field vendor %q: %w", d[2:4], ErrUnsupported)
			}
			if e.version != 1 && e.version != 2 {
				return zipEncryption{}, fmt.Errorf("AES version AE-%d: %w", e.version, ErrUnsupported)
			}
			if e.strength < 1 || e.strength > 3 {
				return zipEncryption{}, fmt.Errorf("AES key strength %d: %w", e.strength, ErrUnsupported)
			}
			e.checkCRC = e.version == 1
			return e, nil
		}
		x = x[n:]
	}
	return zipEncryption{}, fmt.Errorf("AES entry without its 0x9901 extra field: %w", ErrCorrupt)
}

// decrypter returns the plaintext stream of the raw entry data (size bytes), or
// errBadPassword when the quick password check fails.
func (e zipEncryption) decrypter(raw io.Reader, size int64, password string) (io.Reader, error) {
	if e.aes {
		return newAESReader(raw, size, password, e.strength)
	}
	return newZipCryptoReader(raw, size, password, e.check)
}

// zipCryptoReader decrypts traditional PKWARE encryption (APPNOTE 6.1.5-6.1.7).
type zipCryptoReader struct {
	r          io.Reader
	k0, k1, k2 uint32
}

func newZipCryptoReader(r io.Reader, size int64, password string, check byte) (*zipCryptoReader, error) {
	if size < zipCryptoHeaderLen {
		return nil, fmt.Errorf("encrypted data of %d bytes is shorter than its header: %w", size, ErrCorrupt)
	}
	z := &zipCryptoReader{r: io.LimitReader(r, size), k0: 0x12345678, k1: 0x23456789, k2: 0x34567890}
	for i := 0; i < len(password); i++ {
		z.update(password[i])
	}
	var hdr [zipCryptoHeaderLen]byte
	if _, err := io.ReadFull(z.r, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading encryption header: %w: %w", ErrCorrupt, err)
	}
	z.decrypt(hdr[:])
	if hdr[zipCryptoHeaderLen-1] != check {
		return nil, errBadPassword
	}
	return z, nil
}

// update is update_keys of APPNOTE 6.1.5; crc32 there is one step of the IEEE table.
func (z *zipCryptoReader) update(c byte) {
	z.k0 = crc32.IEEETable[byte(z.k0)^c] ^ z.k0>>8
	z.k1 = (z.k1+z.k0&0xff)*134775813 + 1
	z.k2 = crc32.IEEETable[byte(z.k2)^byte(z.k1>>24)] ^ z.k2>>8
}

func (z *zipCryptoReader) decrypt(p []byte) {
	for i, c := range p {
		t := uint16(z.k2) | 2
		c ^= byte(uint32(t) * uint32(t^1) >> 8)
		z.update(c)
		p[i] = c
	}
}

func (z *zipCryptoReader) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	z.decrypt(p[:n])
	return n, err
}

// aesReader decrypts a WinZip AES entry and checks its authentication code at the end.
type aesReader struct {
	r     io.Reader // the raw data after salt and verifier
	left  int64     // ciphertext bytes not yet read
	block cipher.Block
	mac   hash.Hash
	ctr   uint64   // little-endian counter in the first 8 bytes of the nonce
	ks    [16]byte // keystream block
	pos   int      // next keystream byte; 16: block used up
	err   error    // sticky
}

func newAESReader(r io.Reader, size int64, password string, strength byte) (*aesReader, error) {
	keyLen := 8 * (int(strength) + 1) // 16, 24, 32
	saltLen := keyLen / 2
	data := size - int64(saltLen) - aesVerifierLen - aesMACLen
	if data < 0 {
		return nil, fmt.Errorf("AES data of %d bytes is shorter than salt, verifier and code: %w", size, ErrCorrupt)
	}
	head := make([]byte, saltLen+aesVerifierLen)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, fmt.Errorf("reading AES salt: %w: %w", ErrCorrupt, err)
	}
	dk, err := pbkdf2.Key(sha1.New, password, head[:saltLen], aesIterations, 2*keyLen+aesVerifierLen)
	if err != nil {
		return nil, fmt.Errorf("deriving AES key: %w", err)
	}
	if subtle.ConstantTimeCompare(dk[2*keyLen:], head[saltLen:]) != 1 {
		return nil, errBadPassword
	}
	block, err := aes.NewCipher(dk[:keyLen])
	if err != nil {
		return nil, err
	}
	return &aesReader{r: r, left: data, block: block, mac: hmac.New(sha1.New, dk[keyLen:2*keyLen]), pos: 16}, nil
}

func (a *aesReader) Read(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	if a.left == 0 {
		a.err = a.verify()
		return 0, a.err
	}
	if int64(len(p)) > a.left {
		p = p[:a.left]
	}
	n, err := a.r.Read(p)
	a.left -= int64(n)
	a.mac.Write(p[:n]) // the code covers the ciphertext
	for q := p[:n]; len(q) > 0; {
		if a.pos == len(a.ks) {
			a.ctr++
			var nonce [16]byte
			binary.LittleEndian.PutUint64(nonce[:], a.ctr)
			a.block.Encrypt(a.ks[:], nonce[:])
			a.pos = 0
		}
		m := subtle.XORBytes(q, q, a.ks[a.pos:])
		q, a.pos = q[m:], a.pos+m
	}
	switch {
	case err == io.EOF && a.left > 0:
		a.err = fmt.Errorf("AES data ends %d bytes early: %w", a.left, ErrCorrupt)
		return n, a.err
	case err != nil && err != io.EOF:
		a.err = err
		return n, err
	}
	return n, nil
}

// verify reads the authentication code after the ciphertext and compares it.
func (a *aesReader) verify() error {
	var code [aesMACLen]byte
	if _, err := io.ReadFull(a.r, code[:]); err != nil {
		return fmt.Errorf("reading AES authentication code: %w: %w", ErrCorrupt, err)
	}
	if !hmac.Equal(a.mac.Sum(nil)[:aesMACLen], code[:]) {
		return fmt.Errorf("AES authentication code mismatch: %w", ErrCorrupt)
	}
	return io.EOF
}

// openEncrypted returns the decrypted, decompressed content of the encrypted entry f of
// the archive named base, verified when read to io.EOF (CRC-32, AES code, size). It tries
// every candidate password from Limits.Passwords.
func (w *walker) openEncrypted(base, name string, f *zip.File) (io.Reader, error) {
	enc, err := parseZipEncryption(&f.FileHeader)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if enc.method != zip.Store && enc.method != zip.Deflate {
		return nil, fmt.Errorf("%s: compression method %d inside encryption: %w", name, enc.method, ErrUnsupported)
	}
	var candidates []string
	if w.lim.Passwords != nil {
		if candidates, err = w.lim.Passwords(base, baseName(f.Name)); err != nil {
			return nil, err // not a property of the file: returned as is
		}
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrEncrypted)
	}
	var fits []string
	var first io.Reader
	for _, pw := range candidates {
		r, err := w.openEntry(name, f, enc, pw)
		if errors.Is(err, errBadPassword) {
			continue
		}
		if err != nil {
			return nil, w.openError(name, err)
		}
		if first == nil {
			first = r
		}
		fits = append(fits, pw)
	}
	switch len(fits) {
	case 0:
		return nil, fmt.Errorf("%s: none of %d candidate passwords fits: %w", name, len(candidates), ErrWrongPassword)
	case 1:
		return first, nil
	}
	// Several candidates passed the short check (1 byte for ZipCrypto, 2 for AES): read
	// the entry once per fit and take the first that verifies. A verifyReader stops at
	// the declared size, which the caller has checked against Limits.
	for _, pw := range fits {
		if err := w.ctx.Err(); err != nil {
			return nil, err
		}
		r, err := w.openEntry(name, f, enc, pw)
		if err != nil {
			continue
		}
		if _, err := io.Copy(io.Discard, r); err == nil {
			return w.openEntry(name, f, enc, pw)
		}
	}
	return first, nil // fails its checks when read (ErrCorrupt, or ErrWrongPassword)
}

// openEntry opens f with one password: errBadPassword when the short check fails.
func (w *walker) openEntry(name string, f *zip.File, enc zipEncryption, password string) (io.Reader, error) {
	raw, err := f.OpenRaw()
	if err != nil {
		return nil, err
	}
	return newEncryptedReader(name, raw, int64(f.CompressedSize64), f.UncompressedSize64, f.CRC32, enc, password)
}

// newEncryptedReader decrypts and decompresses the raw data of an entry (csize bytes,
// usize when decompressed, with CRC-32 crc) and verifies it when read to io.EOF. It
// returns errBadPassword when the password fails the short check.
func newEncryptedReader(name string, raw io.Reader, csize int64, usize uint64, crc uint32, enc zipEncryption, password string) (io.Reader, error) {
	plain, err := enc.decrypter(raw, csize, password)
	if err != nil {
		return nil, err
	}
	v := &verifyReader{name: name, plain: plain, r: plain, size: usize, crc: crc32.NewIEEE(), wantCRC: crc, checkCRC: enc.checkCRC}
	switch enc.method {
	case zip.Store:
	case zip.Deflate:
		v.r = flate.NewReader(plain)
	default:
		return nil, fmt.Errorf("compression method %d inside encryption: %w", enc.method, ErrUnsupported)
	}
	return v, nil
}

// verifyReader checks a decrypted entry's size and CRC-32 at its end, and drains the
// decrypted stream past what the decompressor needed so the AES code is checked too.
type verifyReader struct {
	name     string    // for errors
	plain    io.Reader // decrypted, compressed
	r        io.Reader // decompressed
	size     uint64    // declared uncompressed size
	n        uint64
	crc      hash.Hash32
	wantCRC  uint32
	checkCRC bool
	err      error // sticky
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.crc.Write(p[:n])
	v.n += uint64(n)
	if v.n > v.size {
		v.err = v.fail(fmt.Errorf("entry longer than its declared %d bytes: %w", v.size, ErrCorrupt))
		return n, v.err
	}
	if err == io.EOF {
		err = v.finish()
	}
	if err != nil && err != io.EOF {
		err = v.fail(err)
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

// fail names a decoding failure of decrypted data. The password checks are short (1 byte
// for ZipCrypto, 2 for AES), so 1 wrong password in 256 (65536) passes them and then
// fails here like corrupt data: the error wraps ErrWrongPassword as well as ErrCorrupt.
func (v *verifyReader) fail(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return fmt.Errorf("%s: %w (or %w)", v.name, err, ErrWrongPassword)
}

// named prefixes an error that carries a sentinel with the entry's name (classify would
// pass it through unnamed); others are left for the guard to name and classify.
func named(name string, err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return err
}

// openError names and classifies an error from opening an entry.
func (w *walker) openError(name string, err error) error {
	if e := named(name, err); e != err {
		return e
	}
	return w.classify(name, err)
}

func (v *verifyReader) finish() error {
	if _, err := io.Copy(io.Discard, v.plain); err != nil {
		return err
	}
	if v.n != v.size {
		return fmt.Errorf("entry has %d bytes, declares %d: %w", v.n, v.size, ErrCorrupt)
	}
	if v.checkCRC && v.crc.Sum32() != v.wantCRC {
		return fmt.Errorf("CRC-32 mismatch after decryption: %w", ErrCorrupt)
	}
	return io.EOF
}
