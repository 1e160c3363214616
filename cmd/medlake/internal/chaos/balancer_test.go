package chaos

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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
