package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/medlake/medlake/protocol"
)

// crashChildEnv makes the test binary a spool writer that TestKillNineWhileSpooling
// kills: it puts frames, deletes every third one again, and prints each operation on
// stdout once it has returned.
const crashChildEnv = "MEDLAKE_SPOOL_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		start, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_START"))
		crashChild(dir, start)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashFrame is frame number i: a payload of varying size, so kills land in writes.
func crashFrame(i int) (string, []byte) {
	src := fmt.Sprintf("%064x", i/10)
	id := protocol.BatchID(src, "lab_results", 1, i%10+1)
	payload := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+(i*7919)%(256<<10))
	frame, err := protocol.EncodeBatch(protocol.BatchHeader{
		BatchID: id, Tenant: "t1", Facility: "f1", Agent: "a1", Feed: "lab_results", FeedVersion: 1,
		Table: "lab_results", SourceFile: "x.csv", SourceSHA256: src, Part: i%10 + 1, Parts: 10, Rows: 1,
		CreatedAt: time.Unix(int64(i), 0).UTC(),
	}, payload)
	if err != nil {
		panic(err)
	}
	return id, frame
}

func crashChild(dir string, start int) {
	s, err := Open(Config{Dir: filepath.Join(dir, "spool"), DeadLetterDir: filepath.Join(dir, "dead-letter"), MaxBytes: 1 << 40, MaxBatches: 1 << 30}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := start; ; i++ {
		id, frame := crashFrame(i)
		if err := s.Put(context.Background(), id, frame); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("put %d\n", i)
		if i%3 == 0 {
			if err := s.Delete(id); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			fmt.Printf("del %d\n", i)
		}
	}
}

// TestKillNineWhileSpooling kills a process writing the spool with SIGKILL at random
// points, over and over on the same directory, and checks after each kill what Open
// recovers: every batch whose Put returned and that was not deleted is there and decodes
// to the frame written; no temp file is left; nothing is dead-lettered (a kill cannot
// tear a frame: it is renamed into place only once written and fsynced). A batch being
// put or deleted at the kill may be there or not, whole.
func TestKillNineWhileSpooling(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process many times")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// maybe holds batches a kill caught between Put's "put" line and the Delete after it.
	put, deleted, maybe := map[int]bool{}, map[int]bool{}, map[int]bool{}
	const rounds = 25
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		// Fresh batch numbers each round: past the last one seen, and the one a kill may
		// have cut off before it was printed.
		next := 0
		for i := range put {
			next = max(next, i+2)
		}
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("%s_START=%d", crashChildEnv, next))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		killAt := time.After(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		killed := false
		for !killed {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("round %d: writer exited early: %v\n%s", round, cmd.Wait(), stderr.String())
				}
				var i int
				switch {
				case strings.HasPrefix(l, "put "):
					fmt.Sscanf(l, "put %d", &i)
					put[i] = true
				case strings.HasPrefix(l, "del "):
					fmt.Sscanf(l, "del %d", &i)
					deleted[i] = true
				}
			case <-killAt:
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		for l := range lines { // what the writer printed before it died
			var i int
			if _, err := fmt.Sscanf(l, "put %d", &i); err == nil {
				put[i] = true
			} else if _, err := fmt.Sscanf(l, "del %d", &i); err == nil {
				deleted[i] = true
			}
		}
		_ = cmd.Wait()
		for i := range put {
			if i%3 == 0 && !deleted[i] {
				maybe[i] = true
			}
		}
		if len(maybe) > round+1 {
			t.Fatalf("round %d: %d batches between put and delete, at most one per kill: %v", round, len(maybe), maybe)
		}

		s, err := Open(Config{Dir: filepath.Join(dir, "spool"), DeadLetterDir: filepath.Join(dir, "dead-letter"), MaxBytes: 1 << 40, MaxBatches: 1 << 30}, nil)
		if err != nil {
			t.Fatalf("round %d: reopening after kill -9: %v", round, err)
		}
		for i := range put {
			id, want := crashFrame(i)
			got, err := s.Get(id)
			switch {
			case deleted[i]:
				if err == nil {
					t.Errorf("round %d: batch %d was deleted, still spooled", round, i)
				}
			case maybe[i] && err != nil:
				// deleted just before the kill
			case err != nil:
				t.Errorf("round %d: batch %d was put, lost after kill -9: %v", round, i, err)
			case !bytes.Equal(got, want):
				t.Errorf("round %d: batch %d reads back different bytes", round, i)
			}
		}
		for _, id := range s.List() {
			frame, err := s.Get(id)
			if err != nil {
				t.Fatalf("round %d: listed %s: %v", round, id, err)
			}
			if _, err := protocol.DecodeBatch(frame); err != nil {
				t.Errorf("round %d: listed batch %s does not decode: %v", round, id, err)
			}
		}
		s.Close()
		des, _ := os.ReadDir(filepath.Join(dir, "spool"))
		for _, de := range des {
			if strings.HasSuffix(de.Name(), tempExt) {
				t.Errorf("round %d: temp file %s left after Open", round, de.Name())
			}
		}
		if dead, _ := os.ReadDir(filepath.Join(dir, "dead-letter")); len(dead) != 0 {
			t.Errorf("round %d: kill -9 left dead-lettered frames: %v", round, dead)
		}
	}
	if len(put) < rounds {
		t.Fatalf("only %d puts over %d rounds: the writer barely ran", len(put), rounds)
	}
	t.Logf("%d rounds, %d batches put, %d deleted", rounds, len(put), len(deleted))
}
