package hub

import (
	"os"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

const goldenDir = "../protocol/testdata/"

func goldenFeeds(tb testing.TB) *feeds {
	tb.Helper()
	fs, err := indexFeeds(loadGoldenFeed(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return fs
}

func loadGoldenFeed(tb testing.TB) []*feed.Definition {
	tb.Helper()
	data, err := os.ReadFile(goldenDir + "lab_results.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	def, err := feed.Parse(data)
	if err != nil {
		tb.Fatal(err)
	}
	return []*feed.Definition{def}
}

func readGolden(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(goldenDir + name)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// goldenTopic is where the golden batches' agent publishes.
var goldenTopic = protocol.Topic{Tenant: "t0001", Facility: "f000001", Agent: "agent-f000001", Kind: protocol.KindBatch}

func TestDecodeBatchGolden(t *testing.T) {
	fs := goldenFeeds(t)
	good, err := protocol.DecodeBatch(readGolden(t, "batch_v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	otherTopic := goldenTopic
	otherTopic.Tenant = "t0002"
	tests := []struct {
		file       string
		topic      protocol.Topic
		wantMetric string // "" = accepted
		wantID     bool   // the rejection names the batch
		wantReason string
	}{
		{"batch_v1.bin", goldenTopic, "", true, ""},
		{"batch_unknown_major.bin", goldenTopic, "unknown_version", true, "version"},
		{"batch_bad_checksum.bin", goldenTopic, "checksum", true, "sha256"},
		{"batch_truncated.bin", goldenTopic, "truncated", true, "payload"},
		{"batch_corrupt_arrow.bin", goldenTopic, "bad_payload", true, "arrow"},
		{"batch_unknown_table.bin", goldenTopic, "unknown_table", true, `unknown table "no_such_table"`},
		{"batch_v1.bin", otherTopic, "topic_mismatch", true, "published on"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.topic.Tenant, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
			defer mem.AssertSize(t, 0)
			b, rej := decodeBatch(tt.topic, readGolden(t, tt.file), fs, mem)
			if tt.wantMetric == "" {
				if rej != nil {
					t.Fatalf("rejected: %s", rej.reason)
				}
				defer b.release()
				if b.rows != 3 || b.hdr.BatchID != good.Header.BatchID || b.def.Table != "lab_results" {
					t.Fatalf("accepted batch rows=%d id=%s table=%s, want 3 rows of %s in lab_results", b.rows, b.hdr.BatchID, b.def.Table, good.Header.BatchID)
				}
				return
			}
			if rej == nil {
				b.release()
				t.Fatalf("accepted, want rejection %s", tt.wantMetric)
			}
			if rej.metric != tt.wantMetric {
				t.Errorf("metric = %s, want %s (reason %q)", rej.metric, tt.wantMetric, rej.reason)
			}
			if !strings.Contains(rej.reason, tt.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", rej.reason, tt.wantReason)
			}
			if tt.wantID && rej.batchID == "" {
				t.Errorf("rejection has no batch id (reason %q)", rej.reason)
			}
			if rej.topic != tt.topic {
				t.Errorf("rejection addressed to %v, want the topic's %v", rej.topic, tt.topic)
			}
		})
	}
}

func TestDecodeBatchChecks(t *testing.T) {
	fs := goldenFeeds(t)
	def := fs.byTable["lab_results"]
	tests := []struct {
		name       string
		frame      func(t testing.TB) []byte
		wantMetric string
	}{
		{"header rows differ", func(t testing.TB) []byte {
			return labFrame(t, def, goldenTopic, "a", 1, 5, func(h *protocol.BatchHeader) { h.Rows = 4 })
		}, "row_count"},
		{"schema differs", func(t testing.TB) []byte { return wrongSchemaFrame(t, def) }, "schema_mismatch"},
		{"feed writes other table", func(t testing.TB) []byte {
			return labFrame(t, def, goldenTopic, "b", 1, 5, func(h *protocol.BatchHeader) { h.Table = "other" })
		}, "unknown_table"},
		{"ok", func(t testing.TB) []byte { return labFrame(t, def, goldenTopic, "c", 1, 5, nil) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, rej := decodeBatch(goldenTopic, tt.frame(t), fs, memory.DefaultAllocator)
			got := ""
			if rej != nil {
				got = rej.metric
			} else {
				b.release()
			}
			if got != tt.wantMetric {
				t.Fatalf("metric = %q, want %q (rejection %v)", got, tt.wantMetric, rej)
			}
		})
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, name := range []string{"batch_v1.bin", "batch_unknown_major.bin", "batch_bad_checksum.bin", "batch_truncated.bin", "batch_corrupt_arrow.bin", "batch_unknown_table.bin"} {
		f.Add(readGolden(f, name))
	}
	fs := goldenFeeds(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		b, rej := decodeBatch(goldenTopic, frame, fs, memory.DefaultAllocator)
		if (b == nil) == (rej == nil) {
			t.Fatalf("decodeBatch returned batch=%v rejection=%v; want exactly one", b != nil, rej)
		}
		if b != nil {
			if b.rows != b.hdr.Rows {
				t.Fatalf("accepted batch with %d rows, header says %d", b.rows, b.hdr.Rows)
			}
			b.release()
		} else if rej.reason == "" {
			t.Fatal("rejection without reason")
		}
	})
}
