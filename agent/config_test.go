package agent

import (
	"strings"
	"testing"
	"time"
)

const sampleConfig = `
id: agent-fac0001
tenant: t0001
facility: fac0001
broker: tcp://127.0.0.1:1883
state_dir: /var/lib/medlake-agent
feeds_dir: /etc/medlake-agent/feeds
watch:
  - path: /exports/fac0001
    recursive: true
    done: move
quiet_period: 2s
rescan_interval: 30s
batch_rows: 50000
ack_timeout: 60s
max_inflight: 32
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QuietPeriod != 2*time.Second || cfg.AckTimeout != time.Minute || cfg.AckTimeoutMax != 2*time.Minute || cfg.MaxInflight != 32 {
		t.Fatalf("durations/numbers: %+v", cfg)
	}
	if w := cfg.Watch[0]; w.DoneDir != "/exports/fac0001/.medlake-done" || !w.Recursive || w.Done != DoneMove {
		t.Fatalf("watch defaults: %+v", w)
	}
	if cfg.SpoolMaxBytes != DefaultConfig().SpoolMaxBytes {
		t.Fatal("default spool bound not applied")
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, edit, want string
	}{
		{"unknown field", "max_inflite: 3\n", "max_inflite"},
		{"bad id", "id: a/b\n", "id"},
		{"bad done", "watch:\n  - path: /x\n    done: delete\n", "done"},
		{"relative path", "watch:\n  - path: x\n", "not absolute"},
		{"bad duration", "ack_timeout: soon\n", "soon"},
		{"zero window", "max_inflight: 0\n", "max_inflight"},
		{"bad broker", "broker: 127.0.0.1:1883\n", "broker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(replaceKeys(sampleConfig, tt.edit)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// replaceKeys drops the sample's top-level keys that edit sets, then appends edit.
func replaceKeys(base, edit string) string {
	drop := map[string]bool{}
	for _, l := range strings.Split(edit, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			drop[k] = true
		}
	}
	var out []string
	skipping := false
	for _, l := range strings.Split(base, "\n") {
		k, _, _ := strings.Cut(l, ":")
		if !strings.HasPrefix(l, " ") {
			skipping = drop[k]
		}
		if !skipping {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n") + "\n" + edit
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sampleConfig))
	f.Add([]byte("watch: [{path: /x}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config fails validation: %v", err)
		}
	})
}
