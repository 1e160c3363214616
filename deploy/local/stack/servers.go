package stack

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 says how to reach a bucket on MinIO. The bucket exists and is empty.
type S3 struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
}

// Mosquitto starts a broker of the test's own and returns its URL,
// tcp://127.0.0.1:PORT. It is stopped at t.Cleanup. Use Start(t,
// NameMosquitto) to stop and restart it within the test.
func Mosquitto(t testing.TB) string {
	t.Helper()
	return Start(t, NameMosquitto).Get("MQTT_URL")
}

// Postgres returns the DSN of a fresh, empty database of the test's own on
// the test binary's shared PostgreSQL 15 server, as the server's superuser.
// The database is dropped at t.Cleanup.
func Postgres(t testing.TB) string {
	t.Helper()
	skipShort(t, NamePostgres)
	srv := shared.get(t, NamePostgres)
	admin := srv.Get("PG_DSN")
	db := uniqueName(t.Name(), "_", 63)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pgExec(ctx, admin, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		t.Fatalf("creating database %s: %v", db, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE: a test that leaked a connection must not fail the next one.
		if err := pgExec(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping database %s: %v", db, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parsing PG_DSN from postgres.sh: %v", err)
	}
	u.Path = "/" + db
	return u.String()
}

// MinIO returns a fresh, empty bucket of the test's own on the test binary's
// shared single-drive MinIO server. The bucket and its objects are removed
// at t.Cleanup.
func MinIO(t testing.TB) S3 {
	t.Helper()
	return MinIODrives(t, 1)
}

// MinIODrives is MinIO on a shared server with the given number of drives:
// 1, or 4 for an erasure-coded set in one process.
func MinIODrives(t testing.TB, drives int) S3 {
	t.Helper()
	skipShort(t, NameMinIO)
	if drives != 1 && drives != 4 {
		t.Fatalf("MinIODrives: drives must be 1 or 4, not %d", drives)
	}
	srv := shared.get(t, NameMinIO, fmt.Sprintf("MINIO_DRIVES=%d", drives))
	s3 := S3{
		Endpoint:  srv.Get("S3_ENDPOINT"),
		Region:    srv.Get("S3_REGION"),
		AccessKey: srv.Get("S3_ACCESS_KEY"),
		SecretKey: srv.Get("S3_SECRET_KEY"),
		Bucket:    uniqueName(t.Name(), "-", 63),
	}
	client, err := s3.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := client.MakeBucket(ctx, s3.Bucket, minio.MakeBucketOptions{Region: s3.Region}); err != nil {
		t.Fatalf("creating bucket %s on %s: %v", s3.Bucket, s3.Endpoint, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// ForceDelete is MinIO's recursive delete: one call, however many objects.
		if err := client.RemoveBucketWithOptions(ctx, s3.Bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			t.Errorf("removing bucket %s: %v", s3.Bucket, err)
		}
	})
	return s3
}

// Client returns a minio-go client for the server holding the bucket.
func (s S3) Client() (*minio.Client, error) {
	u, err := url.Parse(s.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("parsing S3 endpoint %q: %w", s.Endpoint, err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure: u.Scheme == "https",
		Region: s.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("creating S3 client for %s: %w", s.Endpoint, err)
	}
	return c, nil
}

// Main runs the tests and then stops the shared servers before exiting,
// instead of leaving that to the watchdogs. Call it from TestMain:
//
//	func TestMain(m *testing.M) { stack.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := shared.close(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping shared test servers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// shared holds the servers one test binary shares across its tests. It is
// process-wide by nature: a server outlives any single test, and the
// watchdogs tie its life to this process.
var shared = &registry{m: make(map[string]*sharedServer)}

type registry struct {
	mu sync.Mutex
	m  map[string]*sharedServer // guarded by mu; key is name plus extra env
}

type sharedServer struct {
	once sync.Once
	srv  *Server
	err  error
}

func (r *registry) get(t testing.TB, name string, extraEnv ...string) *Server {
	t.Helper()
	key := name + " " + strings.Join(extraEnv, " ")
	r.mu.Lock()
	e, ok := r.m[key]
	if !ok {
		e = &sharedServer{}
		r.m[key] = e
	}
	r.mu.Unlock()
	// Outside r.mu: starting MinIO takes seconds and must not block PostgreSQL.
	e.once.Do(func() { e.srv, e.err = startServer(name, extraEnv) })
	if e.err != nil {
		t.Fatalf("starting shared %s: %v", name, e.err)
	}
	return e.srv
}

func (r *registry) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for key, e := range r.m {
		if e.srv != nil {
			errs = append(errs, e.srv.close())
		}
		delete(r.m, key)
	}
	return errors.Join(errs...)
}

func pgExec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", redactDSN(dsn), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

var nameSeq atomic.Uint64

var notAlnum = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName turns a test name into a database or bucket name: lowercase
// alphanumerics joined by sep, a per-process counter and the pid (several test
// binaries may share nothing, but the pid keeps logs unambiguous), at most max
// bytes, starting with a letter.
func uniqueName(testName, sep string, max int) string {
	suffix := fmt.Sprintf("%s%d%s%d", sep, os.Getpid(), sep, nameSeq.Add(1))
	base := strings.Trim(notAlnum.ReplaceAllString(strings.ToLower(testName), sep), sep)
	if base == "" {
		base = "t"
	}
	base = "t" + sep + base
	if len(base) > max-len(suffix) {
		base = strings.TrimRight(base[:max-len(suffix)], sep)
	}
	return base + suffix
}
