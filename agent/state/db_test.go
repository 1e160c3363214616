package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func openTest(tb testing.TB, path string) *DB {
	tb.Helper()
	d, err := Open(path)
	if err != nil {
		tb.Fatalf("opening state: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

func testFile(name string, ids ...string) File {
	f := File{SHA256: sha(name), Path: "/exports/" + name, Root: "/exports", Size: 10, ModTime: time.Unix(100, 0).UTC()}
	for i, id := range ids {
		f.Batches = append(f.Batches, Batch{ID: id, Feed: "lab_results", Part: i + 1, Parts: len(ids), Rows: 5})
	}
	return f
}

func states(f File) []BatchState {
	var out []BatchState
	for _, b := range f.Batches {
		out = append(out, b.State)
	}
	return out
}

func TestRestartResumesInterruptedSpooling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	d := openTest(t, path)
	f := testFile("a.csv", "b1", "b2", "b3")
	if _, err := d.StartFile(f); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b1", "b2"} {
		if err := d.MarkSpooled(f.SHA256, id); err != nil {
			t.Fatal(err)
		}
	}
	// b1 was sent and committed before the crash.
	if _, ok, err := d.Ack("b1", true, ""); err != nil || !ok {
		t.Fatalf("ack b1: ok %v err %v", ok, err)
	}
	d.Close()

	d = openTest(t, path)
	inp, err := d.InProgress()
	if err != nil || len(inp) != 1 {
		t.Fatalf("in progress after restart: %v, %v", inp, err)
	}
	if inp[0].Spooled {
		t.Fatal("file whose spooling was interrupted is marked spooled: it would never be re-parsed")
	}
	// Re-parsing yields the same deterministic ids; what was already done is kept.
	got, err := d.StartFile(testFile("a.csv", "b1", "b2", "b3"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []BatchState{BatchCommitted, BatchSpooled, BatchPending}; !slices.Equal(states(got), want) {
		t.Fatalf("batch states after re-parse = %v, want %v", states(got), want)
	}
	if _, err := d.FinishSpooling(f.SHA256, 15, 0); err == nil {
		t.Fatal("finish spooling with a pending batch succeeded")
	}
	if err := d.MarkSpooled(f.SHA256, "b3"); err != nil {
		t.Fatal(err)
	}
	got, err = d.FinishSpooling(f.SHA256, 15, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Complete() || !slices.Equal(got.Unacked(), []string{"b2", "b3"}) {
		t.Fatalf("after spooling: complete %v unacked %v", got.Complete(), got.Unacked())
	}
	d.Close()

	// A restart after spooling finished does not re-parse: Spooled survives.
	d = openTest(t, path)
	inp, _ = d.InProgress()
	if len(inp) != 1 || !inp[0].Spooled || inp[0].Rows != 15 || inp[0].Rejects != 1 {
		t.Fatalf("in progress after second restart = %+v", inp)
	}
	if _, err := d.MarkDone(f.SHA256, ""); err == nil {
		t.Fatal("marked done with unacked batches")
	}
	for _, id := range []string{"b2", "b3"} {
		got, _, err = d.Ack(id, true, "")
		if err != nil {
			t.Fatal(err)
		}
	}
	if !got.Complete() {
		t.Fatalf("all acked but not complete: %+v", got)
	}
	done, err := d.MarkDone(f.SHA256, "/exports/.medlake-done/a.csv")
	if err != nil || done.Status != StatusDone || done.MovedTo == "" || done.DoneAt.IsZero() {
		t.Fatalf("mark done: %+v, %v", done, err)
	}
	// A duplicate ack for a done file changes nothing.
	again, ok, err := d.Ack("b3", false, "late rejection")
	if err != nil || !ok || again.Status != StatusDone || again.Batches[2].State != BatchCommitted {
		t.Fatalf("late ack changed a done file: %+v ok %v err %v", again, ok, err)
	}
	if _, err := d.StartFile(testFile("a.csv", "b1")); err == nil {
		t.Fatal("a done file was started again")
	}
	c, err := d.Counts()
	if err != nil || c != (Counts{Done: 1}) {
		t.Fatalf("counts = %+v, %v", c, err)
	}
}

func TestAcks(t *testing.T) {
	d := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	f := testFile("b.csv", "x1", "x2")
	d.StartFile(f)
	d.MarkSpooled(f.SHA256, "x1")
	d.MarkSpooled(f.SHA256, "x2")
	if _, err := d.FinishSpooling(f.SHA256, 10, 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := d.Ack("nope", true, ""); ok || err != nil {
		t.Fatalf("unknown batch: ok %v err %v", ok, err)
	}
	d.Ack("x1", true, "")
	got, ok, err := d.Ack("x2", false, "schema mismatch")
	if !ok || err != nil || !got.Complete() {
		t.Fatalf("ack x2: %+v ok %v err %v", got, ok, err)
	}
	rej := got.Rejected()
	if len(rej) != 1 || rej[0].ID != "x2" || rej[0].Reason != "schema mismatch" {
		t.Fatalf("rejected = %+v", rej)
	}
	q, err := d.Quarantine(File{SHA256: f.SHA256}, "batch x2 rejected")
	if err != nil || q.Status != StatusQuarantined || q.Path != f.Path || len(q.Batches) != 2 {
		t.Fatalf("quarantine: %+v %v", q, err)
	}
	// A file never seen before can be quarantined straight away.
	n := File{SHA256: sha("bad.zip"), Path: "/exports/bad.zip"}
	if _, err := d.Quarantine(n, "no feed matches"); err != nil {
		t.Fatal(err)
	}
	c, _ := d.Counts()
	if c != (Counts{Quarantined: 2}) {
		t.Fatalf("counts = %+v", c)
	}
	if _, err := d.Quarantine(File{SHA256: "zz"}, "x"); err == nil {
		t.Fatal("quarantine accepted a bad hash")
	}
}

func TestCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	d := openTest(t, path)
	key := sha("c")
	err := d.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFiles).Put([]byte(key), []byte(`{"v":1,"sha256":"`+key+`","status":"lost"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Get(key); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get corrupt: %v, want ErrCorrupt", err)
	}
	if _, err := d.InProgress(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("in progress over corrupt: %v, want ErrCorrupt", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	f := testFile("r.csv", "a", "b")
	f.Status = StatusInProgress
	f.Batches[0].State = BatchCommitted
	f.Batches[1].State = BatchRejected
	f.Batches[1].Reason = "why"
	f.FirstSeen = time.Unix(1, 0).UTC()
	b, err := encodeFile(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeFile(b)
	if err != nil {
		t.Fatal(err)
	}
	f.Version = recordVersion
	if !reflect.DeepEqual(got, f) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, f)
	}
	for _, bad := range []string{``, `{}`, `{"v":2}`, `{"v":1,"sha256":"` + f.SHA256 + `","status":"done","extra":1}`, string(b) + `{}`} {
		if _, err := decodeFile([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decode %q: %v, want ErrCorrupt", bad, err)
		}
	}
}

func FuzzDecodeFile(f *testing.F) {
	rec := testFile("seed.csv", "a", "b")
	rec.Status = StatusInProgress
	rec.Batches[0].State = BatchSpooled
	rec.Batches[1].State = BatchCommitted
	b, _ := encodeFile(rec)
	f.Add(b)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeFile(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// Anything accepted must survive a write and read back unchanged.
		enc, err := encodeFile(got)
		if err != nil {
			t.Fatalf("re-encoding accepted record: %v", err)
		}
		again, err := decodeFile(enc)
		if err != nil {
			t.Fatalf("decoding re-encoded record: %v", err)
		}
		enc2, err := encodeFile(again)
		if err != nil || string(enc2) != string(enc) {
			t.Fatalf("round trip changed the record:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

// TestRelease takes a quarantined file back: it keeps only committed batches, and a new
// parse that lacks one of them (the feed version changed) is refused, not duplicated.
func TestRelease(t *testing.T) {
	d := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	f := testFile("c.csv", "v1p1", "v1p2")
	d.StartFile(f)
	d.MarkSpooled(f.SHA256, "v1p1")
	d.MarkSpooled(f.SHA256, "v1p2")
	d.FinishSpooling(f.SHA256, 10, 0)
	d.Ack("v1p1", true, "")
	d.Ack("v1p2", false, "unknown table")
	if _, err := d.Quarantine(File{SHA256: f.SHA256}, "batch v1p2 rejected"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Release(sha("never.csv")); !errors.Is(err, ErrUnknownFile) {
		t.Fatalf("release of unknown file: %v", err)
	}
	r, err := d.Release(f.SHA256)
	if err != nil || r.Status != StatusInProgress || r.Spooled || len(r.Batches) != 1 || r.Batches[0].ID != "v1p1" {
		t.Fatalf("release = %+v, %v; want in progress keeping committed v1p1", r, err)
	}
	if _, err := d.Release(f.SHA256); !errors.Is(err, ErrNotQuarantined) {
		t.Fatalf("second release: %v, want ErrNotQuarantined", err)
	}
	// A parse under a new feed version has new ids: v1p1's rows would be written twice.
	if _, err := d.StartFile(testFile("c.csv", "v2p1", "v2p2")); !errors.Is(err, ErrWouldDuplicate) {
		t.Fatalf("StartFile with new ids: %v, want ErrWouldDuplicate", err)
	}
	// The same version repeats v1p1, which stays committed; v1p2 is sent again.
	s, err := d.StartFile(testFile("c.csv", "v1p1", "v1p2"))
	if err != nil || !slices.Equal(states(s), []BatchState{BatchCommitted, BatchPending}) {
		t.Fatalf("StartFile same ids = %v, %v", states(s), err)
	}
	if c, _ := d.Counts(); c != (Counts{InProgress: 1}) {
		t.Fatalf("counts = %+v", c)
	}
}
