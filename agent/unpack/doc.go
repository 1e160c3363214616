// Package unpack turns one facility file into the entries to normalize: a plain file is
// one entry; gzip, zip, tar and tar.gz archives yield their regular files, one nested
// archive level deep, streamed and guarded against bombs, traversal names and corruption.
//
// It only reads the source file (never writes, locks or moves it) and holds no entry in
// memory whole; it does not decide which feed an entry belongs to or remember what was
// already processed (the caller's state store dedups by the hash from HashFile).
package unpack
