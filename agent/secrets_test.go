package agent

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medlake/medlake/agent/state"
	"github.com/medlake/medlake/protocol/feed"
)

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("ok", "s3cr3t pass\r\n", 0o600)
	write("bare", "s3cr3t", 0o400)
	write("group", "group-readable-pw\n", 0o640)
	write("world", "world-readable-pw\n", 0o604)
	write("empty", "\n", 0o600)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want, errHas string
		missing            bool
	}{
		{name: "ok", want: "s3cr3t pass"},
		{name: "bare", want: "s3cr3t"},
		{name: "group", errHas: "accessible by group or others"},
		{name: "world", errHas: "accessible by group or others"},
		{name: "empty", errHas: "empty"},
		{name: "adir", errHas: "not a regular file"},
		{name: "absent", errHas: "no file", missing: true},
		{name: "../ok", errHas: "must match"},
		{name: ".hidden", errHas: "must match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadSecret(dir, tc.name)
			if tc.errHas == "" {
				if err != nil || got != tc.want {
					t.Fatalf("readSecret = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if runtime.GOOS == "windows" && strings.Contains(tc.errHas, "group") {
				t.Skip("no unix permission bits")
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("readSecret error %v, want one saying %q", err, tc.errHas)
			}
			if errors.Is(err, errSecretMissing) != tc.missing {
				t.Errorf("errors.Is(err, errSecretMissing) = %v", !tc.missing)
			}
			if strings.Contains(err.Error(), "readable-pw") {
				t.Errorf("error %q shows the secret", err)
			}
			if !strings.Contains(tc.name, "/") && !strings.HasPrefix(tc.name, ".") && !strings.Contains(err.Error(), filepath.Join(dir, tc.name)) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestConfigSecretsPath(t *testing.T) {
	cfg, err := ParseConfig([]byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.SecretsPath(); got != "/var/lib/medlake-agent/secrets" {
		t.Errorf("default secrets path %q", got)
	}
	cfg, err = ParseConfig([]byte(sampleConfig + "secrets_dir: /etc/medlake-agent/secrets\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.SecretsPath(); got != "/etc/medlake-agent/secrets" {
		t.Errorf("secrets path %q", got)
	}
}

const lockedLabFeed = `name: lab_results
version: 1
table: lab_results
match:
  glob: "*lab_results*"
  password_secret: lab_zip
format:
  type: csv
keys: [lab_id]
columns:
  - {name: lab_id, type: string, required: true}
  - {name: patient_id, type: string}
  - {name: result_value, type: float}
`

// TestAgentEncryptedZip drops zips encrypted by Info-ZIP into a watched folder: the one
// whose password is the feed's secret is ingested, the one with another password is
// quarantined with a reason that names the file and the secret but no password.
func TestAgentEncryptedZip(t *testing.T) {
	if _, err := exec.LookPath("zip"); err != nil {
		t.Fatal("the encrypted fixtures are made by Info-ZIP's zip: apt-get install zip (.ci/run does)")
	}
	fx := newAgentFixture(t, "lab_results.yaml", lockedLabFeed)
	hub, exports, stateDir, work := fx.hub, fx.exports, fx.state, fx.work
	secrets := filepath.Join(fx.root, "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "lab_zip"), []byte("right-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	csv := "lab_id,patient_id,result_value\nL1,P1,1.5\nL2,P2,2.5\n"
	writeFile(t, filepath.Join(work, "lab_results.csv"), []byte(csv))
	// Made outside the watched folder, then moved in whole.
	for _, z := range []struct{ name, pw string }{{"good_lab_results.zip", "right-pw"}, {"bad_lab_results.zip", "other-pw"}} {
		cmd := exec.Command("zip", "-q", "-P", z.pw, z.name, "lab_results.csv")
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("zip: %v\n%s", err, out)
		}
	}
	sha := map[string]string{}
	for _, name := range []string{"good_lab_results.zip", "bad_lab_results.zip"} {
		b, err := os.ReadFile(filepath.Join(work, name))
		if err != nil {
			t.Fatal(err)
		}
		sha[name] = hashOf(b)
		if err := os.Rename(filepath.Join(work, name), filepath.Join(exports, name)); err != nil {
			t.Fatal(err)
		}
	}

	cfg := fx.config()
	cfg.SecretsDir = secrets
	ag := startAgent(t, cfg)

	waitFor(t, "the right password's zip done", func() bool { return ag.status(t, sha["good_lab_results.zip"]) == state.StatusDone })
	if ids := hub.batchesOf("good_lab_results.zip"); len(ids) != 1 {
		t.Fatalf("hub got %d batches from the good zip, want 1", len(ids))
	}
	f, _, err := ag.File(sha["good_lab_results.zip"])
	if err != nil || f.Rows != 2 {
		t.Fatalf("good zip: %d rows, %v; want 2", f.Rows, err)
	}

	waitFor(t, "the wrong password's zip quarantined", func() bool { return ag.status(t, sha["bad_lab_results.zip"]) == state.StatusQuarantined })
	if ids := hub.batchesOf("bad_lab_results.zip"); len(ids) != 0 {
		t.Fatalf("hub got batches %v from the quarantined zip", ids)
	}
	reason, err := os.ReadFile(filepath.Join(stateDir, "quarantine", sha["bad_lab_results.zip"][:16]+"_bad_lab_results.zip.reason.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bad_lab_results.zip!lab_results.csv", "wrong password", "lab_zip"} {
		if !strings.Contains(string(reason), want) {
			t.Errorf("quarantine reason %q does not say %q", reason, want)
		}
	}
	for _, pw := range []string{"right-pw", "other-pw"} {
		if strings.Contains(string(reason), pw) {
			t.Errorf("quarantine reason %q shows a password", reason)
		}
	}
	if !exists(filepath.Join(exports, "bad_lab_results.zip")) {
		t.Error("quarantined original was removed")
	}
}

func TestPasswordSource(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "zip_a"), []byte("pw-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	def := func(name, glob, secret string) *feed.Definition {
		return &feed.Definition{Name: name, Match: feed.Match{Glob: glob, PasswordSecret: secret}}
	}
	feeds := []*feed.Definition{
		def("by_archive", "*_export.zip", "zip_a"),
		def("by_entry", "labs_*.csv", "zip_b"),
		def("same_secret", "*.zip", "zip_a"),
		def("other", "vitals_*", "zip_c"),
		def("no_secret", "*", ""),
	}
	p := passwordSource{dir: dir, feeds: feeds}
	pws, err := p.passwords("fac_export.zip", "labs_1.csv")
	if err != nil || !slices.Equal(pws, []string{"pw-a"}) {
		t.Fatalf("passwords = %q, %v", pws, err)
	}
	note := p.note()
	if !strings.Contains(note, "tried: zip_a") || !strings.Contains(note, "missing from "+dir+": zip_b") || strings.Contains(note, "zip_c") || strings.Contains(note, "pw-a") {
		t.Errorf("note %q", note)
	}
	if note := (&passwordSource{dir: dir}).note(); !strings.Contains(note, "no feed") {
		t.Errorf("note without secrets %q", note)
	}
	if runtime.GOOS != "windows" {
		os.Chmod(filepath.Join(dir, "zip_a"), 0o644)
		if _, err := p.passwords("fac_export.zip", "x.csv"); err != nil {
			t.Errorf("a secret read once is kept for the walk, got %v", err)
		}
		fresh := passwordSource{dir: dir, feeds: feeds}
		if _, err := fresh.passwords("fac_export.zip", "x.csv"); err == nil || !strings.Contains(err.Error(), "zip_a") || errors.Is(err, errSecretMissing) {
			t.Errorf("group-readable secret: %v, want a refusal naming the file", err)
		}
	}
}

// TestAgentRefusesExposedSecret: a secret file group or others can read is not used; the
// archive is neither ingested nor quarantined but retried, and goes through once the
// file's mode is fixed.
func TestAgentRefusesExposedSecret(t *testing.T) {
	if _, err := exec.LookPath("zip"); err != nil {
		t.Fatal("the encrypted fixtures are made by Info-ZIP's zip: apt-get install zip (.ci/run does)")
	}
	if runtime.GOOS == "windows" {
		t.Skip("no unix permission bits")
	}
	fx := newAgentFixture(t, "lab_results.yaml", lockedLabFeed)
	exports, stateDir, work := fx.exports, fx.state, fx.work
	secretsDir := filepath.Join(stateDir, "secrets") // the default place
	if err := os.MkdirAll(secretsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(secretsDir, "lab_zip")
	if err := os.WriteFile(secret, []byte("right-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(work, "lab_results.csv"), []byte("lab_id,patient_id,result_value\nL1,P1,1\n"))
	cmd := exec.Command("zip", "-q", "-P", "right-pw", "x_lab_results.zip", "lab_results.csv")
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("zip: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(work, "x_lab_results.zip"))
	if err != nil {
		t.Fatal(err)
	}
	sha := hashOf(b)
	if err := os.Rename(filepath.Join(work, "x_lab_results.zip"), filepath.Join(exports, "x_lab_results.zip")); err != nil {
		t.Fatal(err)
	}

	cfg := fx.config()
	cfg.RescanInterval = 300 * time.Millisecond
	ag := startAgent(t, cfg)

	waitFor(t, "the refusal reported", func() bool { return strings.Contains(ag.Agent.status().LastError, secret) })
	if st := ag.Agent.status().LastError; !strings.Contains(st, "group or others") || strings.Contains(st, "right-pw") {
		t.Fatalf("last error %q", st)
	}
	if st := ag.status(t, sha); st != "" {
		t.Fatalf("archive is %q while its secret is refused; want it untouched and retried", st)
	}
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the archive done once the secret is private", func() bool { return ag.status(t, sha) == state.StatusDone })
}

// TestAgentRefusesFeedWithoutHashKey checks that a feed hashing a column with a secret
// the agent does not hold stops the agent from starting, naming feed, column and
// secret, instead of loading the values unhashed.
func TestAgentRefusesFeedWithoutHashKey(t *testing.T) {
	root := t.TempDir()
	feeds := filepath.Join(root, "feeds")
	if err := os.MkdirAll(feeds, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(feeds, "patients.yaml"), []byte(`name: patients
version: 1
table: patients
match: {glob: "*patients*"}
format: {type: csv}
columns:
  - {name: id, type: string, required: true}
  - {name: ssn, type: string, transforms: [trim, {hash: {secret: phi_key}}]}
`))
	cfg := DefaultConfig()
	cfg.ID, cfg.Tenant, cfg.Facility, cfg.Broker = "agent-t", "t1", "fac1", "tcp://127.0.0.1:1"
	cfg.StateDir, cfg.FeedsDir = filepath.Join(root, "state"), feeds
	cfg.Watch = []WatchConfig{{Path: root, Done: DoneKeep}}
	_, err := New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), WithRegisterer(prometheus.NewRegistry()))
	t.Logf("refused: %v", err)
	for _, want := range []string{"feed patients", `"ssn"`, "hash", `secret "phi_key"`, "no file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New error = %v, want it to say %q", err, want)
		}
	}

	secrets := filepath.Join(cfg.StateDir, "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "phi_key"), []byte("k3y-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := secretStore(secrets)("phi_key")
	if err != nil || string(key) != "k3y-value" {
		t.Fatalf("secret store = %q, %v", key, err)
	}
}
