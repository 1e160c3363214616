package stack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server names accepted by Start; each is deploy/local/<name>.sh.
const (
	NamePostgres  = "postgres"
	NameMinIO     = "minio"
	NameMosquitto = "mosquitto"
)

// ownedMarker marks a directory the scripts' watchdog may delete once the
// owning process is gone.
const ownedMarker = ".medlake-stack-owned"

// Server is one running server started by a deploy/local script. Its methods
// are safe for concurrent use.
type Server struct {
	name   string
	dir    string
	script string
	extra  []string // extra environment for the script, e.g. MINIO_DRIVES=4

	mu  sync.Mutex
	env map[string]string // guarded by mu; output of the last start
}

// Start starts a dedicated server of the given name (NamePostgres, NameMinIO,
// NameMosquitto) with its data in a fresh directory and stops it, removing
// the directory, at t.Cleanup. extraEnv (KEY=value) is passed to the script.
// Use it when a test needs to stop or restart the server; otherwise prefer
// Mosquitto, Postgres and MinIO.
func Start(t testing.TB, name string, extraEnv ...string) *Server {
	t.Helper()
	skipShort(t, name)
	s, err := startServer(name, extraEnv)
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("stopping %s: %v", name, err)
		}
	})
	return s
}

// Get returns the value of KEY printed by the script's last start, for
// example MQTT_URL, PG_DSN or S3_ENDPOINT.
func (s *Server) Get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.env[key]
}

// Dir is the directory holding the server's data and its <name>.log.
func (s *Server) Dir() string { return s.dir }

// Stop stops the server and keeps its data, so Restart can bring it back.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if _, err := s.run("stop"); err != nil {
		t.Fatalf("stopping %s: %v", s.name, err)
	}
}

// Restart starts a stopped server again on its data and, when it is still
// free, the same port; a no-op while the server is running.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("restarting %s: %v", s.name, err)
	}
}

// StartServer is Start for programs that are not tests, such as a long fault-injection
// run: it starts a dedicated server with its data in a fresh directory. The caller
// stops it with Close; a watchdog stops it when this process exits first.
func StartServer(name string, extraEnv ...string) (*Server, error) {
	return startServer(name, extraEnv)
}

// StopKeep stops the server and keeps its data, for StartAgain.
func (s *Server) StopKeep() error {
	_, err := s.run("stop")
	return err
}

// StartAgain starts a stopped server on its data and, when still free, its port.
func (s *Server) StartAgain() error { return s.start() }

// Close stops the server and removes its directory. Safe to call twice.
func (s *Server) Close() error { return s.close() }

func skipShort(t testing.TB, name string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s; run without -short", name)
	}
}

func startServer(name string, extraEnv []string) (*Server, error) {
	scripts, err := scriptsDir()
	if err != nil {
		return nil, err
	}
	script := filepath.Join(scripts, name+".sh")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("unknown server %q: %w", name, err)
	}
	// Not t.TempDir: that is 0700 and root-owned, and PostgreSQL runs as the
	// postgres user, which must reach its data directory.
	dir, err := os.MkdirTemp("", "medlake-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("creating %s directory: %w", name, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("opening %s to the server user: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownedMarker), nil, 0o644); err != nil {
		return nil, fmt.Errorf("marking %s: %w", dir, err)
	}
	s := &Server{name: name, dir: dir, script: script, extra: extraEnv}
	if err := s.start(); err != nil {
		// The script may have started it before failing (e.g. bucket creation).
		if cerr := s.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	out, err := s.run("start")
	if err != nil {
		return err
	}
	env, err := parseEnv(out)
	if err != nil {
		return fmt.Errorf("reading output of %s start: %w", s.script, err)
	}
	s.mu.Lock()
	s.env = env
	s.mu.Unlock()
	return nil
}

// close stops the server and removes its directory.
func (s *Server) close() error {
	_, err := s.run("stop")
	if rerr := os.RemoveAll(s.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("removing %s: %w", s.dir, rerr))
	}
	return err
}

// run runs "<script> ACTION DIR" and returns its stdout.
func (s *Server) run(action string) ([]byte, error) {
	// MinIO may need building on a cold machine (~13 min); the test binary's
	// own -timeout bounds everything else.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", s.script, action, s.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), s.extra...)
	if action == "start" {
		r, err := ownerPipe()
		if err != nil {
			return nil, err
		}
		cmd.ExtraFiles = []*os.File{r} // fd 3 in the script
		cmd.Env = append(cmd.Env,
			fmt.Sprintf("MEDLAKE_STACK_OWNER_PID=%d", os.Getpid()),
			"MEDLAKE_STACK_OWNER_FD=3")
	}
	// Servers are detached with their output redirected, so the pipes close
	// when the script exits; WaitDelay is a backstop against a stray holder.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("running %s %s %s: %w\n%s", s.script, action, s.dir, err, tail(stderr.String(), 4000))
	}
	return stdout.Bytes(), nil
}

// ownerPipe returns the read end of a pipe whose write end stays open, and
// unreferenced by any child (it is close-on-exec), until this process exits.
// Watchdogs block reading it and act on EOF.
func ownerPipe() (*os.File, error) {
	owner.once.Do(func() {
		owner.r, owner.w, owner.err = os.Pipe()
	})
	if owner.err != nil {
		return nil, fmt.Errorf("creating watchdog pipe: %w", owner.err)
	}
	return owner.r, nil
}

// owner is process-wide on purpose: it lives exactly as long as the test
// binary, which is what the watchdogs watch.
var owner struct {
	once sync.Once
	r, w *os.File
	err  error
}

func parseEnv(out []byte) (map[string]string, error) {
	env := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: %q is not KEY=value", n, line)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(env) == 0 {
		return nil, errors.New("no KEY=value lines")
	}
	return env, nil
}

// scriptsDir finds deploy/local: $MEDLAKE_STACK_SCRIPTS, else next to this
// source file, else by walking up from the working directory to the module root.
func scriptsDir() (string, error) {
	if d := os.Getenv("MEDLAKE_STACK_SCRIPTS"); d != "" {
		return d, nil
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Dir(filepath.Dir(file))
		if _, err := os.Stat(filepath.Join(d, "postgres.sh")); err == nil {
			return d, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding deploy/local: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		cand := filepath.Join(d, "deploy", "local")
		if _, err := os.Stat(filepath.Join(cand, "postgres.sh")); err == nil {
			return cand, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no deploy/local/postgres.sh above %s; set MEDLAKE_STACK_SCRIPTS", wd)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
