package unpack

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// got is what a walk produced: entry name -> content, or "SKIP: reason".
type got map[string]string

func collect(t testing.TB, path string, lim Limits) (got, error) {
	t.Helper()
	out := got{}
	err := Walk(context.Background(), path, lim, func(e Entry) error {
		if _, dup := out[e.Name]; dup {
			t.Errorf("entry %s emitted twice", e.Name)
		}
		if e.Skip != "" {
			out[e.Name] = "SKIP: " + e.Skip
			return nil
		}
		b, err := io.ReadAll(e.Reader)
		if err != nil {
			return fmt.Errorf("reading %s: %w", e.Name, err)
		}
		if e.Size >= 0 && int64(len(b)) != e.Size {
			t.Errorf("entry %s: declared size %d, read %d", e.Name, e.Size, len(b))
		}
		out[e.Name] = string(b)
		return nil
	})
	return out, err
}

// sh runs a shell command in dir with the Debian archivers the facilities also use.
func sh(t testing.TB, dir, script string) {
	t.Helper()
	for _, tool := range []string{"zip", "gzip", "tar", "7z"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: the fixtures are made by real archivers (apt-get install zip p7zip-full; .ci/run does)", tool)
		}
	}
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	csvA = "id,name\n1,alpha\n2,beta\n"
	csvB = "id,value\n7,3.5\n"
)

// fixtures lays out the plain files every archive case packs.
func fixtures(t testing.TB) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.csv"), csvA)
	writeFile(t, filepath.Join(dir, "data", "b.csv"), csvB)
	writeFile(t, filepath.Join(dir, "data", "sub", "a.csv"), csvA)
	return dir
}

func TestWalk(t *testing.T) {
	tests := []struct {
		name   string
		script string // builds the file named by source in the fixture dir
		source string
		lim    Limits
		want   got
	}{
		{"plain", "true", "a.csv", Limits{}, got{"a.csv": csvA}},
		{"gzip", "gzip -k a.csv", "a.csv.gz", Limits{}, got{"a.csv.gz!a.csv": csvA}},
		{"gzip upper case", "gzip -c a.csv > A.CSV.GZ", "A.CSV.GZ", Limits{}, got{"A.CSV.GZ!A.CSV": csvA}},
		{"gzip multi member", "gzip -c a.csv > m.csv.gz; gzip -c data/b.csv >> m.csv.gz", "m.csv.gz", Limits{}, got{"m.csv.gz!m.csv": csvA + csvB}},
		{"zip", "zip -qr x.zip a.csv data", "x.zip", Limits{}, got{
			"x.zip!a.csv": csvA, "x.zip!data/b.csv": csvB, "x.zip!data/sub/a.csv": csvA}},
		{"zip stored", "zip -q0 s.zip a.csv", "s.zip", Limits{}, got{"s.zip!a.csv": csvA}},
		{"7z zip", "7z a -tzip -bd -bso0 s7.zip a.csv data/b.csv", "s7.zip", Limits{}, got{"s7.zip!a.csv": csvA, "s7.zip!data/b.csv": csvB}},
		{"tar.gz", "tar czf x.tar.gz a.csv data", "x.tar.gz", Limits{}, got{
			"x.tar.gz!a.csv": csvA, "x.tar.gz!data/b.csv": csvB, "x.tar.gz!data/sub/a.csv": csvA}},
		{"tgz", "tar czf x.tgz a.csv", "x.tgz", Limits{}, got{"x.tgz!a.csv": csvA}},
		{"tar", "tar cf x.tar a.csv", "x.tar", Limits{}, got{"x.tar!a.csv": csvA}},
		{"tar symlink and fifo skipped", "ln -s a.csv link.csv; mkfifo pipe; tar czf l.tgz a.csv link.csv pipe", "l.tgz", Limits{}, got{
			"l.tgz!a.csv": csvA, "l.tgz!link.csv": `SKIP: symbolic link to "a.csv"`, "l.tgz!pipe": `SKIP: not a regular file (tar type '6')`}},
		{"zip symlink skipped", "ln -s a.csv link.csv; zip -qy z.zip a.csv link.csv", "z.zip", Limits{}, got{
			"z.zip!a.csv": csvA, "z.zip!link.csv": "SKIP: not a regular file (mode Lrwxrwxrwx)"}},
		{"nested zip and gz in zip", "zip -q inner.zip a.csv; gzip -k data/b.csv; tar czf t.tgz a.csv; zip -qj outer.zip inner.zip data/b.csv.gz t.tgz", "outer.zip", Limits{}, got{
			"outer.zip!inner.zip!a.csv": csvA, "outer.zip!b.csv.gz!b.csv": csvB, "outer.zip!t.tgz!a.csv": csvA}},
		{"nested zip in tar.gz", "zip -q inner.zip a.csv data/b.csv; tar czf o.tar.gz inner.zip", "o.tar.gz", Limits{}, got{
			"o.tar.gz!inner.zip!a.csv": csvA, "o.tar.gz!inner.zip!data/b.csv": csvB}},
		{"nested zip staged on disk", "zip -q inner.zip a.csv; zip -q outer.zip inner.zip", "outer.zip", Limits{MemStage: 16}, got{
			"outer.zip!inner.zip!a.csv": csvA}},
		{"zip of gzip", "gzip -k a.csv; gzip -c a.csv.gz > twice.csv.gz.gz", "twice.csv.gz.gz", Limits{}, got{
			"twice.csv.gz.gz!twice.csv.gz!twice.csv": csvA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixtures(t)
			sh(t, dir, tt.script)
			tmp := t.TempDir()
			if tt.lim.TempDir == "" {
				tt.lim.TempDir = tmp
			}
			g, err := collect(t, filepath.Join(dir, tt.source), tt.lim)
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			if !equal(g, tt.want) {
				t.Errorf("entries:\n got %q\nwant %q", g, tt.want)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("staging files left behind: %v", left)
			}
		})
	}
}

