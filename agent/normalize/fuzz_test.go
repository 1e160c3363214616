package normalize

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

// FuzzNormalizeCSV checks the no-loss, no-duplicate contract on arbitrary input: every
// data record becomes exactly one row or one reject, numbered 1..Rows without gaps, and
// no Arrow memory leaks, whatever the bytes.
func FuzzNormalizeCSV(f *testing.F) {
	for _, s := range []string{
		"visit_id,age,weight,admitted,visit_date,note\nV1,40,70.5,true,2024-01-01,ok\nV2,x,1,1,2024-01-01,\n",
		"visit_id,note\n\"a\"\"b\",\"c\nd\"\n,\n\"open",
		"\ufeffVISIT_ID ;note\r\nV1;x\r\n",
		"visit_id\n\n\nV1\nV2,extra\n",
		"",
	} {
		f.Add([]byte(s))
	}
	def := loadDef(f, "testdata/cases/rejects/feed.yaml")
	add := *def
	add.Drift = feed.DriftAdd
	f.Fuzz(func(t *testing.T, data []byte) {
		// A byte order mark selects UTF-16 whatever the feed declares, so arbitrary
		// bytes may also not decode.
		checkContract(t, def, data, "fuzz.csv", false, ErrHeader, ErrDecode)
		checkContract(t, &add, data, "fuzz.csv", false, ErrHeader, ErrDecode, ErrDrift)
	})
}

// checkContract runs def over data and fails unless every record became exactly one
// row or one reject, numbered 1..Rows without gaps, in batches of at most 3 rows, with
// no Arrow memory leaked; a file-level error must wrap one of allowed. rawUTF8 also
// requires rejects' raw text to be UTF-8 (XML, which is decoded; CSV keeps the exact
// source bytes, which may not be).
func checkContract(t *testing.T, def *feed.Definition, data []byte, source string, rawUTF8 bool, allowed ...error) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{BatchRows: 3, Allocator: mem, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	mark := func(row int64) {
		if seen[row] {
			t.Fatalf("row %d produced twice", row)
		}
		seen[row] = true
	}
	st, err := n.Run(context.Background(), bytes.NewReader(data), source, func(b arrow.RecordBatch) error {
		if b.NumRows() == 0 || b.NumRows() > 3 {
			t.Fatalf("batch of %d rows", b.NumRows())
		}
		rows := b.Column(int(b.NumCols()) - 1).(*array.Int64)
		for i := range rows.Len() {
			mark(rows.Value(i))
		}
		return nil
	}, func(r Reject) error {
		if r.Reason == "" || r.Line < 1 || rawUTF8 && !utf8.ValidString(r.Raw) {
			t.Fatalf("reject without reason or line, or raw not UTF-8: %+v", r)
		}
		mark(r.Row)
		return nil
	})
	if err != nil {
		if !slices.ContainsFunc(allowed, func(e error) bool { return errors.Is(err, e) }) {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if st.Rows != st.Accepted+st.Rejected || int64(len(seen)) != st.Rows {
		t.Fatalf("stats %+v, %d distinct rows seen", st, len(seen))
	}
	for r := int64(1); r <= st.Rows; r++ {
		if !seen[r] {
			t.Fatalf("row %d lost", r)
		}
	}
}
