package protocol_test

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol"
)

func TestParseTopic(t *testing.T) {
	tests := []struct {
		topic string
		want  protocol.Topic
		ok    bool
	}{
		{"medlake/v1/t0001/f000001/agent-1/batch", protocol.Topic{Tenant: "t0001", Facility: "f000001", Agent: "agent-1", Kind: "batch"}, true},
		{protocol.AckTopic("t", "f", "a"), protocol.Topic{Tenant: "t", Facility: "f", Agent: "a", Kind: "ack"}, true},
		{protocol.StatusTopic("t", "f", "a"), protocol.Topic{Tenant: "t", Facility: "f", Agent: "a", Kind: "status"}, true},
		{"medlake/v2/t/f/a/batch", protocol.Topic{}, false},
		{"medlake/v1/t/f/batch", protocol.Topic{}, false},
		{"medlake/v1/t/f/a/b/batch", protocol.Topic{}, false},
		{"medlake/v1/t/+/a/batch", protocol.Topic{}, false},
		{"medlake/v1/t/f/../batch", protocol.Topic{}, false},
		{"medlake/v1/t/f/a/unknown", protocol.Topic{}, false},
		{"medlake/v1//f/a/batch", protocol.Topic{}, false},
	}
	for _, tt := range tests {
		got, err := protocol.ParseTopic(tt.topic)
		if (err == nil) != tt.ok {
			t.Errorf("ParseTopic(%q) error = %v, want ok=%v", tt.topic, err, tt.ok)
			continue
		}
		if tt.ok && got != tt.want {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
		if !tt.ok && !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("ParseTopic(%q) error %v does not wrap ErrMalformed", tt.topic, err)
		}
	}
}

func TestBatchIDDeterministic(t *testing.T) {
	a := protocol.BatchID("ab", "f", 1, 1)
	if a != protocol.BatchID("ab", "f", 1, 1) {
		t.Fatal("BatchID is not deterministic")
	}
	for _, other := range []string{protocol.BatchID("ab", "f", 1, 2), protocol.BatchID("ab", "f", 2, 1), protocol.BatchID("ab", "g", 1, 1), protocol.BatchID("ac", "f", 1, 1)} {
		if other == a {
			t.Errorf("distinct inputs share id %s", a)
		}
	}
}

