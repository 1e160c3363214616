package normalize

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol/feed"
)

var update = flag.Bool("update", false, "rewrite testdata/cases/*/expected.out")

func loadDef(t testing.TB, path string) *feed.Definition {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := feed.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// run normalizes input with a leak-checked allocator and renders batches and rejects as text.
func run(t testing.TB, def *feed.Definition, input io.Reader, batchRows int) (string, Stats, error) {
	t.Helper()
	return runSource(t, def, input, batchRows, "export.zip!"+def.Name+".csv")
}

// runSource is run with the entry named source.
func runSource(t testing.TB, def *feed.Definition, input io.Reader, batchRows int, source string) (string, Stats, error) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{BatchRows: batchRows, Allocator: mem, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	st, err := n.Run(context.Background(), input, source, func(b arrow.RecordBatch) error {
		if err := checkBatchSchema(def, b.Schema()); err != nil {
			t.Error(err)
		}
		if md := b.Schema().Metadata(); md.FindKey(feed.MetaFeed) < 0 {
			t.Errorf("batch schema lacks %s metadata", feed.MetaFeed)
		}
		fmt.Fprintf(&out, "batch rows=%d\n", b.NumRows())
		for r := range int(b.NumRows()) {
			out.WriteString(" ")
			for c := range int(b.NumCols()) {
				fmt.Fprintf(&out, " %s=%s", b.ColumnName(c), cell(b.Column(c), r))
			}
			out.WriteString("\n")
		}
		return nil
	}, func(r Reject) error {
		fmt.Fprintf(&out, "reject source=%s row=%d line=%d column=%q reason=%q raw=%q\n", r.Source, r.Row, r.Line, r.Column, r.Reason, r.Raw)
		return nil
	})
	fmt.Fprintf(&out, "stats rows=%d accepted=%d rejected=%d batches=%d unmapped=%q\n", st.Rows, st.Accepted, st.Rejected, st.Batches, st.Unmapped)
	return out.String(), st, err
}

// testSecret is the secret store of the golden cases: the key of secret N is "key-N".
func testSecret(name string) ([]byte, error) {
	if name == "missing" {
		return nil, errors.New("no such secret")
	}
	return []byte("key-" + name), nil
}

// checkBatchSchema checks a batch's schema: def.BatchSchema(), or under drift add that
// schema with nullable string columns inserted before _row.
func checkBatchSchema(def *feed.Definition, got *arrow.Schema) error {
	want := def.BatchSchema()
	if got.Equal(want) {
		return nil
	}
	extra := got.NumFields() - want.NumFields()
	if def.DriftPolicy() != feed.DriftAdd || extra <= 0 {
		return fmt.Errorf("batch schema %v, want %v", got, want)
	}
	// Added columns sit between the defined ones and the position fields.
	npos := len(feed.PositionFields())
	for i := range got.NumFields() {
		f := got.Field(i)
		switch {
		case i < want.NumFields()-npos:
			if !f.Equal(want.Field(i)) {
				return fmt.Errorf("batch field %d is %v, want %v", i, f, want.Field(i))
			}
		case i >= got.NumFields()-npos:
			if w := want.Field(i - extra); !f.Equal(w) {
				return fmt.Errorf("batch field %d is %v, want %v", i, f, w)
			}
		default:
			if !f.Nullable || !arrow.TypeEqual(f.Type, arrow.BinaryTypes.String) {
				return fmt.Errorf("added field %v is not a nullable string", f)
			}
		}
	}
	if !got.Metadata().Equal(want.Metadata()) {
		return fmt.Errorf("batch metadata %v, want %v", got.Metadata(), want.Metadata())
	}
	return nil
}

func cell(a arrow.Array, i int) string {
	if a.IsNull(i) {
		return "NULL"
	}
	switch a := a.(type) {
	case *array.String:
		return fmt.Sprintf("%q", a.Value(i))
	case *array.Timestamp:
		return a.Value(i).ToTime(arrow.Microsecond).Format("2006-01-02T15:04:05.999999Z07:00")
	case *array.Date32:
		return a.Value(i).FormattedString()
	case *array.Decimal128:
		return a.Value(i).ToString(a.DataType().(*arrow.Decimal128Type).Scale)
	}
	return a.ValueStr(i)
}

// compareGolden compares got with the golden file, rewriting it first under -update.
func compareGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update after checking):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

// TestCases runs every testdata/cases/<case>/{feed.yaml,input.csv} and compares with
// expected.out (batches of 2 rows so batching shows in every case). A file-level error
// is part of the expected output, on its last line.
func TestCases(t *testing.T) {
	dirs, err := filepath.Glob("testdata/cases/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			def := loadDef(t, filepath.Join(dir, "feed.yaml"))
			f, err := os.Open(filepath.Join(dir, "input.csv"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, st, err := run(t, def, f, 2)
			if err != nil {
				got += fmt.Sprintf("error: %v\n", err)
			} else if st.Rows != st.Accepted+st.Rejected {
				t.Errorf("rows %d != accepted %d + rejected %d", st.Rows, st.Accepted, st.Rejected)
			}
			compareGolden(t, filepath.Join(dir, "expected.out"), got)
		})
	}
}

