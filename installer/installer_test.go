package installer

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kardianos/service"
)

var update = flag.Bool("update", false, "rewrite golden files and packaging/medlake-agent.service")

// packageConfig is the service the deb/rpm packages install.
func packageConfig() Config {
	c := DefaultConfig()
	c.Executable = "/usr/bin/medlake-agent"
	c.ConfigFile = "/etc/medlake-agent/agent.yaml"
	c.StateDir = "/var/lib/medlake-agent"
	c.UserName = "medlake-agent"
	return c
}

// TestPackagedUnitIsCurrent keeps the unit shipped by goreleaser/nfpm equal
// to what SystemdUnit renders; run with -update after changing either.
func TestPackagedUnitIsCurrent(t *testing.T) {
	got, err := packageConfig().SystemdUnit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("packaging", "medlake-agent.service"), got)
}

func TestSystemdUnitGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"default", func(c *Config) {}},
		{"quoting", func(c *Config) {
			c.Executable = "/opt/med lake/bin/medlake-agent"
			c.ConfigFile = `/etc/medlake agent/a"b%.yaml`
			c.Env = map[string]string{"MEDLAKE_AGENT_BROKER": "tcp://hub:1883", "HOME": "/var/lib/x y", "COST": "$5"}
			c.StateDir = "/srv/medlake/state"
			c.ReadWritePaths = []string{"/exports/fac0001"}
			c.WorkingDirectory = "/srv/medlake"
			c.UserName = ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := packageConfig()
			tc.cfg(&c)
			got, err := c.SystemdUnit()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "systemd_"+tc.name+".service"), got)
		})
	}
}

func TestSystemdQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"run", "run"},
		{"/usr/bin/medlake-agent", "/usr/bin/medlake-agent"},
		{"a b", `"a b"`},
		{`a"b`, `"a\"b"`},
		{`C:\x`, `"C:\\x"`},
		{"100%", "100%%"},
		{"$HOME", "$$HOME"},
		{"", `""`},
	} {
		if got := systemdQuote(tc.in); got != tc.want {
			t.Errorf("systemdQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"windows paths", func(c *Config) {
			c.ConfigFile = `C:\ProgramData\medlake-agent\agent.yaml`
			c.Executable = `C:\Program Files\medlake\medlake-agent.exe`
		}, ""},
		{"empty name", func(c *Config) { c.Name = "" }, "name is empty"},
		{"name with space", func(c *Config) { c.Name = "medlake agent" }, "only letters"},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, "not absolute"},
		{"relative executable", func(c *Config) { c.Executable = "bin/agent" }, "not an absolute"},
		{"env newline", func(c *Config) { c.Env = map[string]string{"A": "x\ny"} }, "newline"},
		{"env bad name", func(c *Config) { c.Env = map[string]string{"A=B": "x"} }, "not a valid variable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mut(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestServiceConfig(t *testing.T) {
	c := DefaultConfig()
	c.Executable = "/usr/bin/medlake-agent"
	c.Env = map[string]string{"MEDLAKE_AGENT_ID": "agent-fac0001"}
	sc, err := c.ServiceConfig()
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "medlake-agent" || sc.Executable != "/usr/bin/medlake-agent" {
		t.Fatalf("name/executable = %q/%q", sc.Name, sc.Executable)
	}
	wantArgs := []string{"run", "--config", c.ConfigFile}
	if strings.Join(sc.Arguments, "\x00") != strings.Join(wantArgs, "\x00") {
		t.Fatalf("arguments = %q, want %q", sc.Arguments, wantArgs)
	}
	if sc.EnvVars["MEDLAKE_AGENT_ID"] != "agent-fac0001" {
		t.Fatalf("env = %v", sc.EnvVars)
	}
	unit, _ := sc.Option["SystemdScript"].(string)
	want, err := c.SystemdUnit()
	if err != nil {
		t.Fatal(err)
	}
	if unit != want {
		t.Fatalf("SystemdScript option differs from SystemdUnit:\n%s", unit)
	}
	for k, v := range map[string]any{"OnFailure": "restart", "StartType": "automatic", "DelayedAutoStart": true} {
		if sc.Option[k] != v {
			t.Errorf("option %s = %v, want %v", k, sc.Option[k], v)
		}
	}
}

func TestServiceConfigDefaultsToRunningExecutable(t *testing.T) {
	sc, err := DefaultConfig().ServiceConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(sc.Executable) {
		t.Fatalf("executable %q is not absolute", sc.Executable)
	}
}

func TestControlRejects(t *testing.T) {
	if err := Control("explode", DefaultConfig(), nil); !errors.Is(err, ErrUnknownAction) {
		t.Fatalf("Control(explode) = %v, want ErrUnknownAction", err)
	}
	if err := Control(ActionRun, DefaultConfig(), nil); err == nil {
		t.Fatal("Control(run) without a program succeeded")
	}
	c := DefaultConfig()
	c.System = "no-such-system"
	if err := Control(ActionStatus, c, nil); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("Control with system %q = %v", c.System, err)
	}
	c = DefaultConfig()
	c.Name = "bad name"
	if err := Control(ActionInstall, c, nil); err == nil {
		t.Fatal("install with an invalid name succeeded")
	}
}

// TestStatusNotInstalled asks the host's real service manager about a
// service that does not exist; it changes nothing on the host.
func TestStatusNotInstalled(t *testing.T) {
	if service.ChosenSystem() == nil {
		t.Skip("no service system detected on this host")
	}
	c := DefaultConfig()
	c.Name = "medlake-agent-absent-" + strings.ReplaceAll(t.Name(), "/", "-")
	var out bytes.Buffer
	c.Output = &out
	err := Control(ActionStatus, c, nil)
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("status of an absent service = %v (%q), want ErrNotInstalled", err, out.String())
	}
	if !strings.Contains(out.String(), "not installed") {
		t.Fatalf("status output %q", out.String())
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if string(want) != got {
		t.Fatalf("%s is stale; run go test ./installer -update and review the diff.\ngot:\n%s", path, got)
	}
}
