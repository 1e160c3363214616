package hub

import (
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/medlake/medlake/protocol"
	"github.com/medlake/medlake/protocol/feed"
)

// labRecords builds n seed-shaped lab_results rows of entry source; _row counts from 1.
func labRecords(tb testing.TB, def *feed.Definition, facility, src, source string, n int) arrow.RecordBatch {
	tb.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, def.BatchSchema())
	defer b.Release()
	base := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	for i := range n {
		b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("%s-%s-L%07d", facility, src[:8], i))
		b.Field(1).(*array.StringBuilder).Append(fmt.Sprintf("%s-P%05d", facility, i%5000))
		if i%7 == 0 {
			b.Field(2).(*array.StringBuilder).AppendNull()
		} else {
			b.Field(2).(*array.StringBuilder).Append([]string{"2345-7", "718-7", "2160-0", "6690-2"}[i%4])
		}
		b.Field(3).(*array.Float64Builder).Append(float64(i%1000) / 10)
		b.Field(4).(*array.BooleanBuilder).Append(i%11 == 0)
		ts := base.Add(time.Duration(i%(3*24*3600)) * time.Second)
		b.Field(5).(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixMicro()))
		b.Field(6).(*array.Date32Builder).Append(arrow.Date32FromTime(ts))
		b.Field(7).(*array.Int64Builder).Append(int64(i % 3))
		if def.HasRescued() {
			if i%5 == 0 {
				b.Field(8).(*array.StringBuilder).Append(fmt.Sprintf(`{"Comment":"c%d"}`, i))
			} else {
				b.Field(8).AppendNull()
			}
		}
		b.Field(len(b.Fields()) - 2).(*array.StringBuilder).Append(source)
		b.Field(len(b.Fields()) - 1).(*array.Int64Builder).Append(int64(i + 1))
	}
	return b.NewRecordBatch()
}

// rowsBatch builds a batch of def holding rows rows for a committer's buffer: fill
// appends column f's value of row r and reports whether it did; _source_file is source,
// _row counts on from *row, and every other column is NULL.
func rowsBatch(def *feed.Definition, id, source string, rows int, row *int, fill func(f arrow.Field, r int, b array.Builder) bool) *batch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, def.BatchSchema())
	defer b.Release()
	for i, f := range def.BatchSchema().Fields() {
		for r := range rows {
			switch {
			case fill(f, r, b.Field(i)):
			case f.Name == feed.ColSourceFile:
				b.Field(i).(*array.StringBuilder).Append(source)
			case f.Name == feed.ColRow:
				*row++
				b.Field(i).(*array.Int64Builder).Append(int64(*row))
			default:
				b.Field(i).AppendNull()
			}
		}
	}
	rec := b.NewRecordBatch()
	return &batch{def: def, recs: []arrow.RecordBatch{rec}, rows: rec.NumRows(),
		hdr: protocol.BatchHeader{BatchID: id, Tenant: "t1", Facility: "F001", Agent: "a1",
			Feed: def.Name, FeedVersion: def.Version, Table: def.Table, Rows: rec.NumRows()}}
}

// withAdded returns rec with string columns named added put before its last (_row).
func withAdded(rec arrow.RecordBatch, added []string) arrow.RecordBatch {
	n := int(rec.NumRows())
	fields := rec.Schema().Fields()
	cols := rec.Columns()
	k := len(fields) - len(feed.PositionFields())
	outF := append([]arrow.Field{}, fields[:k]...)
	outC := append([]arrow.Array{}, cols[:k]...)
	for _, name := range added {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		for i := range n {
			if i%3 == 2 {
				b.AppendNull()
			} else {
				b.Append(fmt.Sprintf("%s-%d", name, i))
			}
		}
		a := b.NewArray()
		defer a.Release()
		b.Release()
		outF = append(outF, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
		outC = append(outC, a)
	}
	outF = append(outF, fields[k:]...)
	outC = append(outC, cols[k:]...)
	md := rec.Schema().Metadata()
	return array.NewRecordBatch(arrow.NewSchema(outF, &md), outC, int64(n))
}

// labFrame encodes a batch of n rows from source "src" (any string; hashed into a
// SHA-256-shaped id) as part of parts, published by topic's agent. edit may change the
// header before encoding.
func labFrame(tb testing.TB, def *feed.Definition, topic protocol.Topic, src string, part, n int, edit func(*protocol.BatchHeader)) []byte {
	tb.Helper()
	return labFrameAdded(tb, def, topic, src, part, n, nil, edit)
}

// labFrameAdded is labFrame with string columns, as drift add makes them, before the
// position fields:
// row i of column c holds "c-i", NULL for every third row.
func labFrameAdded(tb testing.TB, def *feed.Definition, topic protocol.Topic, src string, part, n int, added []string, edit func(*protocol.BatchHeader)) []byte {
	tb.Helper()
	sha := fmt.Sprintf("%064x", []byte(src))
	sha = sha[len(sha)-64:]
	rec := labRecords(tb, def, topic.Facility, sha, src+".csv.gz", n)
	defer rec.Release()
	if len(added) > 0 {
		rec = withAdded(rec, added)
		defer rec.Release()
	}
	payload, err := protocol.EncodeRecords(rec.Schema(), []arrow.RecordBatch{rec})
	if err != nil {
		tb.Fatal(err)
	}
	h := protocol.BatchHeader{
		BatchID: protocol.BatchID(sha, def.Name, def.Version, part), Tenant: topic.Tenant, Facility: topic.Facility,
		Agent: topic.Agent, Feed: def.Name, FeedVersion: def.Version, Table: def.Table,
		SourceFile: src + ".csv.gz", SourceSHA256: sha, Part: part, Parts: max(part, 1), Rows: int64(n),
		CreatedAt: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC),
	}
	if edit != nil {
		edit(&h)
	}
	frame, err := protocol.EncodeBatch(h, payload)
	if err != nil {
		tb.Fatal(err)
	}
	return frame
}

// wrongSchemaFrame is a well-formed batch whose records lack the feed's columns.
func wrongSchemaFrame(tb testing.TB, def *feed.Definition) []byte {
	tb.Helper()
	sc := arrow.NewSchema([]arrow.Field{{Name: "lab_id", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	payload, err := protocol.EncodeRecords(sc, []arrow.RecordBatch{rec})
	if err != nil {
		tb.Fatal(err)
	}
	sha := fmt.Sprintf("%064d", 7)
	frame, err := protocol.EncodeBatch(protocol.BatchHeader{
		BatchID: protocol.BatchID(sha, def.Name, def.Version, 1), Tenant: goldenTopic.Tenant, Facility: goldenTopic.Facility,
		Agent: goldenTopic.Agent, Feed: def.Name, FeedVersion: def.Version, Table: def.Table, SourceFile: "x.csv",
		SourceSHA256: sha, Part: 1, Parts: 1, Rows: 2,
	}, payload)
	if err != nil {
		tb.Fatal(err)
	}
	return frame
}

func batchID(tb testing.TB, frame []byte) string {
	tb.Helper()
	id := protocol.PeekBatchID(frame)
	if id == "" {
		tb.Fatal("frame has no readable batch id")
	}
	return id
}
