package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// minioHost is the name every MinIO node calls the others by. MinIO refuses a
// distributed setup whose endpoints all resolve to loopback in a container, so each
// node runs in its own mount namespace (unshare -m) with a hosts file, bind-mounted
// over /etc/hosts, in which the name resolves to 127.0.0.1 first and to a documentation
// address (RFC 5737, never local, never dialled: 127.0.0.1 answers first) second.
const minioHost = "medlake-minio"

const minioHosts = "127.0.0.1 localhost\n127.0.0.1 " + minioHost + "\n198.51.100.7 " + minioHost + "\n"

// minioCluster is four MinIO server processes on loopback forming one erasure set
// (one drive each: EC 2, so reads and writes keep quorum with one node down), and the
// balancer clients reach them through.
type minioCluster struct {
	nodes     []*proc
	ports     []int
	accessKey string
	secretKey string
	region    string
	bucket    string
	lb        *balancer
}

// minioBinary finds the pinned MinIO server built by deploy/local (lib.sh,
// ensure_minio_binary).
func minioBinary() (string, error) {
	dir := os.Getenv("MEDLAKE_TOOLS")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("finding the MinIO binary: %w", err)
		}
		dir = filepath.Join(home, ".cache", "medlake", "bin")
	}
	bin := filepath.Join(dir, "minio")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no MinIO server at %s (build it with: bash -c 'source deploy/local/lib.sh; ensure_minio_binary'): %w", bin, err)
	}
	return bin, nil
}

