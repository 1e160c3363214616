package stack

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
)

func TestMain(m *testing.M) { Main(m) }

func TestMosquitto(t *testing.T) {
	t.Parallel()
	broker := Mosquitto(t)
	if !strings.HasPrefix(broker, "tcp://127.0.0.1:") {
		t.Fatalf("broker URL %q is not tcp://127.0.0.1:PORT", broker)
	}
	c := mqttConnect(t, broker)
	got := make(chan []byte, 1)
	if tok := c.Subscribe("medlake/test", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Payload() }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing: %v", tok.Error())
	}
	if tok := c.Publish("medlake/test", 1, false, []byte("hello")); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publishing: %v", tok.Error())
	}
	if p := <-got; !bytes.Equal(p, []byte("hello")) {
		t.Fatalf("got payload %q, want hello", p)
	}
}

func TestMosquittoRestartKeepsURL(t *testing.T) {
	t.Parallel()
	srv := Start(t, NameMosquitto)
	before := srv.Get("MQTT_URL")
	srv.Stop(t)
	srv.Restart(t)
	if after := srv.Get("MQTT_URL"); after != before {
		// Only possible if another process grabbed the port meanwhile.
		t.Logf("port changed across restart: %s -> %s", before, after)
	}
	mqttConnect(t, srv.Get("MQTT_URL"))
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	a, b := Postgres(t), Postgres(t)
	if a == b {
		t.Fatalf("two calls returned the same DSN %s", a)
	}
	ctx := context.Background()
	for _, dsn := range []string{a, b} {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if u.Hostname() != "127.0.0.1" {
			t.Fatalf("DSN host %q, want 127.0.0.1", u.Hostname())
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connecting: %v", err)
		}
		if err := conn.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("fresh database has %d tables", n)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE isolation_probe (id int)"); err != nil {
			t.Fatalf("creating table: %v", err)
		}
		var version string
		if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(version, "15.") {
			t.Errorf("server_version %q, want 15.x", version)
		}
		conn.Close(ctx)
	}
}

// TestPostgresParallel: concurrent CREATE DATABASE on the shared server.
func TestPostgresParallel(t *testing.T) {
	t.Parallel()
	for i := 0; i < 6; i++ {
		t.Run("db", func(t *testing.T) {
			t.Parallel()
			conn, err := pgx.Connect(context.Background(), Postgres(t))
			if err != nil {
				t.Fatal(err)
			}
			conn.Close(context.Background())
		})
	}
}

func TestMinIO(t *testing.T) {
	t.Parallel()
	for _, drives := range []int{1, 4} {
		s3 := MinIODrives(t, drives)
		other := MinIODrives(t, drives)
		if s3.Bucket == other.Bucket {
			t.Fatalf("two calls returned bucket %s", s3.Bucket)
		}
		c, err := s3.Client()
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		ok, err := c.BucketExists(ctx, s3.Bucket)
		if err != nil || !ok {
			t.Fatalf("%d drives: bucket %s exists = %v, %v", drives, s3.Bucket, ok, err)
		}
		body := []byte("patient-free payload")
		if _, err := c.PutObject(ctx, s3.Bucket, "a/b.bin", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put: %v", err)
		}
		n := 0
		for obj := range c.ListObjects(ctx, other.Bucket, minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err != nil {
				t.Fatal(obj.Err)
			}
			n++
		}
		if n != 0 {
			t.Fatalf("bucket %s sees %d objects written to %s", other.Bucket, n, s3.Bucket)
		}
	}
}

func TestUniqueName(t *testing.T) {
	for _, tc := range []struct{ in, sep string }{
		{"TestX", "_"},
		{"TestPostgres/sub_case#01", "_"},
		{strings.Repeat("VeryLongName", 20), "-"},
		{"///", "-"},
	} {
		got := uniqueName(tc.in, tc.sep, 63)
		if len(got) > 63 || len(got) < 3 || got[0] < 'a' || got[0] > 'z' {
			t.Errorf("uniqueName(%q) = %q: not a valid database/bucket name", tc.in, got)
		}
		for _, r := range got {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || string(r) == tc.sep) {
				t.Errorf("uniqueName(%q) = %q: has %q", tc.in, got, r)
			}
		}
	}
}

func TestParseEnv(t *testing.T) {
	env, err := parseEnv([]byte("# comment\nA=1\n\nB=x=y\n"))
	if err != nil || env["A"] != "1" || env["B"] != "x=y" {
		t.Fatalf("parseEnv = %v, %v", env, err)
	}
	for _, bad := range []string{"", "novalue\n", "=x\n"} {
		if _, err := parseEnv([]byte(bad)); err == nil {
			t.Errorf("parseEnv(%q) succeeded", bad)
		}
	}
}

func mqttConnect(t testing.TB, broker string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(uniqueName(t.Name(), "-", 23)).SetConnectTimeout(30 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connecting to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(250) })
	return c
}

func FuzzParseEnv(f *testing.F) {
	f.Add([]byte("PG_DSN=postgres://u:p@127.0.0.1:5432/db?sslmode=disable\nPG_PORT=5432\n"))
	f.Add([]byte("# c\n\nA==\n"))
	f.Add([]byte("=\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		env, err := parseEnv(out)
		if err != nil {
			return
		}
		if len(env) == 0 {
			t.Fatal("no error and no keys")
		}
		for k := range env {
			if k == "" || strings.ContainsAny(k, "\n=") {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}
