package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

var update = flag.Bool("update", false, "rewrite the golden vectors in testdata/")

var goldenTime = time.Date(2026, 11, 2, 14, 30, 0, 0, time.UTC)

// goldenRecords builds the three rows of the golden batch from testdata/lab_results.yaml.
func goldenRecords(tb testing.TB) (*feed.Definition, arrow.RecordBatch) {
	tb.Helper()
	data, err := os.ReadFile("testdata/lab_results.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	def, err := feed.Parse(data)
	if err != nil {
		tb.Fatal(err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, def.BatchSchema())
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"f000001-L1", "f000001-L2", "f000001-L3"}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"f000001-P1", "f000001-P1", "f000001-P2"}, nil)
	b.Field(2).(*array.StringBuilder).AppendValues([]string{"2345-7", "", "718-7"}, []bool{true, false, true})
	b.Field(3).(*array.Float64Builder).AppendValues([]float64{5.4, 0, 13.9}, []bool{true, false, true})
	b.Field(4).(*array.BooleanBuilder).AppendValues([]bool{false, true, false}, nil)
	ts := arrow.Timestamp(goldenTime.UnixMicro())
	b.Field(5).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{ts, ts + 1e6, ts + 2e6}, nil)
	d := arrow.Date32FromTime(goldenTime)
	b.Field(6).(*array.Date32Builder).AppendValues([]arrow.Date32{d, d, d - 1}, nil)
	b.Field(7).(*array.Int64Builder).AppendValues([]int64{1, 2, 1}, nil)
	entry := "f000001_lab_results_000001.zip!labs.csv"
	b.Field(8).(*array.StringBuilder).AppendValues([]string{entry, entry, entry}, nil)
	b.Field(9).(*array.Int64Builder).AppendValues([]int64{1, 2, 3}, nil)
	return def, b.NewRecordBatch()
}

func goldenHeader(def *feed.Definition, rows int64) protocol.BatchHeader {
	src := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	return protocol.BatchHeader{
		BatchID:      protocol.BatchID(src, def.Name, def.Version, 1),
		Tenant:       "t0001",
		Facility:     "f000001",
		Agent:        "agent-f000001",
		Feed:         def.Name,
		FeedVersion:  def.Version,
		Table:        def.Table,
		SourceFile:   "f000001_lab_results_000001.zip",
		SourceSHA256: src,
		Part:         1,
		Parts:        1,
		Rows:         rows,
		CreatedAt:    goldenTime,
		// The file was exported 4 s before the agent spooled it.
		SourceModTime: goldenTime.Add(-4 * time.Second),
	}
}

// goldenRejects builds two rejected rows of the golden file, in the rejects schema.
func goldenRejects(tb testing.TB) (*feed.Definition, arrow.RecordBatch) {
	tb.Helper()
	def := feed.Rejects()
	src := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	b := array.NewRecordBuilder(memory.DefaultAllocator, def.BatchSchema())
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"lab_results_csv", "lab_results_csv"}, nil)
	b.Field(1).(*array.Int64Builder).AppendValues([]int64{3, 3}, nil)
	b.Field(2).(*array.StringBuilder).AppendValues([]string{"f000001_lab_results_000001.zip!labs.csv", "f000001_lab_results_000001.zip!labs.csv"}, nil)
	b.Field(3).(*array.StringBuilder).AppendValues([]string{src, src}, nil)
	b.Field(4).(*array.Int64Builder).AppendValues([]int64{4, 7}, nil)
	b.Field(5).(*array.Int64Builder).AppendValues([]int64{5, 8}, nil)
	b.Field(6).(*array.StringBuilder).AppendValues([]string{"value", ""}, []bool{true, false})
	b.Field(7).(*array.StringBuilder).AppendValues([]string{"f000001-L4,f000001-P2,2345-7,high,false", "f000001-L7,f000001-P3"}, nil)
	b.Field(8).(*array.StringBuilder).AppendValues([]string{`column "value": "high" is not a float`, "record has 2 fields, header has 5"}, nil)
	b.Field(9).(*array.StringBuilder).AppendValues([]string{"f000001_lab_results_000001.zip!labs.csv", "f000001_lab_results_000001.zip!labs.csv"}, nil)
	b.Field(10).(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	return def, b.NewRecordBatch()
}

