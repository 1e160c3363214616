package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeNode is an HTTP server standing in for a MinIO node: it says who it is and
// answers /minio/health/ready as told.
func fakeNode(t *testing.T, name string, ready *atomic.Bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/minio/health/ready" && !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestBalancerFakeNodes: connections go round the healthy nodes, skip one that is
// not ready, and skip one that is gone.
func TestBalancerFakeNodes(t *testing.T) {
	var readyA, readyB, readyC atomic.Bool
	readyA.Store(true)
	readyB.Store(true)
	readyC.Store(true)
	a, b := fakeNode(t, "a", &readyA), fakeNode(t, "b", &readyB)
	c := fakeNode(t, "c", &readyC)
	lb, err := newBalancer([]string{a.Listener.Addr().String(), b.Listener.Addr().String(), c.Listener.Addr().String()},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	get := func() string {
		// A new connection per request: the balancer picks per connection.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := client.Get("http://" + lb.Addr() + "/x")
		if err != nil {
			t.Fatalf("through the balancer: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	seen := func(n int) map[string]int {
		m := map[string]int{}
		for range n {
			m[get()]++
		}
		return m
	}
	if m := seen(9); m["a"] != 3 || m["b"] != 3 || m["c"] != 3 {
		t.Errorf("all healthy: %v, want 3 each", m)
	}

	readyB.Store(false)
	time.Sleep(1200 * time.Millisecond) // two health rounds
	if m := seen(6); m["b"] != 0 || m["a"]+m["c"] != 6 {
		t.Errorf("b not ready: %v, want none to b", m)
	}

	c.Close() // gone: refuses connections
	time.Sleep(1200 * time.Millisecond)
	if m := seen(4); m["a"] != 4 {
		t.Errorf("b not ready, c gone: %v, want all to a", m)
	}

	readyA.Store(false) // nothing ready: any node that accepts
	time.Sleep(1200 * time.Millisecond)
	if m := seen(4); m["a"]+m["b"] != 4 {
		t.Errorf("none ready: %v, want answers from a or b", m)
	}

	lb.Close()
	lb.Close()
	if _, err := net.DialTimeout("tcp", lb.Addr(), time.Second); err == nil {
		t.Error("the balancer accepts connections after Close")
	}
}

// TestBalancerOutOfFileDescriptors: a balancer that runs out of file descriptors
// serves again once connections close. It used to stop accepting for good on the
// first failed accept while its listener stayed open, so every later client connected
// to nothing and waited for an answer that never came (object store requests that
// never returned, in long steady runs with thousands of proxied connections).
func TestBalancerOutOfFileDescriptors(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	node := fakeNode(t, "a", &ready)
	var warned atomic.Int64
	logger := slog.New(countingHandler{n: &warned, Handler: slog.DiscardHandler})
	lb, err := newBalancer([]string{node.Listener.Addr().String()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()

	// A few connections proxied and kept open, then a limit on open files that leaves
	// one descriptor free: the next client's socket takes it, and the balancer's
	// accept of that connection fails.
	keep := &http.Transport{MaxIdleConnsPerHost: 8}
	defer keep.CloseIdleConnections()
	var held []*http.Response
	for range 4 {
		// Bodies left unread keep each request's connection busy, so each has its own.
		resp, err := (&http.Client{Transport: keep, Timeout: 5 * time.Second}).Get("http://" + lb.Addr() + "/x")
		if err != nil {
			t.Fatalf("through the balancer: %v", err)
		}
		held = append(held, resp)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd") // its own descriptor is closed again on return
	if err != nil {
		t.Skipf("counting open files: %v", err)
	}
	low := lim
	low.Cur = uint64(len(open))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("lowering the open file limit: %v", err)
	}
	restore := func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) }
	defer restore()
	extra, err := net.DialTimeout("tcp", lb.Addr(), time.Second)
	if err != nil {
		restore()
		t.Fatalf("dialling the balancer with one descriptor left: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // the balancer's accept fails meanwhile
	extra.Close()
	for _, r := range held {
		r.Body.Close()
	}
	keep.CloseIdleConnections()
	restore()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + lb.Addr() + "/x")
	if err != nil {
		t.Fatalf("through the balancer after it ran out of file descriptors: %v", err)
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); string(body) != "a" {
		t.Errorf("through the balancer: %q, want the node's answer", body)
	}
	if warned.Load() == 0 {
		t.Error("the balancer logged no failed accept: the test did not run it out of descriptors")
	}
}

// countingHandler counts records at level Warn and above.
type countingHandler struct {
	n *atomic.Int64
	slog.Handler
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}
