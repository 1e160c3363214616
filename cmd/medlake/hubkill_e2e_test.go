package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/deploy/local/stack"
)

// maxIngestGap is the acceptance bound: with one of two hubs killed, no span longer than
// this passes without a commit while files keep arriving.
const maxIngestGap = 10 * time.Second

// TestHubKillGap runs two ingest processes and a query process on real mosquitto, MinIO
// and PostgreSQL, with two agents taking a file every few hundred milliseconds, and
// kills one hub with SIGKILL mid-stream. The batches the dead hub held unacknowledged are
// re-sent by their agents once their ack timeout passes and committed by the other hub:
// the longest span without a commit stays under 10 s, and every row is in the lake
// exactly once.
func TestHubKillGap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers; run without -short")
	}
	s3 := stack.MinIO(t)
	dsn := stack.Postgres(t)
	brokerURL := stack.Mosquitto(t)
	bin := buildBinaries(t)
	work, genDir, m := genWorkload(t, bin, "31", "2", "40", "csv")
	env := []string{"MEDLAKE_CATALOG_S3_ACCESS_KEY=" + s3.AccessKey, "MEDLAKE_CATALOG_S3_SECRET_KEY=" + s3.SecretKey,
		"MEDLAKE_CATALOG_S3_REGION=" + s3.Region}
	common := []string{"--feeds", filepath.Join(genDir, "feeds"), "--log-format", "json", "--broker-url", brokerURL,
		"--catalog", dsn, "--warehouse", "s3://" + s3.Bucket + "/warehouse", "--s3-endpoint", s3.Endpoint}
	hubs := map[string]string{} // name → http address
	var victim *exec.Cmd
	for _, name := range []string{"hub-a", "hub-b"} {
		cfgPath := filepath.Join(work, name+".yaml")
		writeFile(t, cfgPath, "ingest:\n  client_id: "+name+"\n")
		hubs[name] = freeAddr(t)
		cmd := start(t, name, env, filepath.Join(bin, "medlake"), append([]string{"serve", "--roles=ingest", "--config", cfgPath,
			"--data-dir", filepath.Join(work, name), "--http-listen", hubs[name]}, common...)...)
		if name == "hub-a" {
			victim = cmd
		}
		waitReady(t, "http://"+hubs[name]+"/readyz")
	}
	pgAddr, queryHTTP := freeAddr(t), freeAddr(t)
	start(t, "query", env, filepath.Join(bin, "medlake"), append([]string{"serve", "--roles=query",
		"--data-dir", filepath.Join(work, "query"), "--http-listen", queryHTTP, "--pg-listen", pgAddr}, common...)...)
	waitReady(t, "http://"+queryHTTP+"/readyz")

	watchRoot := filepath.Join(work, "exports")
	for _, tn := range m.Tenants {
		for _, f := range tn.Facilities {
			startAgent(t, bin, work, e2eAgent{tenant: tn.ID, facility: f.ID, broker: brokerURL,
				feedsDir: filepath.Join(genDir, "feeds"), extra: "status_interval: 2s\n"})
		}
	}

	var files []gen.File
	for _, f := range m.Files {
		if !f.Pending {
			files = append(files, f)
		}
	}
	const every = 350 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dropped := make(chan struct{})
	go func() {
		defer close(dropped)
		for _, f := range files {
			if err := dropFile(genDir, watchRoot, f); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()

	// Let commits start on both hubs, then kill one of them.
	waitFor(ctx, t, "both hubs committing", func() bool {
		return metricSum(t, "http://"+hubs["hub-a"]+"/metrics", "medlake_hub_rows_committed_total") > 0 &&
			metricSum(t, "http://"+hubs["hub-b"]+"/metrics", "medlake_hub_rows_committed_total") > 0
	})
	lastA := metricSum(t, "http://"+hubs["hub-a"]+"/metrics", "medlake_hub_rows_committed_total")
	time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond) // somewhere in a commit cycle
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	killed := time.Now()
	t.Logf("hub-a killed with SIGKILL after committing %.0f rows", lastA)

	// The longest span without a commit by the surviving hub, from the kill to its last
	// commit, while the query node shows the rows arriving.
	var manifestRows int64
	for _, f := range files {
		manifestRows += f.Rows
	}
	conn := connect(ctx, t, pgAddr)
	tables := slices.DeleteFunc(slices.Sorted(maps.Keys(m.Tables)), func(n string) bool { return m.Tables[n].Ready.Rows == 0 })
	survivor := "http://" + hubs["hub-b"] + "/metrics"
	last, lastChange, gap := metricSum(t, survivor, "medlake_hub_rows_committed_total"), killed, time.Duration(0)
	nextCount := time.Now()
	for {
		if now := metricSum(t, survivor, "medlake_hub_rows_committed_total"); now != last {
			gap = max(gap, time.Since(lastChange))
			last, lastChange = now, time.Now()
		}
		if time.Now().After(nextCount) {
			got := total(ctx, conn, tables)
			if got > manifestRows {
				t.Fatalf("%d rows queryable, more than the %d generated: duplicates", got, manifestRows)
			}
			if got == manifestRows && isClosed(dropped) {
				break
			}
			nextCount = time.Now().Add(time.Second)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not every row queryable 10 minutes in: %d of %d", total(context.Background(), conn, tables), manifestRows)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("after the kill: longest span without a commit %s; all rows committed %s after the kill",
		gap.Round(10*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	if gap > maxIngestGap {
		t.Errorf("ingestion stalled %s with one of two hubs killed, want under %s", gap.Round(10*time.Millisecond), maxIngestGap)
	}
	checkManifest(ctx, t, conn, m, tables)
}

// isClosed reports whether c is closed, without waiting.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// metricSum sums a metric's samples over its labels from a /metrics endpoint; 0 when
// the endpoint does not answer or has none yet.
func metricSum(t *testing.T, url, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}
