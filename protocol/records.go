package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// SmallBatchBytes is the Arrow size under which EncodeRecords compresses with LZ4 instead
// of zstd.
const SmallBatchBytes = 1 << 20

// EncodeRecords writes record batches as one Arrow IPC stream with compressed bodies:
// the payload of a batch frame. Every record must have the given schema. Bodies are
// zstd-compressed, except when the records total less than SmallBatchBytes: then LZ4
// frames, because building a zstd encoder (the IPC writer makes one per stream) costs
// more than the whole small batch, and the archives of one-record XML files that make
// such batches are most of the customer's files. Both are standard Arrow IPC body
// codecs, so any Arrow reader decodes either; DecodeRecords does.
func EncodeRecords(schema *arrow.Schema, recs []arrow.RecordBatch) ([]byte, error) {
	var size int64
	for _, rec := range recs {
		for _, c := range rec.Columns() {
			size += dataBytes(c.Data())
		}
	}
	codec := ipc.WithZstd()
	if size < SmallBatchBytes {
		codec = ipc.WithLZ4()
	}
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), codec)
	for i, rec := range recs {
		if !rec.Schema().Equal(schema) {
			w.Close()
			return nil, fmt.Errorf("encoding records: record %d has schema %s, want %s", i, rec.Schema(), schema)
		}
		if err := w.Write(rec); err != nil {
			w.Close()
			return nil, fmt.Errorf("encoding records: record %d: %w", i, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encoding records: %w", err)
	}
	return buf.Bytes(), nil
}

// dataBytes is the size of an array's buffers, children included.
func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}

// DecodeRecords reads an Arrow IPC stream payload. The caller releases the records.
// A payload that is not a complete, readable stream yields an error wrapping ErrMalformed.
func DecodeRecords(payload []byte, mem memory.Allocator) (schema *arrow.Schema, recs []arrow.RecordBatch, err error) {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	defer func() {
		// The IPC reader panics on some corrupt inputs; a hostile payload must not take
		// the hub down.
		if r := recover(); r != nil {
			for _, rec := range recs {
				rec.Release()
			}
			schema, recs = nil, nil
			err = fmt.Errorf("decoding arrow payload: %v: %w", r, ErrMalformed)
		}
	}()
	rd, err := ipc.NewReader(bytes.NewReader(payload), ipc.WithAllocator(mem))
	if err != nil {
		return nil, nil, fmt.Errorf("decoding arrow payload: %v: %w", err, ErrMalformed)
	}
	defer rd.Release()
	for rd.Next() {
		rec := rd.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := rd.Err(); err != nil && !errors.Is(err, io.EOF) {
		for _, rec := range recs {
			rec.Release()
		}
		return nil, nil, fmt.Errorf("decoding arrow payload after %d records: %v: %w", len(recs), err, ErrMalformed)
	}
	return rd.Schema(), recs, nil
}