// goldenRejectsHeader is the header of the golden file's reject batch: the refusing
// feed and its version, the reserved table, an id keyed by feed.RejectsKey.
func goldenRejectsHeader(data *feed.Definition, rows int64) protocol.BatchHeader {
	h := goldenHeader(data, rows)
	h.BatchID = protocol.BatchID(h.SourceSHA256, feed.RejectsKey(data.Name), data.Version, 1)
	h.Table = feed.RejectsTable
	h.SourceFile = "f000001_lab_results_000001.zip"
	return h
}

// goldenVectors returns every vector in testdata/, valid and invalid, by file name.
func goldenVectors(tb testing.TB) map[string][]byte {
	tb.Helper()
	def, rec := goldenRecords(tb)
	defer rec.Release()
	payload, err := protocol.EncodeRecords(def.BatchSchema(), []arrow.RecordBatch{rec})
	if err != nil {
		tb.Fatal(err)
	}
	h := goldenHeader(def, rec.NumRows())
	frame, err := protocol.EncodeBatch(h, payload)
	if err != nil {
		tb.Fatal(err)
	}
	v := map[string][]byte{"batch_v1.bin": frame}

	unknownMajor := bytes.Clone(frame)
	unknownMajor[4] = 2
	v["batch_unknown_major.bin"] = unknownMajor

	badSum := bytes.Clone(frame)
	badSum[len(badSum)-10] ^= 0xff
	v["batch_bad_checksum.bin"] = badSum

	v["batch_truncated.bin"] = frame[:len(frame)-100]

	// A well-formed frame whose payload is not Arrow: only the hub's record decoding
	// catches it.
	corrupt := bytes.Repeat([]byte("not arrow "), 20)
	hc := h
	hc.BatchID = protocol.BatchID(h.SourceSHA256, def.Name, def.Version, 2)
	hc.Part, hc.Parts = 2, 2
	if v["batch_corrupt_arrow.bin"], err = protocol.EncodeBatch(hc, corrupt); err != nil {
		tb.Fatal(err)
	}

	hu := h
	hu.Table = "no_such_table"
	hu.BatchID = protocol.BatchID(h.SourceSHA256, "no_such_feed", 1, 1)
	if v["batch_unknown_table.bin"], err = protocol.EncodeBatch(hu, payload); err != nil {
		tb.Fatal(err)
	}

	rdef, rrec := goldenRejects(tb)
	defer rrec.Release()
	rpayload, err := protocol.EncodeRecords(rdef.BatchSchema(), []arrow.RecordBatch{rrec})
	if err != nil {
		tb.Fatal(err)
	}
	if v["batch_rejects_v1.bin"], err = protocol.EncodeBatch(goldenRejectsHeader(def, rrec.NumRows()), rpayload); err != nil {
		tb.Fatal(err)
	}

	if v["ack_committed.json"], err = protocol.EncodeAck(protocol.Ack{
		BatchID: h.BatchID, Status: protocol.AckCommitted, Table: "lab_results",
		SnapshotID: 4242, CommittedAt: goldenTime.Add(3 * time.Second),
	}); err != nil {
		tb.Fatal(err)
	}
	if v["ack_rejected.json"], err = protocol.EncodeAck(protocol.Ack{
		BatchID: hu.BatchID, Status: protocol.AckRejected, Table: hu.Table,
		Reason: `unknown table "no_such_table": no feed declares it`,
	}); err != nil {
		tb.Fatal(err)
	}
	if v["status.json"], err = protocol.EncodeStatus(protocol.Status{
		Agent: "agent-f000001", Tenant: "t0001", Facility: "f000001", State: protocol.StateOnline,
		Time: goldenTime, SpoolBatches: 2, SpoolBytes: 81920, InFlight: 1, FilesDone: 17, DeadLetters: 1,
		OldestUnacked: goldenTime.Add(-90 * time.Second), FilesWaiting: 3,
		Events: []protocol.Event{{Kind: protocol.EventDeadLetter, BatchID: hu.BatchID, File: hu.SourceFile,
			Reason: `unknown table "no_such_table"`, Time: goldenTime}},
	}); err != nil {
		tb.Fatal(err)
	}
	if err := addConfigVectors(tb, v); err != nil {
		tb.Fatal(err)
	}
	return v
}

