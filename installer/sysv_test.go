package installer

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kardianos/service"
)

// helperEnv makes the test binary act as a stand-in agent process for the
// init script tests: it waits for SIGTERM and exits 0.
const helperEnv = "MEDLAKE_INSTALLER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		os.Stdout.WriteString("helper agent up " + strings.Join(os.Args[1:], " ") + "\n")
		<-sig
		os.Stdout.WriteString("helper agent stopping\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSysvScriptGolden(t *testing.T) {
	c := packageConfig()
	c.Env = map[string]string{"MEDLAKE_AGENT_BROKER": "tcp://hub:1883", "QUOTED": "it's"}
	got, err := c.SysvScript()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "sysv_medlake-agent"), got)
}

func TestShQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"run", "run"},
		{"/etc/medlake-agent/agent.yaml", "/etc/medlake-agent/agent.yaml"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"$HOME", "'$HOME'"},
		{"", "''"},
	} {
		if got := shQuote(tc.in); got != tc.want {
			t.Errorf("shQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestSysvScriptRuns drives the rendered init script for real, with its pid
// file and logs in a temp dir: start, status, restart, stop, status.
func TestSysvScriptRuns(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Name = "medlake-agent-sysvtest"
	c.Executable = exe
	c.ConfigFile = filepath.Join(dir, "agent config.yaml") // a blank in an argument
	c.Env = map[string]string{helperEnv: "1"}
	c.WorkingDirectory = dir
	script, err := c.sysvScript(sysvPaths{PIDFile: filepath.Join(dir, "agent.pid"), LogDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, c.Name)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(action string) (string, int) {
		t.Helper()
		out, err := exec.Command(path, action).CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s %s: %v", path, action, err)
		}
		return string(out), code
	}
	t.Cleanup(func() { run("stop") })

	if out, code := run("status"); code != 3 {
		t.Fatalf("status before start: exit %d (%s), want 3", code, out)
	}
	if out, code := run("start"); code != 0 {
		t.Fatalf("start: exit %d: %s", code, out)
	}
	running, err := runStatus(path)
	if err != nil || !running {
		t.Fatalf("runStatus after start = %v, %v", running, err)
	}
	pid1 := readPID(t, filepath.Join(dir, "agent.pid"))
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid1) + "/cmdline")
	wantArgs := []string{exe, "run", "--config", c.ConfigFile}
	if got := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"); strings.Join(got, "|") != strings.Join(wantArgs, "|") {
		t.Fatalf("agent runs as %q, want %q", got, wantArgs)
	}
	if out, code := run("restart"); code != 0 {
		t.Fatalf("restart: exit %d: %s", code, out)
	}
	if pid2 := readPID(t, filepath.Join(dir, "agent.pid")); pid2 == pid1 {
		t.Fatalf("restart kept pid %d", pid1)
	}
	if out, code := run("stop"); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, out)
	}
	running, err = runStatus(path)
	if err != nil || running {
		t.Fatalf("runStatus after stop = %v, %v", running, err)
	}
	log, _ := os.ReadFile(filepath.Join(dir, c.Name+".log"))
	if n := bytes.Count(log, []byte("helper agent stopping")); n != 2 {
		t.Fatalf("agent log shows %d clean stops, want 2:\n%s", n, log)
	}
}

// TestHostInstallSysv installs, starts, stops and uninstalls a throwaway
// service in the host's real /etc/init.d. It changes the host, so it runs
// only with MEDLAKE_INSTALLER_HOST_TEST=1, as root, where SysV is in use.
func TestHostInstallSysv(t *testing.T) {
	if os.Getenv("MEDLAKE_INSTALLER_HOST_TEST") != "1" {
		t.Skip("changes /etc/init.d; set MEDLAKE_INSTALLER_HOST_TEST=1 to run")
	}
	if os.Geteuid() != 0 || service.ChosenSystem() == nil || service.ChosenSystem().String() != "unix-systemv" {
		t.Skip("needs root on a host using SysV init")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The init script must be able to exec the binary after the test's
	// build directory is gone, so install a copy.
	bin := filepath.Join(t.TempDir(), "medlake-agent")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Name = "medlake-agent-hosttest"
	c.Executable = bin
	c.ConfigFile = "/nonexistent/agent.yaml"
	c.Env = map[string]string{helperEnv: "1"}
	var out bytes.Buffer
	c.Output = &out
	t.Cleanup(func() {
		_ = Control(ActionStop, c, nil)
		_ = Control(ActionUninstall, c, nil)
		os.Remove("/var/log/" + c.Name + ".log")
		os.Remove("/var/log/" + c.Name + ".err")
	})
	for _, step := range []struct {
		action string
		want   error
	}{
		{ActionStatus, ErrNotInstalled},
		{ActionInstall, nil},
		{ActionStatus, ErrStopped},
		{ActionStart, nil},
		{ActionStatus, nil},
		{ActionStop, nil},
		{ActionStatus, ErrStopped},
		{ActionUninstall, nil},
		{ActionStatus, ErrNotInstalled},
	} {
		if err := Control(step.action, c, nil); !errors.Is(err, step.want) && !(err == nil && step.want == nil) {
			t.Fatalf("%s = %v, want %v (output %q)", step.action, err, step.want, out.String())
		}
	}
	for _, l := range []string{"/etc/rc2.d/S50" + c.Name, "/etc/rc0.d/K02" + c.Name} {
		if _, err := os.Lstat(l); err == nil {
			t.Errorf("%s left behind by uninstall", l)
		}
	}
	if got := out.String(); !strings.Contains(got, "running") || !strings.Contains(got, "stopped") {
		t.Errorf("status output %q", got)
	}
}

func readPID(t testing.TB, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}
