package catalog

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apache/iceberg-go"

	"github.com/medlake/medlake/deploy/local/stack"
)

// TestObjectStoreSharesConnections: table loads and archive lookups under
// WithObjectStore reuse a few connections to MinIO, where each load used to open its
// own and leave it idle for 90 s (thousands of connections in a steady run, enough to
// exhaust the file descriptors of the balancer in front of the store).
func TestObjectStoreSharesConnections(t *testing.T) {
	s3 := stack.MinIO(t)
	fwd := newCountingForwarder(t, s3.Endpoint)
	ctx := t.Context()
	c, err := Open(ctx, Config{URI: "sqlite://" + filepath.Join(t.TempDir(), "c.db"), Warehouse: "s3://" + s3.Bucket + "/lake",
		S3Endpoint: "http://" + fwd.addr(), S3Region: s3.Region, S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := iceberg.NewSchema(0, iceberg.NestedField{ID: 1, Name: "v", Type: iceberg.PrimitiveTypes.String})
	if _, err := c.Iceberg().CreateTable(ctx, c.TableIdent("conns"), sc); err != nil {
		t.Fatal(err)
	}
	st, err := c.Archives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	const loads = 40
	run := func(ctx context.Context) int64 {
		before := fwd.accepted.Load()
		for range loads {
			if _, err := c.Iceberg().LoadTable(ctx, c.TableIdent("conns")); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Has(ctx, "0000000000000000000000000000000000000000000000000000000000000000"); err != nil {
				t.Fatal(err)
			}
		}
		return fwd.accepted.Load() - before
	}
	unshared := run(ctx)
	shared := run(c.WithObjectStore(ctx))
	t.Logf("%d table loads and archive lookups: %d new connections without WithObjectStore, %d with", loads, unshared, shared)
	if shared > 2 {
		t.Errorf("%d table loads and archive lookups under WithObjectStore opened %d connections, want at most 2", loads, shared)
	}
}

// countingForwarder is a TCP forwarder to one address that counts the connections it
// accepts.
type countingForwarder struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn // guarded by mu
}

func newCountingForwarder(t testing.TB, endpoint string) *countingForwarder {
	t.Helper()
	target := endpoint[len("http://"):]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &countingForwarder{ln: ln}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, b)
			f.mu.Unlock()
			for _, p := range [][2]net.Conn{{c, b}, {b, c}} {
				f.wg.Go(func() {
					if _, err := io.Copy(p[0], p[1]); err != nil && !errors.Is(err, net.ErrClosed) {
						t.Logf("forwarding: %v", err)
					}
					p[0].Close()
					p[1].Close()
				})
			}
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *countingForwarder) addr() string { return f.ln.Addr().String() }
