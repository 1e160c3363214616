package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/medlake/medlake/protocol/feed"
)

// secretNameRE is what a secret name may look like: one plain file name, so a feed
// definition cannot point outside the secrets directory.
var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// maxSecretSize bounds what is read from a secret file.
const maxSecretSize = 64 << 10

// errSecretMissing: no file holds the named secret.
var errSecretMissing = errors.New("secret not found")

// checkSecretName reports whether name can name a secret file.
func checkSecretName(name string) error {
	if !secretNameRE.MatchString(name) {
		return fmt.Errorf("secret name %q must match %s", name, secretNameRE)
	}
	return nil
}

// ReadSecret returns the secret named name: the content of <dir>/<name> less trailing
// line breaks. On unix it refuses a file that group or others may access. Errors name the
// file, never its content; a missing file wraps errSecretMissing.
func ReadSecret(dir, name string) (string, error) {
	if err := checkSecretName(name); err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("secret %s: no file %s: %w", name, p, errSecretMissing)
	}
	if err != nil {
		return "", fmt.Errorf("opening secret %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat() // of the opened file, so it cannot change between check and read
	if err != nil {
		return "", fmt.Errorf("stat secret file %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("secret file %s is not a regular file", p)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("secret file %s is accessible by group or others (mode %s); refusing to read it: chmod 600 it", p, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("reading secret file %s: %w", p, err)
	}
	if len(b) > maxSecretSize {
		return "", fmt.Errorf("secret file %s is larger than %d bytes", p, maxSecretSize)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", p)
	}
	return s, nil
}

// secretStore reads secrets by name from dir, for normalize.Options.Secret.
func secretStore(dir string) func(name string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		s, err := ReadSecret(dir, name)
		if err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
}

// passwordSource offers unpack the passwords of one file's encrypted zip entries: the
// secrets named by match.password_secret of every feed whose glob matches the archive's
// or the entry's base name. It reads each secret once per walk and remembers which it
// used or missed, by name only, for the quarantine reason. Used by one walk at a time.
type passwordSource struct {
	dir   string
	feeds []*feed.Definition

	used, missing []string          // secret names, each once
	read          map[string]string // secrets already read in this walk, by name
}

func (p *passwordSource) passwords(archive, entry string) ([]string, error) {
	var pws []string
	seen := map[string]bool{}
	for _, def := range p.feeds {
		name := def.Match.PasswordSecret
		if name == "" || seen[name] || !def.Matches(archive) && !def.Matches(entry) {
			continue
		}
		seen[name] = true
		if pw, ok := p.read[name]; ok {
			pws = append(pws, pw)
			continue
		}
		pw, err := ReadSecret(p.dir, name)
		if errors.Is(err, errSecretMissing) {
			p.missing = appendOnce(p.missing, name)
			continue
		}
		if err != nil {
			return nil, err // the agent's setup, not the file, is at fault: retried later
		}
		if p.read == nil {
			p.read = map[string]string{}
		}
		p.read[name] = pw
		p.used = appendOnce(p.used, name)
		pws = append(pws, pw)
	}
	return pws, nil
}

// note says which secrets were tried, for a reason that names them but no password.
func (p *passwordSource) note() string {
	var parts []string
	if len(p.used) > 0 {
		parts = append(parts, "password secrets tried: "+strings.Join(p.used, ", "))
	}
	if len(p.missing) > 0 {
		parts = append(parts, fmt.Sprintf("password secrets missing from %s: %s", p.dir, strings.Join(p.missing, ", ")))
	}
	if len(parts) == 0 {
		return "no feed matching the archive or entry names a match.password_secret"
	}
	return strings.Join(parts, "; ")
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
