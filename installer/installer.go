package installer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/kardianos/service"
)

// Actions accepted by Control.
const (
	ActionInstall   = "install"
	ActionUninstall = "uninstall"
	ActionStart     = "start"
	ActionStop      = "stop"
	ActionRestart   = "restart"
	ActionStatus    = "status"
	ActionRun       = "run"
)

// Actions lists every action Control accepts, for usage messages.
var Actions = []string{ActionInstall, ActionUninstall, ActionStart, ActionStop, ActionRestart, ActionStatus, ActionRun}

// Errors returned by Control for status, so a main can map them to the LSB
// exit codes (0 running, 3 stopped, 4 unknown) with errors.Is.
var (
	// ErrStopped: the service is installed and not running.
	ErrStopped = errors.New("service is stopped")
	// ErrNotInstalled: no service of that name is installed.
	ErrNotInstalled = errors.New("service is not installed")
	// ErrUnknownAction: Control got an action not in Actions.
	ErrUnknownAction = errors.New("unknown service action")
)

// Config describes the installed service. The zero value is not useful; start
// from DefaultConfig.
type Config struct {
	// Name is the service name: unit name, init script, Windows service key.
	Name        string `yaml:"name"`
	DisplayName string `yaml:"display_name"`
	Description string `yaml:"description"`
	// Executable is the agent binary; "" means the running executable.
	Executable string `yaml:"executable"`
	// ConfigFile is the agent configuration the service runs with; it is
	// passed as "--config FILE" after Arguments.
	ConfigFile string `yaml:"config_file"`
	// Arguments come first on the service's command line (default "run").
	Arguments []string `yaml:"arguments"`
	// UserName runs the service as this account; "" means root on Linux and
	// LocalSystem on Windows. The SysV script ignores it (always root).
	UserName string `yaml:"user"`
	// StateDir is where the agent keeps its state; systemd may write only
	// there (plus the watched folders the admin adds via ReadWritePaths).
	StateDir string `yaml:"state_dir"`
	// ReadWritePaths are extra paths the systemd unit may write, e.g. watched
	// folders whose feed moves files after the hub acknowledged them.
	ReadWritePaths []string `yaml:"read_write_paths"`
	// WorkingDirectory of the service; "" leaves the platform default.
	WorkingDirectory string `yaml:"working_directory"`
	// Env is extra environment (e.g. MEDLAKE_AGENT_* settings).
	Env map[string]string `yaml:"env"`
	// System forces a service system by name ("linux-systemd",
	// "unix-systemv", "windows-service"); "" picks the one the host runs.
	System string `yaml:"system"`
	// Output receives the status line of ActionStatus; nil means os.Stdout.
	Output io.Writer `yaml:"-"`
}

// DefaultConfig is the agent's service as installed on this platform.
func DefaultConfig() Config {
	c := Config{
		Name:        "medlake-agent",
		DisplayName: "medlake agent",
		Description: "Watches EMR export folders and streams normalized records to the medlake hub.",
		Arguments:   []string{"run"},
	}
	if runtime.GOOS == "windows" {
		c.ConfigFile = `C:\ProgramData\medlake-agent\agent.yaml`
		c.StateDir = `C:\ProgramData\medlake-agent\state`
	} else {
		c.ConfigFile = "/etc/medlake-agent/agent.yaml"
		c.StateDir = "/var/lib/medlake-agent"
	}
	return c
}

// Validate reports the first problem that would make an install fail or
// produce a broken service.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("service name is empty")
	}
	for _, r := range c.Name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("service name %q: only letters, digits, '-', '_' and '.' are allowed", c.Name)
		}
	}
	for k := range c.Env {
		if k == "" || strings.ContainsAny(k, "= \t\n") {
			return fmt.Errorf("service env name %q is not a valid variable name", k)
		}
	}
	for k, v := range c.Env {
		if strings.ContainsAny(v, "\n\r") {
			return fmt.Errorf("service env %s: value holds a newline", k)
		}
	}
	for _, p := range append([]string{c.StateDir, c.ConfigFile}, c.ReadWritePaths...) {
		if p != "" && !isAbs(p) {
			return fmt.Errorf("path %q in service config is not absolute", p)
		}
	}
	if c.Executable != "" && !isAbs(c.Executable) {
		return fmt.Errorf("executable %q is not an absolute path", c.Executable)
	}
	return nil
}

// isAbs accepts both forms so a Windows config can be validated (and unit
// tested) on Linux and the other way round.
func isAbs(p string) bool {
	if filepath.IsAbs(p) || strings.HasPrefix(p, "/") {
		return true
	}
	return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/')
}

// args is the service's full argument list.
func (c Config) args() []string {
	a := append([]string(nil), c.Arguments...)
	if c.ConfigFile != "" {
		a = append(a, "--config", c.ConfigFile)
	}
	return a
}

