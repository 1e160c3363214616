//go:build windows

package durable

// syncDir is a no-op on Windows: directories cannot be opened for FlushFileBuffers, and
// NTFS journals the rename itself (MoveFileEx is metadata-durable once it returns).
func syncDir(dir string) error { return nil }