// startMinIO starts a four-node MinIO under dir and a balancer in front of it, and
// creates the bucket.
func startMinIO(ctx context.Context, dir string, logger *slog.Logger) (*minioCluster, error) {
	bin, err := minioBinary()
	if err != nil {
		return nil, err
	}
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte(minioHosts), 0o644); err != nil {
		return nil, fmt.Errorf("writing MinIO hosts file: %w", err)
	}
	c := &minioCluster{accessKey: "medlake", secretKey: "chaos-" + randomHex(12), region: "us-east-1", bucket: "medlake"}
	const n = 4
	endpoints := make([]string, n)
	for i := range n {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.ports = append(c.ports, port)
		drive := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		if err := os.MkdirAll(drive, 0o755); err != nil {
			return nil, fmt.Errorf("creating MinIO drive: %w", err)
		}
		endpoints[i] = fmt.Sprintf("http://%s:%d%s", minioHost, port, drive)
	}
	for i := range n {
		script := fmt.Sprintf("mount --bind %s /etc/hosts && exec %s server --quiet --address 127.0.0.1:%d %s",
			hosts, bin, c.ports[i], strings.Join(endpoints, " "))
		c.nodes = append(c.nodes, &proc{
			name: fmt.Sprintf("minio-%d", i+1),
			path: "unshare",
			args: []string{"-m", "sh", "-c", script},
			env: []string{"MINIO_ROOT_USER=" + c.accessKey, "MINIO_ROOT_PASSWORD=" + c.secretKey,
				"MINIO_REGION=" + c.region, "MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1"},
			log: filepath.Join(dir, fmt.Sprintf("minio-%d.log", i+1)),
			// live, not ready: a node that is not ready waits for the others, which
			// start together with it; a restarted node's readiness is the balancer's
			// business.
			ready: httpOK(fmt.Sprintf("http://127.0.0.1:%d/minio/health/live", c.ports[i])),
		})
	}
	// The nodes wait for each other, so start them together.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range c.nodes {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			errs[i] = p.start(sctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.close()
		return nil, err
	}
	backends := make([]string, n)
	for i, p := range c.ports {
		backends[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	c.lb, err = newBalancer(backends, logger)
	if err != nil {
		c.close()
		return nil, err
	}
	if err := c.makeBucket(ctx); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// Endpoint is the balancer's URL.
func (c *minioCluster) Endpoint() string { return "http://" + c.lb.Addr() }

func (c *minioCluster) makeBucket(ctx context.Context) error {
	cl, err := minio.New(c.lb.Addr(), &minio.Options{Creds: credentials.NewStaticV4(c.accessKey, c.secretKey, ""), Region: c.region})
	if err != nil {
		return fmt.Errorf("creating S3 client: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err = cl.MakeBucket(ctx, c.bucket, minio.MakeBucketOptions{Region: c.region})
		if err != nil {
			// An attempt that failed for want of quorum may still have made it.
			if ok, eerr := cl.BucketExists(ctx, c.bucket); eerr == nil && ok {
				err = nil
			}
		}
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond) // quorum forms a moment after every node is live
	}
	if err != nil {
		return fmt.Errorf("creating bucket %s on the MinIO cluster: %w", c.bucket, err)
	}
	return nil
}

func (c *minioCluster) node(name string) (*proc, error) {
	for _, p := range c.nodes {
		if p.name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no MinIO node %q", name)
}

// readyURL is node's readiness check.
func (c *minioCluster) readyURL(node *proc) string {
	for i, p := range c.nodes {
		if p == node {
			return fmt.Sprintf("http://127.0.0.1:%d/minio/health/ready", c.ports[i])
		}
	}
	return ""
}

func (c *minioCluster) close() {
	if c.lb != nil {
		c.lb.Close()
	}
	for _, p := range c.nodes {
		_ = p.stop(syscall.SIGTERM, 20*time.Second)
	}
}

// balancer is a TCP proxy on 127.0.0.1 in front of the MinIO nodes: each connection
// goes to the next healthy node in turn, so clients (hubs, the query node) keep one
// endpoint and survive a node going down. A node is healthy while its
// /minio/health/ready answers 200 (checked every 500 ms), as a load balancer in front
// of MinIO checks it; a node just restarted is live before it is ready, and answers
// reads wrongly (object not found) until it is. When no node is healthy, any node that
// accepts the connection gets it. A connection open to a node that dies fails; the S3
// clients retry, and their next connection goes elsewhere.
type balancer struct {
	ln       net.Listener
	backends []string
	healthy  []atomic.Bool // per backend, set by the health loop
	logger   *slog.Logger
	next     atomic.Uint64
	stop     chan struct{} // closed by Close: ends the health loop and the accept loop's pauses

	wg     sync.WaitGroup // the accept loop and every connection's copiers
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu; open client and backend connections
	closed bool                  // guarded by mu
}

func newBalancer(backends []string, logger *slog.Logger) (*balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting MinIO balancer: %w", err)
	}
	b := &balancer{ln: ln, backends: backends, healthy: make([]atomic.Bool, len(backends)), logger: logger,
		stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	b.checkHealth(&http.Client{Timeout: time.Second})
	b.wg.Go(b.healthLoop)
	b.wg.Go(b.accept)
	return b, nil
}

func (b *balancer) healthLoop() {
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-b.stop:
			return
		case <-time.After(500 * time.Millisecond):
		}
		b.checkHealth(client)
	}
}

func (b *balancer) checkHealth(client *http.Client) {
	var wg sync.WaitGroup
	for i, addr := range b.backends {
		wg.Go(func() {
			resp, err := client.Get("http://" + addr + "/minio/health/ready")
			ok := err == nil && resp.StatusCode == http.StatusOK
			if err == nil {
				resp.Body.Close()
			}
			b.healthy[i].Store(ok)
		})
	}
	wg.Wait()
}

// pick returns backends in the order to try: healthy ones from the next in turn, then
// the others.
func (b *balancer) pick() []string {
	start := int(b.next.Add(1))
	var good, rest []string
	for i := range b.backends {
		j := (start + i) % len(b.backends)
		if b.healthy[j].Load() {
			good = append(good, b.backends[j])
		} else {
			rest = append(rest, b.backends[j])
		}
	}
	return append(good, rest...)
}

func (b *balancer) Addr() string { return b.ln.Addr().String() }

// accept hands each connection to serve until the listener is closed. A failed accept
// that is not the listener closing, such as running out of file descriptors (each
// proxied connection holds two sockets and, while copying, two splice pipes), is
// retried after a pause, as net/http's Server does: the listener stays open whatever
// happens, so giving up would leave every later client connected to nothing, its
// request never answered.
func (b *balancer) accept() {
	var pause time.Duration
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			b.logger.Warn("MinIO balancer: accepting a connection failed; retrying", "err", err, "pause", pause)
			select {
			case <-b.stop:
				return
			case <-time.After(pause):
			}
			continue
		}
		pause = 0
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Go(func() { b.serve(c) })
	}
}

func (b *balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *balancer) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	c.Close()
}

func (b *balancer) serve(client net.Conn) {
	defer b.untrack(client)
	var backend net.Conn
	for _, addr := range b.pick() {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			backend = c
			break
		}
	}
	if backend == nil {
		b.logger.Warn("no MinIO node accepts connections")
		return
	}
	if !b.track(backend) {
		backend.Close()
		return
	}
	defer b.untrack(backend)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	<-done
	<-done
}

// Close stops accepting, closes every open connection and waits for the copiers.
// Safe to call twice.
func (b *balancer) Close() {
	b.mu.Lock()
	already := b.closed
	b.closed = true
	if !already {
		close(b.stop)
	}
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	if !already {
		b.ln.Close()
	}
	b.wg.Wait()
}
