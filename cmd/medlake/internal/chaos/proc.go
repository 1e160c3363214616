package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one long-running process the harness owns: started, killed, paused and
// started again on the same command line. Its methods are safe for concurrent use.
type proc struct {
	name string
	path string
	args []string
	env  []string // added to the harness' environment
	log  string   // stdout and stderr are appended here
	// http is the node's HTTP address (metrics), for hubs and the query node.
	http string
	// ready, when set, is polled after every start until it returns nil.
	ready func(ctx context.Context) error

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu; nil when not started
	done chan struct{} // guarded by mu; closed when cmd has been waited for
}

// start starts the process and waits until it is ready.
func (p *proc) start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("starting %s: already running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("starting %s: opening log: %w", p.name, err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a terminal's ^C reaches the harness, which stops
	// everything in order, and not each child at once.
	// Pdeathsig: should the harness itself die, its servers go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.mu.Unlock()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	if p.ready == nil {
		return nil
	}
	for {
		err := p.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting (log %s): %w", p.name, p.log, err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (log %s): %w", p.name, p.log, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// signal sends sig to the running process.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("signalling %s: not running", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling %s with %s: %w", p.name, sig, err)
	}
	return nil
}

// stop sends sig (SIGKILL for a crash, SIGTERM for a stop), waits for the process to
// exit, killing it after grace, and forgets it so start can run it again.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	// A stopped process would not act on SIGTERM until continued.
	_ = cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	p.mu.Lock()
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	return nil
}

// pid is the running process' id, or 0.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// httpOK returns a readiness check that wants 200 from url.
func httpOK(url string) func(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(url + ": " + resp.Status)
		}
		return nil
	}
}

// waitOK polls url until it answers 200 or ctx ends.
func waitOK(ctx context.Context, url string) error {
	check := httpOK(url)
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", url, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
