package protocol

import (
	"errors"
	"testing"
	"time"
)

func TestCommitNotice(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b, err := EncodeCommitNotice(CommitNotice{Table: "lab_results", Hub: "hub-1", CommittedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	n, err := DecodeCommitNotice(b)
	if err != nil {
		t.Fatal(err)
	}
	if n.Table != "lab_results" || n.Hub != "hub-1" || !n.CommittedAt.Equal(at) || n.Version != Version {
		t.Errorf("round trip = %+v", n)
	}
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"other major", `{"v":"2.0","table":"x"}`, ErrUnknownVersion},
		{"no table", `{"v":"1.0"}`, ErrMalformed},
		{"wildcard table", `{"v":"1.0","table":"a+b"}`, ErrMalformed},
		{"not json", `{"v":1}`, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeCommitNotice([]byte(tc.in)); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := EncodeCommitNotice(CommitNotice{Table: "a/b"}); err == nil {
		t.Error("encoded a table name with a topic separator")
	}
}

func TestCommitNoticeTopic(t *testing.T) {
	if got := CommitNoticeTopic("vitals"); got != "medlake/v1/_lake/vitals/committed" {
		t.Errorf("CommitNoticeTopic = %q", got)
	}
	for _, tc := range []struct {
		topic string
		table string // "" = error
	}{
		{"medlake/v1/_lake/vitals/committed", "vitals"},
		{"medlake/v1/_lake/a/b/committed", ""},
		{"medlake/v1/_lake//committed", ""},
		{"medlake/v1/t1/f1/a1/ack", ""},
		{"medlake/v1/_lake/vitals/batch", ""},
	} {
		got, err := ParseCommitNoticeTopic(tc.topic)
		if (err == nil) != (tc.table != "") || got != tc.table {
			t.Errorf("ParseCommitNoticeTopic(%q) = %q, %v; want %q", tc.topic, got, err, tc.table)
		}
	}
	// Agents' topics have four levels under the root; a notice's must never parse as one.
	if _, err := ParseTopic(CommitNoticeTopic("vitals")); err == nil {
		t.Error("a commit notice topic parses as an agent topic")
	}
}

func FuzzDecodeCommitNotice(f *testing.F) {
	f.Add([]byte(`{"v":"1.1","table":"lab_results","hub":"h","committed_at":"2026-12-02T10:00:00Z"}`))
	f.Add([]byte(`{"v":"1.0","table":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeCommitNotice(b)
		if err != nil {
			return
		}
		out, err := EncodeCommitNotice(n)
		if err != nil {
			t.Fatalf("decoded notice %+v does not encode: %v", n, err)
		}
		if _, err := DecodeCommitNotice(out); err != nil {
			t.Fatalf("re-encoded notice does not decode: %v", err)
		}
	})
}
