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

// EncodeRecords writes record batches as one Arrow IPC stream with zstd-compressed
// bodies: the payload of a batch frame. Every record must have the given schema.
func EncodeRecords(schema *arrow.Schema, recs []arrow.RecordBatch) ([]byte, error) {
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithZstd())
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
