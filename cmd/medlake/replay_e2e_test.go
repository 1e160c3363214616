package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/cmd/medlake/internal/gen"
	"github.com/medlake/medlake/deploy/local/stack"
	"github.com/medlake/medlake/protocol"
)

// TestReplayEndToEnd ingests a workload through real mosquitto, MinIO and PostgreSQL,
// with archives both smaller and larger than one archive chunk, and checks that every
// source file is kept in the warehouse under its SHA-256 and indexed by feed. It then
// applies a new version of one feed that adds a column and runs `medlake replay` twice:
// the table gains the column, filled for every row of the replayed feed, and holds
// exactly the manifest's rows after each run (nothing added, nothing lost).
func TestReplayEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers; run without -short")
	}
	s3 := stack.MinIO(t)
	dsn := stack.Postgres(t)
	brokerURL := stack.Mosquitto(t)
	bin := buildBinaries(t)
	work := t.TempDir()
	genDir := filepath.Join(work, "gen")
	runCmd(t, exec.Command(filepath.Join(bin, "medlake"), "gen", "--out", genDir, "--seed", "7",
		"--facilities", "2", "--files-per-facility", "4", "--formats", "csv", "--max-bytes", "1600000", "--quiet"))
	m, err := gen.ReadManifest(filepath.Join(genDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var files []gen.File
	chunked := 0
	for _, f := range m.Files {
		if !f.Pending {
			files = append(files, f)
			if f.Bytes > protocol.ArchiveChunkBytes {
				chunked++
			}
		}
	}
	if chunked == 0 {
		t.Fatalf("the workload has no archive over %d bytes; the test needs one sent in several chunks", protocol.ArchiveChunkBytes)
	}

	env := []string{"MEDLAKE_CATALOG_S3_ACCESS_KEY=" + s3.AccessKey, "MEDLAKE_CATALOG_S3_SECRET_KEY=" + s3.SecretKey,
		"MEDLAKE_CATALOG_S3_REGION=" + s3.Region}
	lake := []string{"--catalog", dsn, "--warehouse", "s3://" + s3.Bucket + "/warehouse", "--s3-endpoint", s3.Endpoint}
	pgAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "serve", env, filepath.Join(bin, "medlake"), append([]string{"serve", "--roles=ingest,query",
		"--feeds", filepath.Join(genDir, "feeds"), "--log-format", "json", "--broker-url", brokerURL,
		"--data-dir", filepath.Join(work, "serve"), "--http-listen", httpAddr, "--pg-listen", pgAddr}, lake...)...)
	waitReady(t, "http://"+httpAddr+"/readyz")

	watchRoot := filepath.Join(work, "exports")
	for _, tn := range m.Tenants {
		for _, f := range tn.Facilities {
			startAgent(t, bin, work, e2eAgent{tenant: tn.ID, facility: f.ID, broker: brokerURL,
				feedsDir: filepath.Join(genDir, "feeds"), extra: "status_interval: 2s\n"})
		}
	}
	for _, f := range files {
		if err := dropFile(genDir, watchRoot, f); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	conn := connect(ctx, t, pgAddr)
	tables := slices.DeleteFunc(slices.Sorted(maps.Keys(m.Tables)), func(n string) bool { return m.Tables[n].Ready.Rows == 0 })
	var manifestRows int64
	for _, f := range files {
		manifestRows += f.Rows
	}
	waitTotal(ctx, t, conn, tables, manifestRows)
	checkManifest(ctx, t, conn, m, tables)

	// Every source file is in the warehouse under its SHA-256, with that content, and
	// indexed under its feed. The agent marks a file done only once the hub stored it.
	client, err := s3.Client()
	if err != nil {
		t.Fatal(err)
	}
	pg, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	for _, f := range files {
		key := "warehouse/" + catalog.ArchiveKey(f.SHA256)
		obj, err := client.GetObject(ctx, s3.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("archive of %s: %v", f.Path, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, obj)
		obj.Close()
		if err != nil {
			t.Fatalf("reading archive of %s from %s: %v", f.Path, key, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 || n != f.Bytes {
			t.Errorf("archive of %s: %d bytes hashing to %s, want %d bytes, %s", f.Path, n, got, f.Bytes, f.SHA256)
		}
		var feedName string
		if err := pg.QueryRow(ctx, `SELECT feed FROM medlake_archives WHERE sha256 = $1`, f.SHA256).Scan(&feedName); err != nil || feedName != f.Feed {
			t.Errorf("archive index of %s: feed %q (%v), want %q", f.Path, feedName, err, f.Feed)
		}
	}
	for obj := range client.ListObjects(ctx, s3.Bucket, minio.ListObjectsOptions{Prefix: "warehouse/raw/parts/", Recursive: true}) {
		t.Errorf("chunk left behind after its archive was assembled: %s (%v)", obj.Key, obj.Err)
	}
	t.Logf("%d archives stored and verified, %d of them sent in several chunks", len(files), chunked)

	// The feed with the most files gets a version 2 with one more column, derived from
	// its key column.
	perFeed := map[string]int{}
	for _, f := range files {
		perFeed[f.Feed]++
	}
	feedName := slices.MaxFunc(slices.Sorted(maps.Keys(perFeed)), func(a, b string) int { return perFeed[a] - perFeed[b] })
	var tableName string
	var feedRows int64
	for _, f := range files {
		if f.Feed == feedName {
			tableName, feedRows = f.Table, feedRows+f.Rows
		}
	}
	keyCol := m.Tables[tableName].Keys[0]
	v1, err := os.ReadFile(filepath.Join(genDir, "feeds", feedName+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	v2 := strings.Replace(string(v1), "\nversion: 1\n", "\nversion: 2\n", 1)
	v2 = strings.TrimRight(v2, "\n") + fmt.Sprintf("\n  - {name: replay_key, type: string, source: %s, transforms: [lower]}\n", keyCol)
	v2Path := filepath.Join(work, feedName+"-v2.yaml")
	writeFile(t, v2Path, v2)
	runCmd(t, exec.Command(filepath.Join(bin, "medlake"), "feeds", "apply", "--catalog", dsn, "-f", v2Path))

	for run := 1; run <= 2; run++ {
		cmd := exec.Command(filepath.Join(bin, "medlake"), append([]string{"replay", "--feed", feedName, "--since", "1h", "--quiet"}, lake...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("replay run %d: %v\n%s", run, err, out)
		}
		t.Logf("replay run %d: %s", run, strings.TrimSpace(string(out)))
		if want := fmt.Sprintf("%d archives found, %d replayed, %d rows", perFeed[feedName], perFeed[feedName], feedRows); !strings.Contains(string(out), want) {
			t.Fatalf("replay run %d says %q, want it to contain %q", run, out, want)
		}
		// The query node sees the replay's snapshot within its refresh; then the table
		// holds the manifest's rows, the replayed ones with the new column.
		q := fmt.Sprintf("SELECT count(*) FROM %s WHERE _feed = '%s' AND _feed_version = 2 AND replay_key = lower(%s)", tableName, feedName, keyCol)
		waitFor(ctx, t, fmt.Sprintf("replay run %d visible", run), func() bool {
			var n int64
			return conn.QueryRow(ctx, q).Scan(&n) == nil && n == feedRows
		})
		if got := total(ctx, conn, tables); got != manifestRows {
			t.Errorf("after replay run %d: %d rows in the lake, want the manifest's %d", run, got, manifestRows)
		}
		checkManifest(ctx, t, conn, m, tables)
	}
}