func equal(a, b got) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestBaseName(t *testing.T) {
	dir := fixtures(t)
	sh(t, dir, "zip -qr x.zip data; gzip -k a.csv")
	for src, want := range map[string][]string{
		"x.zip":    {"a.csv", "b.csv"},
		"a.csv.gz": {"a.csv"},
		"a.csv":    {"a.csv"},
	} {
		var bases []string
		err := Walk(context.Background(), filepath.Join(dir, src), Limits{}, func(e Entry) error {
			bases = append(bases, e.BaseName())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(bases)
		if !slices.Equal(bases, want) {
			t.Errorf("%s: base names %q, want %q", src, bases, want)
		}
	}
}

// zipWith writes a zip whose entries carry exactly the given names, which real archivers
// refuse to produce.
func zipWith(t testing.TB, path string, names ...string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, csvA)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, buf.String())
}

func tarGzWith(t testing.TB, path string, names ...string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(csvA)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, csvA)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, buf.String())
}

func TestWalkRejects(t *testing.T) {
	type build func(t testing.TB, dir string) string // returns the source path
	script := func(s, src string) build {
		return func(t testing.TB, dir string) string { sh(t, dir, s); return filepath.Join(dir, src) }
	}
	crafted := func(src string, names ...string) build {
		return func(t testing.TB, dir string) string {
			p := filepath.Join(dir, src)
			if strings.HasSuffix(src, ".zip") {
				zipWith(t, p, names...)
			} else {
				tarGzWith(t, p, names...)
			}
			return p
		}
	}
	// mangle builds src with s, then rewrites its bytes.
	mangle := func(s, src string, f func([]byte) []byte) build {
		return func(t testing.TB, dir string) string {
			sh(t, dir, s)
			p := filepath.Join(dir, src)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, string(f(b)))
			return p
		}
	}
	half := func(b []byte) []byte { return b[:len(b)/2] }
	// Zero-filled files compress about 1000:1, far past the 200:1 default.
	const zeros = "dd if=/dev/zero of=zero.csv bs=1M count=24 status=none; "
	tests := []struct {
		name  string
		build build
		lim   Limits
		want  error
		where string // must appear in the error
	}{
		{"zip bomb by declared ratio", script(zeros+"zip -q bomb.zip zero.csv", "bomb.zip"), Limits{}, ErrBomb, "bomb.zip!zero.csv"},
		{"gzip bomb by streamed ratio", script(zeros+"gzip zero.csv", "zero.csv.gz"), Limits{}, ErrBomb, "zero.csv.gz!zero.csv"},
		{"tar.gz bomb by streamed ratio", script(zeros+"tar czf bomb.tgz zero.csv", "bomb.tgz"), Limits{}, ErrBomb, "bomb.tgz"},
		{"nested gzip bomb in zip", script(zeros+"gzip zero.csv; zip -q0 outer.zip zero.csv.gz", "outer.zip"), Limits{}, ErrBomb, "outer.zip!zero.csv.gz!zero.csv"},
		{"entry size limit", script("zip -q x.zip a.csv", "x.zip"), Limits{MaxEntrySize: 10}, ErrBomb, "x.zip!a.csv"},
		{"entry size limit gzip", script("gzip a.csv", "a.csv.gz"), Limits{MaxEntrySize: 10}, ErrBomb, "a.csv.gz!a.csv"},
		{"entry size limit tar", script("tar czf x.tgz a.csv", "x.tgz"), Limits{MaxEntrySize: 10}, ErrBomb, "x.tgz!a.csv"},
		{"archive size limit", script("zip -qr x.zip a.csv data", "x.zip"), Limits{MaxArchiveSize: 40}, ErrBomb, "x.zip!"},
		{"entry count limit", script("zip -qr x.zip a.csv data", "x.zip"), Limits{MaxEntries: 2}, ErrBomb, "x.zip"},
		{"too deep", script("zip -q in.zip a.csv; zip -q mid.zip in.zip; zip -q out.zip mid.zip", "out.zip"), Limits{}, ErrTooDeep, "out.zip!mid.zip!in.zip"},
		{"too deep with depth 1", script("gzip -k a.csv; zip -q out.zip a.csv.gz", "out.zip"), Limits{MaxDepth: 1}, ErrTooDeep, "out.zip!a.csv.gz"},
		{"zipcrypto", script("zip -q -P secret enc.zip a.csv", "enc.zip"), Limits{}, ErrEncrypted, "enc.zip!a.csv"},
		{"winzip aes", script("7z a -tzip -bd -bso0 -psecret -mem=AES256 aes.zip a.csv", "aes.zip"), Limits{}, ErrEncrypted, "aes.zip!a.csv"},
		{"encrypted nested", script("zip -q -P secret enc.zip a.csv; zip -q out.zip enc.zip", "out.zip"), Limits{}, ErrEncrypted, "out.zip!enc.zip!a.csv"},
		{"zip parent", crafted("t.zip", "ok.csv", "../evil.csv"), Limits{}, ErrTraversal, `"../evil.csv"`},
		{"zip deep parent", crafted("t.zip", "a/../../evil.csv"), Limits{}, ErrTraversal, "t.zip"},
		{"zip absolute", crafted("t.zip", "/etc/evil.csv"), Limits{}, ErrTraversal, "t.zip"},
		{"zip drive letter", crafted("t.zip", `C:\evil.csv`), Limits{}, ErrTraversal, "t.zip"},
		{"zip drive relative", crafted("t.zip", `c:evil.csv`), Limits{}, ErrTraversal, "t.zip"},
		{"zip backslash parent", crafted("t.zip", `..\..\evil.csv`), Limits{}, ErrTraversal, "t.zip"},
		{"zip backslash root", crafted("t.zip", `\\server\share\evil.csv`), Limits{}, ErrTraversal, "t.zip"},
		{"tar parent", crafted("t.tgz", "../evil.csv"), Limits{}, ErrTraversal, "t.tgz"},
		{"tar absolute", crafted("t.tgz", "/evil.csv"), Limits{}, ErrTraversal, "t.tgz"},
		{"zip duplicate names", crafted("d.zip", "a.csv", "a.csv"), Limits{}, ErrCorrupt, `"a.csv"`},
		{"tar duplicate names", crafted("d.tgz", "a.csv", "a.csv"), Limits{}, ErrCorrupt, `"a.csv"`},
		{"truncated zip", mangle("zip -q x.zip a.csv", "x.zip", half), Limits{}, ErrCorrupt, "x.zip"},
		{"not a zip", mangle("cp a.csv x.zip", "x.zip", func(b []byte) []byte { return b }), Limits{}, ErrCorrupt, "x.zip"},
		{"truncated gzip", mangle("gzip a.csv", "a.csv.gz", half), Limits{}, ErrCorrupt, "a.csv.gz"},
		{"gzip checksum", mangle("gzip a.csv", "a.csv.gz", func(b []byte) []byte { b[len(b)-6] ^= 0xff; return b }), Limits{}, ErrCorrupt, "a.csv.gz!a.csv"},
		{"not a gzip", mangle("cp a.csv a.csv.gz", "a.csv.gz", func(b []byte) []byte { return b }), Limits{}, ErrCorrupt, "a.csv.gz"},
		{"truncated tar.gz", mangle("tar czf x.tgz a.csv data", "x.tgz", half), Limits{}, ErrCorrupt, "x.tgz"},
		{"tar.gz trailer altered", mangle("tar czf x.tgz a.csv", "x.tgz", func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }), Limits{}, ErrCorrupt, "x.tgz"},
		{"zip entry corrupt", mangle("zip -q x.zip a.csv", "x.zip", func(b []byte) []byte {
			// The first local header: 30 fixed bytes, then name and extra field, then data.
			n, x := int(b[26])|int(b[27])<<8, int(b[28])|int(b[29])<<8
			b[30+n+x+2] ^= 0xff
			return b
		}), Limits{}, ErrCorrupt, "x.zip!a.csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixtures(t)
			src := tt.build(t, dir)
			tt.lim.TempDir = t.TempDir()
			_, err := collect(t, src, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Walk error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.where) {
				t.Errorf("error %q does not name %q", err, tt.where)
			}
		})
	}
}

