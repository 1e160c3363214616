package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
)

// visitsFeed is a feed whose version 2 reads the patient from another source column,
// so a file in the new layout is readable only with the new version.
func visitsFeed(version int, patientSource string) string {
	return fmt.Sprintf(`name: visits_csv
version: %d
table: visits
match:
  glob: "*visits*.csv"
format:
  type: csv
columns:
  - {name: visit_id, type: string, required: true}
  - {name: patient_id, type: string, source: %s, required: true}
`, version, patientSource)
}

// TestFeedPushEndToEnd runs medlake serve on real mosquitto, PostgreSQL and MinIO with an
// agent that has no local feeds: the agent runs what the hub pushes from the catalog.
// A new version applied with `medlake feeds apply -f` while both run reaches the agent,
// and its next file is ingested with that version (_feed_version read over pgwire).
func TestFeedPushEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers; run without -short")
	}
	s3 := stack.MinIO(t)
	brokerURL, catalogURI := stack.Mosquitto(t), stack.Postgres(t)
	bin := buildBinaries(t)
	work := t.TempDir()
	seed := filepath.Join(work, "seed")
	exports := filepath.Join(work, "exports")
	for _, d := range []string{seed, exports} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(seed, "visits.yaml"), visitsFeed(1, "patient"))

	pgAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "serve", []string{"MEDLAKE_CATALOG_S3_ACCESS_KEY=" + s3.AccessKey, "MEDLAKE_CATALOG_S3_SECRET_KEY=" + s3.SecretKey,
		"MEDLAKE_CATALOG_S3_REGION=" + s3.Region, "MEDLAKE_INGEST_FEEDS_POLL_INTERVAL=500ms"},
		filepath.Join(bin, "medlake"), "serve", "--data-dir", filepath.Join(work, "hub"), "--feeds", seed,
		"--broker-url", brokerURL, "--catalog", catalogURI, "--warehouse", "s3://"+s3.Bucket+"/warehouse", "--s3-endpoint", s3.Endpoint,
		"--pg-listen", pgAddr, "--http-listen", httpAddr, "--log-format", "json")
	waitReady(t, "http://"+httpAddr+"/readyz")

	statuses := watchStatuses(t, brokerURL)
	cfgPath := filepath.Join(work, "agent.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`id: agent-push
tenant: t1
facility: fac1
broker: %s
state_dir: %s
watch:
  - path: %s
quiet_period: 300ms
rescan_interval: 1s
status_interval: 1s
`, brokerURL, filepath.Join(work, "state"), exports))
	start(t, "agent", nil, filepath.Join(bin, "medlake-agent"), "run", "--config", cfgPath, "--log-format", "json")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn := connect(ctx, t, pgAddr)
	feedVersion := func(visit string) func() bool {
		return func() bool {
			var v int64
			err := conn.QueryRow(ctx, "SELECT _feed_version FROM visits WHERE visit_id = $1", visit).Scan(&v)
			return err == nil && v > 0
		}
	}
	versionOf := func(visit string) int64 {
		var v int64
		if err := conn.QueryRow(ctx, "SELECT _feed_version FROM visits WHERE visit_id = $1", visit).Scan(&v); err != nil {
			t.Fatalf("reading _feed_version of %s: %v", visit, err)
		}
		return v
	}

	writeFile(t, filepath.Join(exports, "visits_1.csv"), "visit_id,patient\nV1,P1\n")
	waitFor(ctx, t, "visit V1 queryable", feedVersion("V1"))
	if v := versionOf("V1"); v != 1 {
		t.Fatalf("V1 ingested with feed version %d, want 1", v)
	}

	v2 := filepath.Join(work, "visits_v2.yaml")
	writeFile(t, v2, visitsFeed(2, "patient_no"))
	applied := time.Now()
	runCmd(t, exec.Command(filepath.Join(bin, "medlake"), "feeds", "apply", "--data-dir", filepath.Join(work, "cli"),
		"--catalog", catalogURI, "-f", v2))
	waitFor(ctx, t, "the agent running visits_csv version 2", func() bool { return statuses.running("visits_csv", 2) })
	t.Logf("version 2 running at the agent %s after feeds apply", time.Since(applied).Round(time.Millisecond))

	writeFile(t, filepath.Join(exports, "visits_2.csv"), "visit_id,patient_no\nV2,P2\n")
	waitFor(ctx, t, "visit V2 queryable", feedVersion("V2"))
	if v := versionOf("V2"); v != 2 {
		t.Fatalf("V2 ingested with feed version %d, want 2", v)
	}
	var patient string
	if err := conn.QueryRow(ctx, "SELECT patient_id FROM visits WHERE visit_id = 'V2'").Scan(&patient); err != nil || patient != "P2" {
		t.Fatalf("V2 patient_id = %q, %v; want P2 read through version 2's mapping", patient, err)
	}
}

// statusLog follows agents' retained status on the broker.
type statusLog struct {
	mu   sync.Mutex
	last map[string]protocol.Status // by agent
}

func watchStatuses(t *testing.T, brokerURL string) *statusLog {
	t.Helper()
	l := &statusLog{last: map[string]protocol.Status{}}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("e2e-status").SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connecting to %s: %v", brokerURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(protocol.HubStatusSubscription, 1, func(_ mqtt.Client, msg mqtt.Message) {
		if s, err := protocol.DecodeStatus(msg.Payload()); err == nil {
			l.mu.Lock()
			l.last[s.Agent] = s
			l.mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return l
}

// running reports whether an agent's latest status says it runs feed at version.
func (l *statusLog) running(feed string, version int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.last {
		if s.Config == nil {
			continue
		}
		for _, f := range s.Config.Feeds {
			if f.Name == feed && f.Version == version {
				return true
			}
		}
	}
	return false
}
