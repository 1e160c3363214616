package cliconfig_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/cmd/internal/cliconfig"
)

type inner struct {
	ListenAddr string        `yaml:"listen_addr"`
	Interval   time.Duration `yaml:"interval"`
}

type config struct {
	DataDir string `yaml:"data_dir"`
	Name    string `yaml:"name"`
	Hub     inner  `yaml:"hub" envPrefix:"HUB_"`
}

func (c *config) Validate() error {
	if c.Name == "bad" {
		return errors.New("name is bad")
	}
	return nil
}

func TestLayers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("data_dir: /from/file\nname: file\nhub: {listen_addr: 'file:1', interval: 5s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TESTCFG_NAME", "env")
	t.Setenv("TESTCFG_HUB_INTERVAL", "7s")
	args := []string{"--config", path, "-listen", "flag:2"}

	cfg := config{DataDir: "/default", Name: "default", Hub: inner{ListenAddr: "default:0", Interval: time.Second}}
	if got := cliconfig.ConfigPath(args, "TESTCFG_CONFIG"); got != path {
		t.Fatalf("ConfigPath = %q", got)
	}
	if err := cliconfig.Load(&cfg, path, "TESTCFG_"); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("config", "", "")
	fs.StringVar(&cfg.Hub.ListenAddr, "listen", cfg.Hub.ListenAddr, "")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "")
	if err := cliconfig.Parse(fs, args, &cfg); err != nil {
		t.Fatal(err)
	}
	want := config{DataDir: "/from/file", Name: "env", Hub: inner{ListenAddr: "flag:2", Interval: 7 * time.Second}}
	if cfg != want {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}
}

func TestStrictAndValidate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("nmae: typo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var cfg config
	if err := cliconfig.Load(&cfg, path, "TESTCFG_"); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("Load error = %v, want the unknown field named", err)
	}
	cfg.Name = "bad"
	if err := cliconfig.Parse(flag.NewFlagSet("t", flag.ContinueOnError), nil, &cfg); err == nil {
		t.Fatal("Parse did not validate")
	}
}

func TestConfigPathForms(t *testing.T) {
	t.Setenv("TESTCFG_CONFIG", "/env.yaml")
	for args, want := range map[string]string{
		"--config=/a.yaml":   "/a.yaml",
		"-config /b.yaml":    "/b.yaml",
		"serve --roles=all":  "/env.yaml",
		"-- --config=/c.yml": "/env.yaml",
	} {
		if got := cliconfig.ConfigPath(strings.Fields(args), "TESTCFG_CONFIG"); got != want {
			t.Errorf("ConfigPath(%q) = %q, want %q", args, got, want)
		}
	}
}