// addConfigVectors adds the config message carrying the golden feed, a status reporting
// a refused config, and a config whose definition was altered after hashing.
func addConfigVectors(tb testing.TB, v map[string][]byte) error {
	tb.Helper()
	text, err := os.ReadFile("testdata/lab_results.yaml")
	if err != nil {
		return err
	}
	feeds := []protocol.ConfigFeed{
		protocol.NewConfigFeed("lab_results_csv", 3, string(text)),
		protocol.NewConfigFeed("vitals", 3, "name: vitals\nversion: 3\n"),
	}
	if v["config.json"], err = protocol.EncodeConfig(protocol.Config{Time: goldenTime, Feeds: feeds}); err != nil {
		return err
	}
	altered := protocol.Config{Time: goldenTime, Feeds: []protocol.ConfigFeed{feeds[0]}}
	altered.Revision = protocol.ConfigRevision(altered.Feeds)
	altered.Feeds[0].Definition += "# altered\n"
	altered.Version = protocol.Version
	if v["config_bad_sha256.json"], err = json.Marshal(altered); err != nil {
		return err
	}
	rev := protocol.ConfigRevision(feeds)
	v["status_config.json"], err = protocol.EncodeStatus(protocol.Status{
		Agent: "agent-f000001", Tenant: "t0001", Facility: "f000001", State: protocol.StateOnline, Time: goldenTime,
		Events: []protocol.Event{{Kind: protocol.EventConfigRefused, Revision: rev,
			Reason: `feed vitals version 3: columns: at least one column is required`, Time: goldenTime}},
		Config: &protocol.ConfigState{
			Applied: rev, AppliedAt: goldenTime, Refused: rev, RefusedAt: goldenTime,
			Errors: []protocol.ConfigError{{Feed: "vitals", Version: 3, Error: "columns: at least one column is required"}},
			Feeds: []protocol.RunningFeed{
				{Name: "lab_results_csv", Version: 3, Source: protocol.FeedSourcePushed},
				{Name: "vitals", Version: 2, Source: protocol.FeedSourceLocal},
			},
		},
	})
	return err
}

// TestGoldenVectors pins the wire format: encoding today must give the bytes in testdata/,
// which the agent's and the hub's tests also read.
func TestGoldenVectors(t *testing.T) {
	for name, want := range goldenVectors(t) {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./protocol -update to create)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoding changed the wire format (%d bytes, golden %d); if intended, bump the version and run with -update", name, len(want), len(got))
		}
	}
}

func TestDecodeGoldenBatch(t *testing.T) {
	frame, err := os.ReadFile("testdata/batch_v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := protocol.DecodeBatch(frame)
	if err != nil {
		t.Fatal(err)
	}
	def, want := goldenRecords(t)
	defer want.Release()
	if got, exp := b.Header, goldenHeader(def, 3); got.BatchID != exp.BatchID || got.Tenant != exp.Tenant ||
		got.Table != exp.Table || got.Rows != 3 || got.Version != protocol.Version || !got.CreatedAt.Equal(goldenTime) {
		t.Errorf("header = %+v", got)
	}
	checkGoldenPayload(t, b.Payload, def, want)
}

func TestDecodeBadBatches(t *testing.T) {
	tests := []struct {
		file string
		want error
	}{
		{"batch_unknown_major.bin", protocol.ErrUnknownVersion},
		{"batch_bad_checksum.bin", protocol.ErrChecksum},
		{"batch_truncated.bin", protocol.ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			frame, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = protocol.DecodeBatch(frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeBatch error = %v, want %v", err, tt.want)
			}
			if tbl := protocol.PeekBatchTable(frame); tbl == "" && protocol.PeekBatchID(frame) != "" {
				t.Errorf("PeekBatchTable found no table in a frame whose id it reads")
			}
			if id := protocol.PeekBatchID(frame); id == "" {
				t.Errorf("PeekBatchID found no id; the hub could not address its rejection")
			}
		})
	}
}

func TestCorruptArrowPayload(t *testing.T) {
	frame, err := os.ReadFile("testdata/batch_corrupt_arrow.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := protocol.DecodeBatch(frame)
	if err != nil {
		t.Fatalf("frame itself is valid: %v", err)
	}
	if _, _, err := protocol.DecodeRecords(b.Payload, memory.DefaultAllocator); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("DecodeRecords error = %v, want ErrMalformed", err)
	}
}

func TestDecodeGoldenMessages(t *testing.T) {
	for _, name := range []string{"ack_committed.json", "ack_rejected.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		a, err := protocol.DecodeAck(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a.BatchID == "" || (a.Status == protocol.AckRejected && a.Reason == "") {
			t.Errorf("%s: %+v", name, a)
		}
	}
	data, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.DecodeStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	if s.Agent != "agent-f000001" || len(s.Events) != 1 || s.Events[0].Kind != protocol.EventDeadLetter {
		t.Errorf("status = %+v", s)
	}
}

