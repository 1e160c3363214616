// Command medlake-agent is the facility agent: it watches export folders, normalizes the
// files it finds by feed definitions, spools the batches and sends them to the medlake hub.
// It runs in the foreground or as a Windows or Linux service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	// Feed timezones (column timezone) must resolve on Windows, which has no zoneinfo
	// files: the IANA database is built into the binary.
	_ "time/tzdata"

	"github.com/kardianos/service"

	"github.com/medlake/medlake/agent"
	"github.com/medlake/medlake/cmd/internal/cliconfig"
	"github.com/medlake/medlake/installer"
)

// Set at release time with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

const usage = `medlake-agent watches a facility's export folders and streams their records to medlake.

Usage: medlake-agent [command] [flags]

Commands:
  run            run in the foreground, or under the service manager (default)
  install        install as a service (Windows service, systemd unit or SysV script)
  uninstall      remove the service
  start|stop|restart|status
                 control the installed service
  check-config   validate the configuration and print the effective values
  quarantine list|show|retry
                 files that could not be ingested; retry re-processes them after a fix
  rejects list|show|retry
                 rows the feed definitions refused (also in the lake table medlake_rejects);
                 retry re-runs them after a definition fix
  version        print the version

Configuration comes from defaults, then --config FILE (YAML), then MEDLAKE_AGENT_*
environment variables (MEDLAKE_AGENT_BROKER, MEDLAKE_AGENT_STATE_DIR, ...), then flags.

Feed definitions come from the hub, which pushes the catalog's (medlake feeds apply) on
the agent's config topic; the agent switches for its next file, reports applied and
refused feeds in its status, and keeps the last good set in the state directory for a
restart without a broker. --feeds names optional local definitions for an offline
install; a pushed definition replaces a local one of the same name when its version is
higher.

Flags (defaults show the effective values):
`

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "medlake-agent:", err)
		// LSB init script status codes: 3 stopped, 4 unknown (not installed).
		switch {
		case errors.Is(err, installer.ErrStopped):
			os.Exit(3)
		case errors.Is(err, installer.ErrNotInstalled):
			os.Exit(4)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	cmd := installer.ActionRun
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "version" {
		fmt.Fprintln(stdout, "medlake-agent", version, commit, date)
		return nil
	}
	if cmd == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	switch cmd {
	case "quarantine":
		return runQuarantine(args, stdout)
	case "rejects":
		return runRejects(args, stdout)
	}
	if cmd != "check-config" && !slices.Contains(installer.Actions, cmd) {
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}

	if cmd != installer.ActionRun && cmd != "check-config" && cmd != installer.ActionInstall {
		// Controlling an installed service needs only its name, not a valid agent
		// configuration: an admin must be able to stop a misconfigured agent.
		path := cliconfig.ConfigPath(args, "MEDLAKE_AGENT_CONFIG")
		if path != "" {
			abs, err := filepath.Abs(path)
			if err != nil {
				return err
			}
			path = abs
		}
		return installer.Control(cmd, serviceConfig(path), nil)
	}
	cfg, configPath, logFormat, err := loadConfig(args)
	if err != nil {
		return err
	}
	switch cmd {
	case "check-config":
		c := cfg
		if c.Password != "" {
			c.Password = "<redacted>"
		}
		return cliconfig.Print(stdout, &c)
	case installer.ActionRun:
		logger := newLogger(logFormat)
		return installer.Control(cmd, serviceConfig(configPath), &program{cfg: cfg, logger: logger})
	default:
		return installer.Control(cmd, serviceConfig(configPath), nil)
	}
}

func loadConfig(args []string) (agent.Config, string, string, error) {
	cfg := agent.DefaultConfig()
	path := cliconfig.ConfigPath(args, "MEDLAKE_AGENT_CONFIG")
	if err := cliconfig.Load(&cfg, path, "MEDLAKE_AGENT_"); err != nil {
		return cfg, "", "", err
	}
	logFormat := "text"
	fs := flag.NewFlagSet("medlake-agent", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.String("config", path, "YAML configuration file (env MEDLAKE_AGENT_CONFIG)")
	fs.StringVar(&cfg.ID, "id", cfg.ID, "agent id, unique across the fleet")
	fs.StringVar(&cfg.Tenant, "tenant", cfg.Tenant, "tenant (customer) id")
	fs.StringVar(&cfg.Facility, "facility", cfg.Facility, "facility id")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "MQTT broker URL, tcp://host:port")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for the spool, state, dead letters and quarantine")
	fs.StringVar(&cfg.FeedsDir, "feeds", cfg.FeedsDir, "optional directory of local feed definitions (*.yaml); pushed ones of a higher version win")
	fs.StringVar(&logFormat, "log-format", logFormat, "text or json")
	if err := cliconfig.Parse(fs, args, &cfg); err != nil {
		return cfg, "", "", err
	}
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return cfg, "", "", err
		}
		path = abs
	}
	return cfg, path, logFormat, nil
}

func serviceConfig(configPath string) installer.Config {
	c := installer.DefaultConfig()
	c.ConfigFile = configPath
	return c
}

func newLogger(format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// program adapts the agent to the service manager's Start/Stop calls. It owns the
// agent's goroutine: Stop cancels it and waits for it to finish.
type program struct {
	cfg    agent.Config
	logger *slog.Logger

	mu     sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *program) Start(service.Service) error {
	a, err := agent.New(p.cfg, p.logger)
	if err != nil {
		return err
	}
	// The service library turns SIGINT/SIGTERM (or the Windows service manager's stop)
	// into a call to Stop.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.mu.Lock()
	p.cancel, p.done = cancel, done
	p.mu.Unlock()
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil && ctx.Err() == nil {
			// Exit non-zero so the service manager restarts the agent.
			p.logger.Error("agent stopped", "err", err)
			os.Exit(1)
		}
	}()
	return nil
}

func (p *program) Stop(service.Service) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}
