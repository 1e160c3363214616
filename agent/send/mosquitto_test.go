package send

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"
)

// startMosquitto runs the Debian mosquitto broker on a free 127.0.0.1 port for one test
// and returns its URL. Stand-in until deploy/local/stack.Mosquitto is available.
func startMosquitto(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts a mosquitto broker; skipped with -short")
	}
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("mosquitto not installed (apt-get install mosquitto): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := tb.TempDir()
	u, err := user.Current()
	if err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nuser %s\npersistence false\nlog_dest stderr\n", port, u.Username)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting mosquitto: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "tcp://" + addr
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logf.Name())
			tb.Fatalf("mosquitto exited: %v\n%s", err, b)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