// TestDecodeVersion10 reads messages of an agent that speaks 1.0, before source_mtime,
// oldest_unacked and files_waiting: they decode, with those fields zero.
func TestDecodeVersion10(t *testing.T) {
	frame, err := os.ReadFile("testdata/batch_v1_0.bin")
	if err != nil {
		t.Fatal(err)
	}
	if frame[4] != 1 || frame[5] != 0 {
		t.Fatalf("batch_v1_0.bin is version %d.%d, want 1.0", frame[4], frame[5])
	}
	b, err := protocol.DecodeBatch(frame)
	if err != nil {
		t.Fatal(err)
	}
	if b.Header.Version != "1.0" || !b.Header.SourceModTime.IsZero() || !b.Header.CreatedAt.Equal(goldenTime) {
		t.Errorf("1.0 header = %+v", b.Header)
	}
	data, err := os.ReadFile("testdata/status_v1_0.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.DecodeStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != "1.0" || !s.OldestUnacked.IsZero() || s.FilesWaiting != 0 || s.SpoolBatches != 2 {
		t.Errorf("1.0 status = %+v", s)
	}

	// The 1.1 vectors carry the new fields. A 1.0 decoder reads them too: it accepts
	// any 1.x and encoding/json skips the fields it does not know.
	cur, err := os.ReadFile("testdata/batch_v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	nb, err := protocol.DecodeBatch(cur)
	if err != nil {
		t.Fatal(err)
	}
	if want := goldenTime.Add(-4 * time.Second); !nb.Header.SourceModTime.Equal(want) {
		t.Errorf("1.1 source_mtime = %s, want %s", nb.Header.SourceModTime, want)
	}
	cs, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := protocol.DecodeStatus(cs)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesWaiting != 3 || st.Time.Sub(st.OldestUnacked) != 90*time.Second {
		t.Errorf("1.1 status backlog = files %d, oldest unacked %s", st.FilesWaiting, st.OldestUnacked)
	}
}

func TestDecodeGoldenConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/config.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := protocol.DecodeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Feeds) != 2 || c.Feeds[0].Name != "lab_results_csv" || c.Feeds[1].Version != 3 || c.Revision != protocol.ConfigRevision(c.Feeds) {
		t.Errorf("config = %+v", c)
	}
	def, err := feed.Parse([]byte(c.Feeds[0].Definition))
	if err != nil || def.Name != "lab_results_csv" || def.Version != 3 {
		t.Errorf("definition in the config does not parse back: %v", err)
	}

	bad, err := os.ReadFile("testdata/config_bad_sha256.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.DecodeConfig(bad); !errors.Is(err, protocol.ErrChecksum) {
		t.Errorf("altered definition: DecodeConfig error = %v, want ErrChecksum", err)
	}

	data, err = os.ReadFile("testdata/status_config.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.DecodeStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	if s.Config == nil || s.Config.Refused != c.Revision || len(s.Config.Errors) != 1 || s.Config.Errors[0].Feed != "vitals" {
		t.Errorf("status config = %+v", s.Config)
	}
}

func TestDecodeGoldenRejects(t *testing.T) {
	frame, err := os.ReadFile("testdata/batch_rejects_v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := protocol.DecodeBatch(frame)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := goldenRecords(t)
	if h := b.Header; h.Table != feed.RejectsTable || h.Feed != data.Name || h.Rows != 2 ||
		h.BatchID == protocol.BatchID(h.SourceSHA256, data.Name, data.Version, 1) {
		t.Errorf("header = %+v", h)
	}
	def, want := goldenRejects(t)
	defer want.Release()
	checkGoldenPayload(t, b.Payload, def, want)
}

// checkGoldenPayload decodes a golden batch's payload and compares it with def's batch
// schema and the one record want.
func checkGoldenPayload(t *testing.T, payload []byte, def *feed.Definition, want arrow.RecordBatch) {
	t.Helper()
	schema, recs, err := protocol.DecodeRecords(payload, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	if !schema.Equal(def.BatchSchema()) {
		t.Errorf("schema = %s, want %s", schema, def.BatchSchema())
	}
	if len(recs) != 1 || !array.RecordEqual(recs[0], want) {
		t.Errorf("records differ from the golden ones")
	}
}