func TestDecodeMessagesRejects(t *testing.T) {
	tests := []struct {
		name string
		data string
		want error
	}{
		{"empty ack", ``, protocol.ErrTruncated},
		{"cut ack", `{"v":"1.0","batch_id":"x"`, protocol.ErrTruncated},
		{"future major", `{"v":"2.0","batch_id":"x","status":"committed"}`, protocol.ErrUnknownVersion},
		{"newer minor accepted? no: unknown status", `{"v":"1.7","batch_id":"x","status":"maybe"}`, protocol.ErrMalformed},
		{"rejected without reason", `{"v":"1.0","batch_id":"x","status":"rejected"}`, protocol.ErrMalformed},
		{"trailing data", `{"v":"1.0","batch_id":"x","status":"committed"} {}`, protocol.ErrMalformed},
		{"not json", `garbage`, protocol.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := protocol.DecodeAck([]byte(tt.data)); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeAck error = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := protocol.DecodeAck([]byte(`{"v":"1.7","batch_id":"x","status":"committed","new_field":1}`)); err != nil {
		t.Errorf("a newer minor version with an unknown field must decode: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, name := range []string{"batch_v1.bin", "batch_truncated.bin", "batch_corrupt_arrow.bin"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		b, err := protocol.DecodeBatch(frame)
		protocol.PeekBatchID(frame)
		table := protocol.PeekBatchTable(frame)
		if err != nil {
			return
		}
		if b.Header.Validate() != nil {
			t.Fatalf("decoded an invalid header: %+v", b.Header)
		}
		if table != b.Header.Table {
			t.Fatalf("PeekBatchTable = %q, the decoded header says %q", table, b.Header.Table)
		}
		_, recs, err := protocol.DecodeRecords(b.Payload, memory.DefaultAllocator)
		if err == nil {
			for _, r := range recs {
				r.Release()
			}
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	for _, name := range []string{"ack_committed.json", "ack_rejected.json"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := protocol.DecodeAck(data)
		if err != nil {
			return
		}
		if _, err := protocol.EncodeAck(a); err != nil {
			t.Fatalf("decoded ack does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeStatus(f *testing.F) {
	data, err := os.ReadFile("testdata/status.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.DecodeStatus(data)
		if err != nil {
			return
		}
		if _, err := protocol.EncodeStatus(s); err != nil {
			t.Fatalf("decoded status does not re-encode: %v", err)
		}
	})
}

func TestDecodeConfigRejects(t *testing.T) {
	one := protocol.NewConfigFeed("a", 1, "name: a\n")
	rev := protocol.ConfigRevision([]protocol.ConfigFeed{one})
	enc := func(c protocol.Config) string {
		c.Version = protocol.Version
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	twice := protocol.Config{Revision: rev, Feeds: []protocol.ConfigFeed{one, one}}
	twice.Revision = protocol.ConfigRevision(twice.Feeds)
	v0 := protocol.NewConfigFeed("a", 0, "name: a\n")
	tests := []struct {
		name, data string
		want       error
	}{
		{"empty", ``, protocol.ErrTruncated},
		{"cut", `{"v":"1.0","revision":"x"`, protocol.ErrTruncated},
		{"future major", `{"v":"2.0","revision":"x","feeds":[]}`, protocol.ErrUnknownVersion},
		{"no revision", `{"v":"1.0","feeds":[]}`, protocol.ErrMalformed},
		{"wrong revision", enc(protocol.Config{Revision: "0123", Feeds: []protocol.ConfigFeed{one}}), protocol.ErrChecksum},
		{"feed twice", enc(twice), protocol.ErrMalformed},
		{"version 0", enc(protocol.Config{Revision: protocol.ConfigRevision([]protocol.ConfigFeed{v0}), Feeds: []protocol.ConfigFeed{v0}}), protocol.ErrMalformed},
		{"no name", enc(protocol.Config{Revision: "x", Feeds: []protocol.ConfigFeed{{Version: 1}}}), protocol.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := protocol.DecodeConfig([]byte(tt.data)); !errors.Is(err, tt.want) {
				t.Fatalf("DecodeConfig error = %v, want %v", err, tt.want)
			}
		})
	}
	// The revision does not depend on the order feeds are listed in.
	b := protocol.NewConfigFeed("b", 2, "name: b\n")
	if protocol.ConfigRevision([]protocol.ConfigFeed{one, b}) != protocol.ConfigRevision([]protocol.ConfigFeed{b, one}) {
		t.Error("ConfigRevision depends on order")
	}
	if protocol.ConfigRevision([]protocol.ConfigFeed{one}) == protocol.ConfigRevision([]protocol.ConfigFeed{protocol.NewConfigFeed("a", 2, "name: a\n")}) {
		t.Error("ConfigRevision ignores the version")
	}
}

func FuzzDecodeConfig(f *testing.F) {
	for _, name := range []string{"config.json", "config_bad_sha256.json"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"v":"1.0","revision":"x","feeds":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := protocol.DecodeConfig(data)
		if err != nil {
			return
		}
		b, err := protocol.EncodeConfig(c)
		if err != nil {
			t.Fatalf("decoded config does not re-encode: %v", err)
		}
		again, err := protocol.DecodeConfig(b)
		if err != nil || again.Revision != c.Revision || len(again.Feeds) != len(c.Feeds) {
			t.Fatalf("re-encoded config decodes differently: %v", err)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	f.Add("medlake/v1/t0001/f000001/agent-1/batch")
	f.Fuzz(func(t *testing.T, topic string) {
		tp, err := protocol.ParseTopic(topic)
		if err != nil {
			return
		}
		if tp.String() != topic {
			t.Fatalf("ParseTopic(%q).String() = %q", topic, tp.String())
		}
	})
}
