// Package watch finds complete files in facility export folders: fsnotify events plus a
// periodic full rescan (network shares drop events), emitting a file once its size and
// modification time have been stable for a quiet period.
//
// It only stats and lists (never opens, locks, moves or modifies facility files) and it
// does not remember across restarts: the same file may be emitted again, and the consumer
// dedups by content hash in its state store.
package watch
