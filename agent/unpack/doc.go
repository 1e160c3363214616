// Package unpack turns one facility file into the entries to normalize: a plain file is
// one entry; gzip, zip, tar and tar.gz archives yield their regular files, one nested
// archive level deep, streamed and guarded against bombs, traversal names and corruption.
// Encrypted zip entries (ZipCrypto, WinZip AES AE-1/AE-2) are decrypted with candidate
// passwords the caller supplies (Limits.Passwords) and verified (CRC-32, AES code).
//
// It only reads the source file (never writes, locks or moves it) and holds no entry in
// memory whole; it does not decide which feed an entry belongs to, where passwords come
// from, or remember what was already processed (the caller's state store dedups by the
// hash from HashFile).
package unpack
