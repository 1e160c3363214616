package spool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/protocol"
)

func testFrame(tb testing.TB, part int, payload string) (string, []byte) {
	tb.Helper()
	sum := sha256.Sum256([]byte("source"))
	src := hex.EncodeToString(sum[:])
	id := protocol.BatchID(src, "lab_results", 1, part)
	frame, err := protocol.EncodeBatch(protocol.BatchHeader{
		BatchID: id, Tenant: "t1", Facility: "f1", Agent: "a1", Feed: "lab_results", FeedVersion: 1,
		Table: "lab_results", SourceFile: "x.csv", SourceSHA256: src, Part: part, Parts: 99, Rows: 1,
		CreatedAt: time.Unix(0, 0).UTC(),
	}, []byte(payload))
	if err != nil {
		tb.Fatalf("encoding test frame: %v", err)
	}
	return id, frame
}

func openTest(tb testing.TB, dir string, maxBytes int64, maxBatches int) *Spool {
	tb.Helper()
	s, err := Open(Config{Dir: filepath.Join(dir, "spool"), DeadLetterDir: filepath.Join(dir, "dead-letter"), MaxBytes: maxBytes, MaxBatches: maxBatches}, nil)
	if err != nil {
		tb.Fatalf("opening spool: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestPutGetDeleteOrder(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 1<<20, 100)
	ctx := context.Background()
	var ids []string
	var total int64
	for i := 1; i <= 5; i++ {
		id, frame := testFrame(t, i, strings.Repeat("x", i))
		if err := s.Put(ctx, id, frame); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		// Same id again is the same batch: no second copy.
		if err := s.Put(ctx, id, frame); err != nil {
			t.Fatalf("re-put %d: %v", i, err)
		}
		ids = append(ids, id)
		total += int64(len(frame))
		got, err := s.Get(id)
		if err != nil || string(got) != string(frame) {
			t.Fatalf("get %d: err %v, equal %v", i, err, string(got) == string(frame))
		}
	}
	if got := s.List(); !slices.Equal(got, ids) {
		t.Fatalf("list = %v, want %v", got, ids)
	}
	if st := s.Stats(); st.Batches != 5 || st.Bytes != total || st.Full {
		t.Fatalf("stats = %+v, want 5 batches, %d bytes, not full", st, total)
	}
	if err := s.Delete(ids[1]); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := s.Delete(ids[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ids[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v, want ErrNotFound", err)
	}
	want := slices.Delete(slices.Clone(ids), 1, 2)
	if got := s.List(); !slices.Equal(got, want) {
		t.Fatalf("list after delete = %v, want %v", got, want)
	}

	// Reopen: creation order comes back from the files' mtimes.
	s.Close()
	base := time.Now().Add(-time.Hour)
	for i, id := range want {
		p := filepath.Join(dir, "spool", id+frameExt)
		if err := os.Chtimes(p, base, base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	s2 := openTest(t, dir, 1<<20, 100)
	if got := s2.List(); !slices.Equal(got, want) {
		t.Fatalf("list after reopen = %v, want %v", got, want)
	}
}

func TestBadIDs(t *testing.T) {
	s := openTest(t, t.TempDir(), 1<<20, 10)
	for _, id := range []string{"", "..", "../x", "a/b", `a\b`, strings.Repeat("a", 65)} {
		if err := s.Put(context.Background(), id, []byte("x")); !errors.Is(err, ErrBadID) {
			t.Errorf("put %q: %v, want ErrBadID", id, err)
		}
	}
}

func waitBlocked(tb testing.TB, s *Spool, n int) {
	tb.Helper()
	for {
		s.mu.Lock()
		b := s.blocked
		s.mu.Unlock()
		if b == n {
			return
		}
		runtime.Gosched()
	}
}

func TestPutWaitsWhenFull(t *testing.T) {
	tests := []struct {
		name       string
		maxBytes   int64
		maxBatches int
	}{
		{"by count", 1 << 20, 2},
		{"by bytes", 0, 100}, // set below from the frame size
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id1, f1 := testFrame(t, 1, "a")
			id2, f2 := testFrame(t, 2, "b")
			id3, f3 := testFrame(t, 3, "c")
			maxBytes := tt.maxBytes
			if maxBytes == 0 {
				maxBytes = int64(len(f1) + len(f2))
			}
			s := openTest(t, t.TempDir(), maxBytes, tt.maxBatches)
			ctx := context.Background()
			for _, p := range []struct {
				id string
				f  []byte
			}{{id1, f1}, {id2, f2}} {
				if err := s.Put(ctx, p.id, p.f); err != nil {
					t.Fatal(err)
				}
			}
			if !s.Full() {
				t.Fatal("spool at its bound does not report Full")
			}
			done := make(chan error, 1)
			go func() { done <- s.Put(ctx, id3, f3) }()
			waitBlocked(t, s, 1)
			if !s.Stats().Full {
				t.Fatal("stats not full while a put waits")
			}
			if err := s.Delete(id1); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("blocked put: %v", err)
			}
			if got := s.List(); !slices.Equal(got, []string{id2, id3}) {
				t.Fatalf("list = %v", got)
			}

			// A waiting Put gives up with the context, and the batch is not spooled.
			id4, f4 := testFrame(t, 4, "d")
			cctx, cancel := context.WithCancel(ctx)
			go func() { done <- s.Put(cctx, id4, f4) }()
			waitBlocked(t, s, 1)
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled put: %v, want context.Canceled", err)
			}
			if s.Has(id4) {
				t.Fatal("cancelled put left the batch in the spool")
			}
			// Close wakes a waiting Put.
			go func() { done <- s.Put(ctx, id4, f4) }()
			waitBlocked(t, s, 1)
			s.Close()
			if err := <-done; !errors.Is(err, ErrClosed) {
				t.Fatalf("put on closed: %v, want ErrClosed", err)
			}
		})
	}
}

func TestOversizedFrameIntoEmptySpool(t *testing.T) {
	s := openTest(t, t.TempDir(), 10, 10)
	id, f := testFrame(t, 1, strings.Repeat("z", 100))
	if err := s.Put(context.Background(), id, f); err != nil {
		t.Fatalf("oversized frame into empty spool must not wait forever: %v", err)
	}
}

func TestMoveToDeadLetter(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 1<<20, 10)
	id, f := testFrame(t, 1, "rejected")
	if err := s.Put(context.Background(), id, f); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveToDeadLetter(id, "column lab_id missing"); err != nil {
		t.Fatal(err)
	}
	if s.Has(id) || len(s.List()) != 0 {
		t.Fatal("dead-lettered batch still spooled")
	}
	got, err := os.ReadFile(filepath.Join(dir, "dead-letter", id+frameExt))
	if err != nil || string(got) != string(f) {
		t.Fatalf("dead-letter frame: %v", err)
	}
	reason, err := os.ReadFile(filepath.Join(dir, "dead-letter", id+reasonExt))
	if err != nil || !strings.Contains(string(reason), "column lab_id missing") {
		t.Fatalf("reason file %q: %v", reason, err)
	}
	if st := s.Stats(); st.DeadLetters != 1 || st.Batches != 0 {
		t.Fatalf("stats = %+v", st)
	}
	s.Close()
	if st := openTest(t, dir, 1<<20, 10).Stats(); st.DeadLetters != 1 {
		t.Fatalf("dead letters after reopen = %d", st.DeadLetters)
	}
}

// TestOpenAfterCrash lays out what a crash can leave behind and checks that Open keeps
// every good batch, removes unfinished temp files and moves every bad frame aside.
func TestOpenAfterCrash(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	goodID, good := testFrame(t, 1, "good")
	tornID, torn := testFrame(t, 2, "torn frame payload")
	otherID, other := testFrame(t, 3, "other")
	files := map[string][]byte{
		goodID + frameExt:                 good,
		tornID + frameExt:                 torn[:len(torn)-5],             // cut short
		"0123456789abcdef" + frameExt:     []byte("garbage, not a frame"), // not a frame at all
		otherID + frameExt:                append([]byte{}, other...),
		"." + goodID + ".12345" + tempExt: good[:10], // Put that never renamed
	}
	// A frame stored under the wrong name is not the batch its name says.
	files["feedfacefeedface"+frameExt] = other
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(spoolDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := openTest(t, dir, 1<<20, 10)
	got := s.List()
	slices.Sort(got)
	want := []string{goodID, otherID}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("list after crash = %v, want %v", got, want)
	}
	left, _ := os.ReadDir(spoolDir)
	for _, de := range left {
		if strings.HasSuffix(de.Name(), tempExt) {
			t.Errorf("temp file %s left in spool", de.Name())
		}
	}
	dead, _ := os.ReadDir(filepath.Join(dir, "dead-letter"))
	var frames, reasons int
	for _, de := range dead {
		switch {
		case strings.HasSuffix(de.Name(), reasonExt):
			reasons++
			b, _ := os.ReadFile(filepath.Join(dir, "dead-letter", de.Name()))
			if len(b) == 0 {
				t.Errorf("empty reason %s", de.Name())
			}
		case strings.HasSuffix(de.Name(), frameExt):
			frames++
		}
	}
	if frames != 3 || reasons != 3 {
		t.Fatalf("dead-letter holds %d frames and %d reasons, want 3 and 3: %v", frames, reasons, dead)
	}
	if st := s.Stats(); st.DeadLetters != 3 {
		t.Fatalf("stats dead letters = %d", st.DeadLetters)
	}
}

// TestOldest checks the age of the oldest unacknowledged batch: the first Put, then the
// next once the first is acknowledged, its file's mtime after a restart, none when empty.
func TestOldest(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 1<<20, 10)
	ctx := context.Background()
	if o := s.Stats().Oldest; !o.IsZero() {
		t.Fatalf("empty spool: oldest = %s", o)
	}
	before := time.Now()
	id1, f1 := testFrame(t, 1, "one")
	id2, f2 := testFrame(t, 2, "two")
	if err := s.Put(ctx, id1, f1); err != nil {
		t.Fatal(err)
	}
	first := s.Stats().Oldest
	if first.Before(before) || first.After(time.Now()) {
		t.Fatalf("oldest = %s, want the first Put's time (after %s)", first, before)
	}
	if err := s.Put(ctx, id2, f2); err != nil {
		t.Fatal(err)
	}
	if o := s.Stats().Oldest; !o.Equal(first) {
		t.Fatalf("oldest after a second Put = %s, want %s", o, first)
	}
	// After a restart the frame's mtime stands in for the Put time.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, "spool", id2+frameExt), old, old); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, 1<<20, 10)
	if o := s.Stats().Oldest; !o.Equal(old) {
		t.Fatalf("oldest after reopen = %s, want the mtime %s", o, old)
	}
	for _, id := range []string{id2, id1} {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if o := s.Stats().Oldest; !o.IsZero() {
		t.Fatalf("drained spool: oldest = %s", o)
	}
}