func TestWalkSwallowedErrorStillReported(t *testing.T) {
	dir := fixtures(t)
	sh(t, dir, "dd if=/dev/zero of=zero.csv bs=1M count=24 status=none; gzip zero.csv")
	err := Walk(context.Background(), filepath.Join(dir, "zero.csv.gz"), Limits{}, func(e Entry) error {
		io.Copy(io.Discard, e.Reader) // error ignored on purpose
		return nil
	})
	if !errors.Is(err, ErrBomb) {
		t.Fatalf("Walk error %v, want ErrBomb", err)
	}
}

func TestWalkCallbackError(t *testing.T) {
	dir := fixtures(t)
	sh(t, dir, "zip -qr x.zip a.csv data")
	stop := errors.New("stop")
	calls := 0
	err := Walk(context.Background(), filepath.Join(dir, "x.zip"), Limits{}, func(e Entry) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Fatalf("Walk = %v after %d calls, want the callback's error after 1", err, calls)
	}
}

func TestWalkCanceled(t *testing.T) {
	dir := fixtures(t)
	sh(t, dir, "zip -qr x.zip a.csv data")
	ctx, cancel := context.WithCancel(context.Background())
	err := Walk(ctx, filepath.Join(dir, "x.zip"), Limits{}, func(e Entry) error {
		cancel()
		_, err := io.ReadAll(e.Reader)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Walk = %v, want context.Canceled", err)
	}
}

func TestHashFile(t *testing.T) {
	dir := fixtures(t)
	p := filepath.Join(dir, "a.csv")
	sum, n, err := HashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte(csvA))
	if sum != hex.EncodeToString(want[:]) || n != int64(len(csvA)) {
		t.Errorf("HashFile = %s, %d; want %x, %d", sum, n, want, len(csvA))
	}
	if _, _, err := HashFile(filepath.Join(dir, "missing.csv")); err == nil || !strings.Contains(err.Error(), "missing.csv") {
		t.Errorf("HashFile(missing) = %v, want an error naming the file", err)
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"a.csv": true, "dir/a.csv": true, `dir\a.csv`: true, "a..b.csv": true, "./a.csv": true,
		"": false, "..": false, "../a": false, "a/../../b": false, "/a": false, `\a`: false,
		`C:\a`: false, "c:a": false, `..\a`: false, "a/..": false, "a\x00b": false,
	} {
		if err := checkName(name); (err == nil) != ok {
			t.Errorf("checkName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