// ServiceConfig builds the kardianos/service configuration for c. On
// systemd the unit text is fully rendered here (see SystemdUnit) and handed
// over as the SystemdScript option; it contains no template actions, so
// kardianos writes it unchanged.
func (c Config) ServiceConfig() (*service.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	exe, err := c.executable()
	if err != nil {
		return nil, err
	}
	unit, err := c.withExecutable(exe).SystemdUnit()
	if err != nil {
		return nil, err
	}
	sysv, err := c.withExecutable(exe).SysvScript()
	if err != nil {
		return nil, err
	}
	sc := &service.Config{
		Name:             c.Name,
		DisplayName:      c.DisplayName,
		Description:      c.Description,
		UserName:         c.UserName,
		Arguments:        c.args(),
		Executable:       exe,
		WorkingDirectory: c.WorkingDirectory,
		EnvVars:          c.Env,
		Option: service.KeyValue{
			"SystemdScript": unit,
			"SysvScript":    sysv,
			// Windows: start at boot, restart 10 s after a crash; the
			// agent resumes from its spool, so a restart loses nothing.
			"StartType":              "automatic",
			"DelayedAutoStart":       true,
			"OnFailure":              "restart",
			"OnFailureDelayDuration": "10s",
			"OnFailureResetPeriod":   3600,
			// SysV/upstart and friends.
			"Restart":     "always",
			"LimitNOFILE": 65536,
		},
	}
	return sc, nil
}

func (c Config) withExecutable(exe string) Config {
	c.Executable = exe
	return c
}

func (c Config) executable() (string, error) {
	if c.Executable != "" {
		return c.Executable, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the agent executable to install: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return exe, nil
}

// Service builds the service for cfg running prg. prg may be nil for the
// actions that only talk to the service manager (everything but run).
func Service(cfg Config, prg service.Interface) (service.Service, error) {
	sc, err := cfg.ServiceConfig()
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", cfg.Name, err)
	}
	if prg == nil {
		prg = noProgram{}
	}
	if cfg.System != "" {
		sys, err := pickSystem(cfg.System)
		if err != nil {
			return nil, err
		}
		s, err := sys.New(prg, sc)
		if err != nil {
			return nil, fmt.Errorf("service %s on %s: %w", cfg.Name, cfg.System, err)
		}
		return s, nil
	}
	s, err := service.New(prg, sc)
	if err != nil {
		return nil, fmt.Errorf("service %s on %s: %w", cfg.Name, service.Platform(), err)
	}
	return s, nil
}

func pickSystem(name string) (service.System, error) {
	var names []string
	for _, s := range service.AvailableSystems() {
		if s.String() == name {
			return s, nil
		}
		names = append(names, s.String())
	}
	sort.Strings(names)
	return nil, fmt.Errorf("service system %q is not available here (have: %s)", name, strings.Join(names, ", "))
}

// Control performs action (one of Actions) on the service described by cfg.
// ActionRun runs prg under the service manager, or in the foreground when
// started from a terminal, until stopped. ActionStatus writes "NAME: running"
// (or stopped / not installed) to cfg.Output and returns nil, ErrStopped or
// ErrNotInstalled.
func Control(action string, cfg Config, prg service.Interface) error {
	if !validAction(action) {
		return fmt.Errorf("%w %q (want one of %s)", ErrUnknownAction, action, strings.Join(Actions, ", "))
	}
	if action == ActionRun && prg == nil {
		return errors.New("running the service needs a program")
	}
	s, err := Service(cfg, prg)
	if err != nil {
		return err
	}
	switch action {
	case ActionRun:
		if err := s.Run(); err != nil {
			return fmt.Errorf("running service %s: %w", cfg.Name, err)
		}
		return nil
	case ActionStatus:
		return writeStatus(s, cfg)
	case ActionUninstall:
		if err := service.Control(s, action); err != nil {
			return fmt.Errorf("uninstalling service %s (%s): %w", cfg.Name, s.Platform(), err)
		}
		if s.Platform() == "unix-systemv" {
			removeSysvLinks(cfg.Name)
		}
		return nil
	default:
		if err := service.Control(s, action); err != nil {
			return fmt.Errorf("%s service %s (%s): %w", action, cfg.Name, s.Platform(), err)
		}
		return nil
	}
}

func writeStatus(s service.Service, cfg Config) error {
	out := cfg.Output
	if out == nil {
		out = os.Stdout
	}
	var st service.Status
	var err error
	if s.Platform() == "unix-systemv" {
		var running bool
		running, err = sysvStatus(cfg.Name)
		st = service.StatusStopped
		if running {
			st = service.StatusRunning
		}
		if errors.Is(err, ErrNotInstalled) {
			err = service.ErrNotInstalled
		}
	} else {
		st, err = s.Status()
	}
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		fmt.Fprintf(out, "%s: not installed\n", cfg.Name)
		return ErrNotInstalled
	case err != nil:
		return fmt.Errorf("status of service %s (%s): %w", cfg.Name, s.Platform(), err)
	case st == service.StatusRunning:
		fmt.Fprintf(out, "%s: running\n", cfg.Name)
		return nil
	case st == service.StatusStopped:
		fmt.Fprintf(out, "%s: stopped\n", cfg.Name)
		return ErrStopped
	default:
		return fmt.Errorf("status of service %s (%s): unknown", cfg.Name, s.Platform())
	}
}

// removeSysvLinks removes the rc?.d links kardianos' SysV install creates
// and its uninstall leaves dangling.
func removeSysvLinks(name string) {
	for _, lvl := range []string{"0", "1", "2", "3", "4", "5", "6"} {
		for _, prefix := range []string{"S50", "K02"} {
			p := filepath.Join("/etc", "rc"+lvl+".d", prefix+name)
			if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				_ = os.Remove(p)
			}
		}
	}
}

func validAction(a string) bool {
	for _, v := range Actions {
		if a == v {
			return true
		}
	}
	return false
}

// noProgram stands in for the agent when only the service manager is
// asked (install, start, status...): kardianos requires an Interface.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return errors.New("no program to run") }
func (noProgram) Stop(service.Service) error  { return nil }
