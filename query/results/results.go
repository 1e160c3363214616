// Package results encodes query results, as Arrow record batches, in the
// formats clients and reports ask for: JSON, NDJSON, CSV, Arrow IPC, Parquet.
package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Writer encodes record batches as they come.
type Writer interface {
	Write(arrow.RecordBatch) error
	// Close writes what ends the stream (JSON's closing bracket, Parquet's
	// footer). It does not close the response.
	Close() error
}

// Encoding is one output format.
type Encoding struct {
	// Name is how requests and report definitions name it.
	Name string
	// ContentType is its media type.
	ContentType string
	// Ext is its file name extension.
	Ext string
	// Open starts encoding results of schema to w.
	Open func(w io.Writer, schema *arrow.Schema) (Writer, error)
}

var encodings = []Encoding{
	{"json", "application/json", "json", openJSON},
	{"ndjson", "application/x-ndjson", "ndjson", openNDJSON},
	{"csv", "text/csv; charset=utf-8", "csv", openCSV},
	{"arrow", "application/vnd.apache.arrow.stream", "arrows", openArrow},
	{"parquet", "application/vnd.apache.parquet", "parquet", openParquet},
}

// Lookup returns the encoding named name (case-insensitive).
func Lookup(name string) (Encoding, error) {
	for _, e := range encodings {
		if strings.EqualFold(e.Name, name) {
			return e, nil
		}
	}
	return Encoding{}, fmt.Errorf("unknown format %q (want json, ndjson, csv, arrow or parquet)", name)
}

// Negotiate picks the encoding named by format, else the first acceptable
// one in an HTTP Accept header, else JSON.
func Negotiate(format, accept string) (Encoding, error) {
	if format != "" {
		return Lookup(format)
	}
	if strings.TrimSpace(accept) == "" {
		return encodings[0], nil
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if mt == "*/*" || mt == "application/*" {
			return encodings[0], nil
		}
		for _, e := range encodings {
			if base, _, _ := strings.Cut(e.ContentType, ";"); base == mt {
				return e, nil
			}
		}
	}
	return Encoding{}, fmt.Errorf("none of the accepted types %q is offered (application/json, application/x-ndjson, text/csv, application/vnd.apache.arrow.stream, application/vnd.apache.parquet)", accept)
}

// jsonWriter writes {"columns": [...], "rows": [{...}, ...], "row_count": n}.
// Rows are objects keyed by column name, as arrow's JSON encoder writes them.
type jsonWriter struct {
	w     *bufio.Writer
	rows  int64
	lines bytes.Buffer
	nd    bool
}

type jsonColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

func openJSON(w io.Writer, schema *arrow.Schema) (Writer, error) {
	cols := make([]jsonColumn, schema.NumFields())
	for i, f := range schema.Fields() {
		cols[i] = jsonColumn{Name: f.Name, Type: f.Type.String()}
	}
	head, err := json.Marshal(cols)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(`{"columns":`)
	bw.Write(head)
	bw.WriteString(`,"rows":[`)
	return &jsonWriter{w: bw}, nil
}

func openNDJSON(w io.Writer, _ *arrow.Schema) (Writer, error) {
	return &jsonWriter{w: bufio.NewWriter(w), nd: true}, nil
}

func (j *jsonWriter) Write(rec arrow.RecordBatch) error {
	j.lines.Reset()
	if err := array.RecordToJSON(rec, &j.lines); err != nil {
		return fmt.Errorf("encoding rows as JSON: %w", err)
	}
	for line := range bytes.Lines(j.lines.Bytes()) {
		line = bytes.TrimRight(line, "\n")
		if len(line) == 0 {
			continue
		}
		if !j.nd && j.rows > 0 {
			j.w.WriteByte(',')
		}
		j.w.Write(line)
		if j.nd {
			j.w.WriteByte('\n')
		}
		j.rows++
	}
	return j.w.Flush()
}

func (j *jsonWriter) Close() error {
	if !j.nd {
		fmt.Fprintf(j.w, `],"row_count":%d}`+"\n", j.rows)
	}
	return j.w.Flush()
}

type csvWriter struct{ w *csv.Writer }

func openCSV(w io.Writer, schema *arrow.Schema) (Writer, error) {
	return &csvWriter{csv.NewWriter(w, schema, csv.WithHeader(true), csv.WithNullWriter(""), csv.WithCRLF(false),
		csv.WithCustomTypeConverter(csvText))}, nil
}

// csvText renders the types arrow's CSV writer does not know (times of day,
// intervals) by their Arrow text form.
func csvText(typ arrow.DataType, col arrow.Array) ([]string, bool) {
	switch typ.(type) {
	case *arrow.Time64Type, *arrow.MonthDayNanoIntervalType:
	default:
		return nil, false
	}
	out := make([]string, col.Len())
	for i := range out {
		if col.IsValid(i) {
			out[i] = col.ValueStr(i)
		}
	}
	return out, true
}

func (c *csvWriter) Write(rec arrow.RecordBatch) error {
	if err := c.w.Write(rec); err != nil {
		return fmt.Errorf("encoding rows as CSV: %w", err)
	}
	return c.w.Flush()
}

func (c *csvWriter) Close() error { return c.w.Flush() }

type arrowWriter struct{ w *ipc.Writer }

func openArrow(w io.Writer, schema *arrow.Schema) (Writer, error) {
	return &arrowWriter{ipc.NewWriter(w, ipc.WithSchema(schema))}, nil
}

func (a *arrowWriter) Write(rec arrow.RecordBatch) error { return a.w.Write(rec) }
func (a *arrowWriter) Close() error                      { return a.w.Close() }

type parquetWriter struct{ w *pqarrow.FileWriter }

func openParquet(w io.Writer, schema *arrow.Schema) (Writer, error) {
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd))
	// The struct hides w's Close: pqarrow closes a sink that has one, and
	// the caller owns w.
	fw, err := pqarrow.NewFileWriter(schema, struct{ io.Writer }{w}, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return nil, fmt.Errorf("opening parquet writer: %w", err)
	}
	return &parquetWriter{fw}, nil
}

func (p *parquetWriter) Write(rec arrow.RecordBatch) error { return p.w.Write(rec) }
func (p *parquetWriter) Close() error                      { return p.w.Close() }
