package quarantine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/medlake/medlake/agent/internal/durable"
)

// Errors of Find; test with errors.Is.
var (
	// ErrNotFound: no quarantined file has that hash (or hash prefix).
	ErrNotFound = errors.New("no quarantined file with that sha256")
	// ErrAmbiguous: several quarantined files start with that hash prefix.
	ErrAmbiguous = errors.New("sha256 prefix matches several quarantined files")
)

const (
	reasonSuffix = ".reason.txt"
	retryDir     = "retry"
	// MinPrefix is the shortest hash prefix Find accepts.
	MinPrefix = 6
)

// Record is what a reason file says about one quarantined file.
type Record struct {
	SHA256 string    `json:"sha256"`
	Path   string    `json:"path"` // where the file was found
	Time   time.Time `json:"time"` // when it was (last) quarantined
	Reason string    `json:"reason"`
}

// Entry is one quarantined file: its record, the copy and whether a retry is pending.
type Entry struct {
	Record
	Copy         string `json:"copy"` // path of the copy in the quarantine folder
	Size         int64  `json:"size"` // bytes of the copy; -1 when the copy is missing
	RetryPending bool   `json:"retry_pending"`
}

// CopyName is the name of a file's copy in the quarantine folder: the hash prefix keeps
// copies of different content under one name apart.
func CopyName(sha, path string) string { return sha[:16] + "_" + filepath.Base(path) }

// Format renders a reason file. The reason comes last and runs to the end of the file,
// so it may hold any text.
func Format(r Record) []byte {
	return fmt.Appendf(nil, "file: %s\nsha256: %s\ntime: %s\nreason: %s\n", r.Path, r.SHA256, r.Time.UTC().Format(time.RFC3339), r.Reason)
}

// Parse reads a reason file written by Format.
func Parse(b []byte) (Record, error) {
	var r Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), len(b)+1)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		switch key {
		case "file":
			r.Path = val
		case "sha256":
			r.SHA256 = val
		case "time":
			t, err := time.Parse(time.RFC3339, val)
			if err != nil {
				return Record{}, fmt.Errorf("time %q: %w", val, err)
			}
			r.Time = t
		case "reason":
			// Everything after "reason: " is the reason, line breaks included.
			i := bytes.Index(b, []byte("\nreason: "))
			r.Reason = strings.TrimSuffix(string(b[i+len("\nreason: "):]), "\n")
			if r.SHA256 == "" || len(r.SHA256) != 64 {
				return Record{}, fmt.Errorf("sha256 %q is not a hex SHA-256", r.SHA256)
			}
			return r, nil
		}
	}
	return Record{}, errors.New("no reason line")
}

// Write stores the reason file of a quarantined file whose copy is dir/CopyName, durably.
func Write(dir string, r Record) error {
	p := filepath.Join(dir, CopyName(r.SHA256, r.Path)+reasonSuffix)
	if err := durable.WriteFile(p, Format(r)); err != nil {
		return fmt.Errorf("writing quarantine reason %s: %w", p, err)
	}
	return nil
}

// List returns every quarantined file described by a reason file in dir, oldest first.
// It reads only the folder, so it works while an agent runs. A reason file that does not
// parse is listed with its name as path and the parse error as reason, not hidden.
func List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing quarantine %s: %w", dir, err)
	}
	pending, err := PendingRetries(dir)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || !strings.HasSuffix(name, reasonSuffix) {
			continue
		}
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading quarantine reason %s: %w", p, err)
		}
		e := Entry{Copy: strings.TrimSuffix(p, reasonSuffix), Size: -1}
		e.Record, err = Parse(b)
		if err != nil {
			e.Record = Record{Path: p, Reason: fmt.Sprintf("unreadable reason file: %v", err)}
		}
		if st, err := os.Stat(e.Copy); err == nil {
			e.Size = st.Size()
		}
		e.RetryPending = slices.Contains(pending, e.SHA256)
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out, nil
}

// Find returns the quarantined file whose hash starts with prefix (at least MinPrefix
// hex digits, or the whole hash).
func Find(dir, prefix string) (Entry, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < MinPrefix {
		return Entry{}, fmt.Errorf("sha256 prefix %q: give at least %d hex digits", prefix, MinPrefix)
	}
	all, err := List(dir)
	if err != nil {
		return Entry{}, err
	}
	var found []Entry
	for _, e := range all {
		if e.SHA256 != "" && strings.HasPrefix(e.SHA256, prefix) {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		return Entry{}, fmt.Errorf("%s in %s: %w", prefix, dir, ErrNotFound)
	case 1:
		return found[0], nil
	}
	return Entry{}, fmt.Errorf("%s matches %d files: %w", prefix, len(found), ErrAmbiguous)
}

// RequestRetry leaves a durable request to re-process the quarantined file sha.
func RequestRetry(dir, sha string) error {
	rd := filepath.Join(dir, retryDir)
	if err := os.MkdirAll(rd, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", rd, err)
	}
	p := filepath.Join(rd, sha)
	if err := durable.WriteFile(p, fmt.Appendf(nil, "requested: %s\n", time.Now().UTC().Format(time.RFC3339))); err != nil {
		return fmt.Errorf("writing retry request %s: %w", p, err)
	}
	return durable.SyncDirs(rd)
}

// PendingRetries returns the hashes of retry requests not yet taken, sorted.
func PendingRetries(dir string) ([]string, error) {
	des, err := os.ReadDir(filepath.Join(dir, retryDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing retry requests: %w", err)
	}
	var out []string
	for _, de := range des {
		if n := de.Name(); !de.IsDir() && len(n) == 64 && !strings.HasSuffix(n, ".tmp") {
			out = append(out, n)
		}
	}
	return out, nil
}

// DoneRetry removes the retry request of sha.
func DoneRetry(dir, sha string) error {
	err := os.Remove(filepath.Join(dir, retryDir, sha))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing retry request %s: %w", sha, err)
	}
	return nil
}

// CopyOf returns the path of the copy of sha in dir, "" when there is none.
func CopyOf(dir, sha string) string {
	matches, _ := filepath.Glob(filepath.Join(dir, sha[:16]+"_*"+reasonSuffix))
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		if r, err := Parse(b); err == nil && r.SHA256 == sha {
			c := strings.TrimSuffix(m, reasonSuffix)
			if _, err := os.Stat(c); err == nil {
				return c
			}
		}
	}
	return ""
}

// Remove deletes the copy of sha and its reason file: the file was ingested after all.
func Remove(dir, sha string) error {
	c := CopyOf(dir, sha)
	if c == "" {
		return nil
	}
	for _, p := range []string{c, c + reasonSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing quarantined copy %s: %w", p, err)
		}
	}
	return durable.SyncDirs(dir)
}
