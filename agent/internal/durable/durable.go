package durable

import (
	"fmt"
	"os"
)

// WriteFile writes data to path (mode 0600: the agent's files hold patient data) and
// fsyncs it before returning.
func WriteFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SyncDirs makes renames and unlinks in each directory durable.
func SyncDirs(dirs ...string) error {
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("fsyncing directory %s: %w", d, err)
		}
	}
	return nil
}
