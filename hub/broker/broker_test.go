package broker

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// startBroker runs a broker until the test ends and returns it once it listens.
func startBroker(t testing.TB, cfg Config) (*Broker, func()) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	b, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-b.Ready()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return b, stop
}

func connect(t testing.TB, url, id, user, pass string, clean bool, onMsg paho.MessageHandler) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second)
	if onMsg != nil {
		o.SetDefaultPublishHandler(onMsg)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	tok.Wait()
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func TestAuth(t *testing.T) {
	open, _ := startBroker(t, Config{})
	locked, _ := startBroker(t, Config{Users: []User{{Username: "agent1", Password: "s3cret"}, {Username: "hub", Password: "h"}}})
	tests := []struct {
		name       string
		b          *Broker
		user, pass string
		wantOK     bool
	}{
		{"loopback without users", open, "", "", true},
		{"loopback any name without users", open, "x", "y", true},
		{"configured user", locked, "agent1", "s3cret", true},
		{"second user", locked, "hub", "h", true},
		{"wrong password", locked, "agent1", "nope", false},
		{"other user's password", locked, "agent1", "h", false},
		{"no credentials", locked, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := connect(t, tt.b.URL(), "c-"+tt.name, tt.user, tt.pass, true, nil)
			if (err == nil) != tt.wantOK {
				t.Fatalf("connect as %q: err = %v, want ok=%v", tt.user, err, tt.wantOK)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for remote, want := range map[string]bool{
		"127.0.0.1:5555": true, "[::1]:1": true, "10.0.0.1:1883": false, "garbage": false, "": false,
	} {
		if got := isLoopback(remote); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", remote, got, want)
		}
	}
}

// TestSessionSurvivesRestart checks that a persistent subscriber's QoS 1 message queued
// while it was offline is delivered after the broker restarts from its state dir.
func TestSessionSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b1, stop1 := startBroker(t, Config{StateDir: dir})
	addr := b1.Addr()

	var mu sync.Mutex
	var got []string
	recv := make(chan struct{}, 10)
	handler := func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got = append(got, string(m.Payload()))
		mu.Unlock()
		recv <- struct{}{}
	}
	sub, err := connect(t, b1.URL(), "hub-1", "", "", false, handler)
	if err != nil {
		t.Fatal(err)
	}
	if tok := sub.Subscribe("medlake/v1/t/f/a/batch", 1, nil); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	sub.Disconnect(250)

	pub, err := connect(t, b1.URL(), "agent-1", "", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok := pub.Publish("medlake/v1/t/f/a/batch", 1, false, "while-offline"); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub.Disconnect(250)

	stop1()
	b2, _ := startBroker(t, Config{StateDir: dir, Listen: addr})
	if _, err := connect(t, b2.URL(), "hub-1", "", "", false, handler); err != nil {
		t.Fatal(err)
	}
	select {
	case <-recv:
	case <-time.After(30 * time.Second):
		t.Fatal("queued message not delivered after broker restart")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "while-offline" {
		t.Fatalf("received %q, want [while-offline]", got)
	}
}