func TestHeaderErrors(t *testing.T) {
	def := loadDef(t, "testdata/cases/rejects/feed.yaml")
	for _, tt := range []struct {
		name, input, where string
	}{
		{"empty", "", "no header"},
		{"only blank lines", "\n\n", "no header"},
		{"required column missing", "age,weight\n1,2\n", `"visit_id"`},
		{"column twice", "visit_id,Age, AGE \nV1,1,2\n", `AGE`},
		{"bad quoting in header", "visit_id,\"age\n", "header line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := run(t, def, strings.NewReader(tt.input), 10)
			if !errors.Is(err, ErrHeader) {
				t.Fatalf("Run error %v, want ErrHeader", err)
			}
			if !strings.Contains(err.Error(), tt.where) || !strings.Contains(err.Error(), "export.zip!visits.csv") {
				t.Errorf("error %q does not name the source and %s", err, tt.where)
			}
		})
	}
}

func TestUnterminatedQuoteAtEnd(t *testing.T) {
	def := loadDef(t, "testdata/cases/rejects/feed.yaml")
	for _, input := range []string{
		"visit_id,note\nV1,ok\nV2,\"open\n",
		"visit_id,note\nV1,ok\nV2,\"open\nmore\n",
		"visit_id,note\nV1,ok\nV2,\"open",
		"visit_id,note\nV1,ok\nV2,\"open\r\n",
	} {
		got, st, err := run(t, def, strings.NewReader(input), 10)
		if err != nil {
			t.Fatal(err)
		}
		if st.Accepted != 1 || st.Rejected != 1 || !strings.Contains(got, "row=2") {
			t.Errorf("%q: truncated last record not rejected:\n%s", input, got)
		}
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestRunStops(t *testing.T) {
	def := loadDef(t, "testdata/cases/rejects/feed.yaml")
	input := "visit_id,age\nV1,1\nV2,x\nV3,3\n"
	boom := errors.New("boom")
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{BatchRows: 1, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	ok := func(arrow.RecordBatch) error { return nil }
	okReject := func(Reject) error { return nil }
	ctx := context.Background()

	if _, err := n.Run(ctx, strings.NewReader(input), "s", func(arrow.RecordBatch) error { return boom }, okReject); !errors.Is(err, boom) {
		t.Errorf("emit error: Run = %v", err)
	}
	if _, err := n.Run(ctx, strings.NewReader(input), "s", ok, func(Reject) error { return boom }); !errors.Is(err, boom) || !strings.Contains(err.Error(), "row 2") {
		t.Errorf("reject error: Run = %v", err)
	}
	r := io.MultiReader(strings.NewReader(input), failingReader{boom})
	if _, err := n.Run(ctx, r, "s", ok, okReject); !errors.Is(err, boom) || !strings.Contains(err.Error(), "reading s") {
		t.Errorf("read error: Run = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.Run(cctx, strings.NewReader(input), "s", ok, okReject); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: Run = %v", err)
	}
}

// TestRetainedBatch checks the ownership rule: a batch kept past emit stays valid.
func TestRetainedBatch(t *testing.T) {
	def := loadDef(t, "testdata/cases/delimiters/feed.yaml")
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	n, err := New(def, Options{BatchRows: 2, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	var kept []arrow.RecordBatch
	st, err := n.Run(context.Background(), strings.NewReader("med_id;name\n1;a\n2;b\n3;c\n"), "s", func(b arrow.RecordBatch) error {
		b.Retain()
		kept = append(kept, b)
		return nil
	}, func(Reject) error { return nil })
	if err != nil || st.Batches != 2 || len(kept) != 2 {
		t.Fatalf("Run = %+v, %v; kept %d", st, err, len(kept))
	}
	if got := kept[1].Column(1).(*array.String).Value(0); got != "c" {
		t.Errorf("retained batch value %q, want c", got)
	}
	for _, b := range kept {
		b.Release()
	}
}

func TestNewRejectsInvalidDefinition(t *testing.T) {
	if _, err := New(&feed.Definition{Name: "x"}, Options{}); !errors.Is(err, feed.ErrInvalid) {
		t.Errorf("New(invalid) = %v, want feed.ErrInvalid", err)
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// endless is a line that never ends.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.n += int64(len(p))
	return len(p), nil
}

// TestRecordTooLong: a record longer than MaxRecordBytes (a file with no line breaks,
// an unterminated quote) fails the entry, naming the record and its line, after
// reading about MaxRecordBytes, not the whole input.
func TestRecordTooLong(t *testing.T) {
	def := loadDef(t, "testdata/cases/types/feed.yaml")
	for _, tt := range []struct {
		name     string
		in       func(*endless) io.Reader
		wantLine string
	}{
		{"endless line", func(e *endless) io.Reader {
			return io.MultiReader(strings.NewReader("lab_id,count\nL1,1\n"), e)
		}, "record 2, starting on line 3"},
		{"unterminated quote", func(e *endless) io.Reader {
			return io.MultiReader(strings.NewReader("lab_id,count\nL1,1\nL2,2\n\"L3,"), e)
		}, "record 3, starting on line 4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(def, Options{MaxRecordBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			var rest endless
			st, err := n.Run(context.Background(), tt.in(&rest), "big.csv", func(arrow.RecordBatch) error { return nil }, func(Reject) error { return nil })
			if !errors.Is(err, ErrRecordTooLong) || !strings.Contains(err.Error(), "big.csv: "+tt.wantLine) {
				t.Fatalf("Run = %+v, %v; want ErrRecordTooLong naming %q", st, err, tt.wantLine)
			}
			if rest.n > 2<<20 {
				t.Errorf("read %d bytes of the endless record, want about the 1 MiB limit", rest.n)
			}
		})
	}
}
