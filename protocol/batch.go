package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"time"
)

// Protocol version carried by every message this package encodes.
const (
	MajorVersion = 1
	MinorVersion = 1
)

// Version is the "major.minor" string written into every message.
var Version = strconv.Itoa(MajorVersion) + "." + strconv.Itoa(MinorVersion)

// Decoding errors; test with errors.Is. Each returned error also names what was wrong.
var (
	// ErrUnknownVersion: the message has a major version this decoder does not speak.
	ErrUnknownVersion = errors.New("unknown protocol version")
	// ErrChecksum: the header or payload does not match its checksum.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrTruncated: the message ends before its declared length.
	ErrTruncated = errors.New("truncated message")
	// ErrMalformed: the message is not a well-formed medlake message.
	ErrMalformed = errors.New("malformed message")
)

// Batch frame layout (all integers big-endian):
//
//	magic "MLKB" | major u8 | minor u8 | header length u32 | header JSON |
//	CRC-32C of header JSON u32 | payload
//
// The header JSON carries the payload length and SHA-256, so a frame is self-checking
// end to end: the broker, the spool or a disk can corrupt or cut it and the decoder says so.
const (
	batchMagic     = "MLKB"
	fixedPrefixLen = 4 + 1 + 1 + 4
	maxHeaderLen   = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// BatchHeader describes one batch: where it comes from, where it goes, and how to check it.
type BatchHeader struct {
	Version     string `json:"v"`
	BatchID     string `json:"batch_id"`
	Tenant      string `json:"tenant"`
	Facility    string `json:"facility"`
	Agent       string `json:"agent"`
	Feed        string `json:"feed"`
	FeedVersion int    `json:"feed_version"`
	Table       string `json:"table"`
	// SourceFile is the name of the file the agent took (an archive, or a plain file);
	// SourceSHA256 is its content hash. The entry each row comes from is in the rows'
	// _source_file column.
	SourceFile    string `json:"source_file"`
	SourceSHA256  string `json:"source_sha256"`
	Part          int    `json:"part"`
	Parts         int    `json:"parts"`
	Rows          int64  `json:"rows"`
	PayloadBytes  int64  `json:"payload_bytes"`
	PayloadSHA256 string `json:"payload_sha256"`
	// CreatedAt is when the agent framed and spooled the batch (agent clock).
	CreatedAt time.Time `json:"created_at"`
	// SourceModTime is the source file's modification time as the agent found it
	// (facility clock): where freshness is measured from. Since 1.1; absent from older
	// agents, and then the hub measures freshness from CreatedAt.
	SourceModTime time.Time `json:"source_mtime,omitzero"`
	// The fields below are set on archive chunks only (Table ArchiveTable): the source
	// file's size, its folder relative to the watched folder (what match.folder saw),
	// and the feeds its entries matched, so the archive can be found and re-read by feed.
	SourceSize int64    `json:"source_size,omitempty"`
	SourceDir  string   `json:"source_dir,omitempty"`
	Feeds      []string `json:"feeds,omitempty"`
}

// Raw archives: besides its row batches, an agent sends the file it took itself, cut
// into chunks of at most ArchiveChunkBytes, as batches of the reserved table
// ArchiveTable under the reserved feed ArchiveFeed. Their payload is the file's bytes,
// Part/Parts number the chunks, SourceSHA256 and SourceSize describe the whole file.
// The hub acknowledges a chunk once it is durable in the object store and, for the
// chunk that completes the file, once the whole file is stored under its SHA-256.
const (
	ArchiveTable       = "medlake_archive"
	ArchiveFeed        = "_archive"
	ArchiveFeedVersion = 1
	ArchiveChunkBytes  = 1 << 20
)

// Batch is a decoded batch frame. Payload is an Arrow IPC stream (see EncodeRecords).
type Batch struct {
	Header  BatchHeader
	Payload []byte
}

// BatchID derives a batch's id from what it contains, so re-reading the same source file
// with the same feed version yields the same ids and the hub can recognize a re-send.
// Parts are counted per source file, feed and version.
func BatchID(sourceSHA256, feed string, feedVersion, part int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d", sourceSHA256, feed, feedVersion, part)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Validate reports the first field of the header that is missing or out of range.
func (h *BatchHeader) Validate() error {
	if h.BatchID == "" {
		return fmt.Errorf("batch header: batch_id is empty: %w", ErrMalformed)
	}
	for _, f := range []struct{ kind, v string }{{"tenant", h.Tenant}, {"facility", h.Facility}, {"agent", h.Agent}} {
		if err := ValidateID(f.kind, f.v); err != nil {
			return fmt.Errorf("batch %s header: %w", h.BatchID, err)
		}
	}
	switch {
	case h.Feed == "":
		return fmt.Errorf("batch %s header: feed is empty: %w", h.BatchID, ErrMalformed)
	case h.Table == "":
		return fmt.Errorf("batch %s header: table is empty: %w", h.BatchID, ErrMalformed)
	case h.Parts < 1 || h.Part < 1 || h.Part > h.Parts:
		return fmt.Errorf("batch %s header: part %d of %d out of range: %w", h.BatchID, h.Part, h.Parts, ErrMalformed)
	case h.Rows < 0:
		return fmt.Errorf("batch %s header: negative row count %d: %w", h.BatchID, h.Rows, ErrMalformed)
	case len(h.SourceSHA256) != 64:
		return fmt.Errorf("batch %s header: source_sha256 %q is not a hex SHA-256: %w", h.BatchID, h.SourceSHA256, ErrMalformed)
	}
	return nil
}

// EncodeBatch frames a header and payload. It sets the header's version, payload length
// and payload checksum; the caller sets everything else.
func EncodeBatch(h BatchHeader, payload []byte) ([]byte, error) {
	sum := sha256.Sum256(payload)
	h.Version = Version
	h.PayloadBytes = int64(len(payload))
	h.PayloadSHA256 = hex.EncodeToString(sum[:])
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encoding batch %s header: %w", h.BatchID, err)
	}
	if len(hdr) > maxHeaderLen {
		return nil, fmt.Errorf("encoding batch %s: header is %d bytes, limit %d: %w", h.BatchID, len(hdr), maxHeaderLen, ErrMalformed)
	}
	out := make([]byte, 0, fixedPrefixLen+len(hdr)+4+len(payload))
	out = append(out, batchMagic...)
	out = append(out, MajorVersion, MinorVersion)
	out = binary.BigEndian.AppendUint32(out, uint32(len(hdr)))
	out = append(out, hdr...)
	out = binary.BigEndian.AppendUint32(out, crc32.Checksum(hdr, castagnoli))
	out = append(out, payload...)
	return out, nil
}

// DecodeBatch parses and verifies a batch frame: version, header checksum, payload length
// and payload checksum. The returned payload aliases frame.
func DecodeBatch(frame []byte) (*Batch, error) {
	if len(frame) < fixedPrefixLen {
		if !bytes.HasPrefix([]byte(batchMagic), frame[:min(len(frame), 4)]) {
			return nil, fmt.Errorf("batch frame: bad magic: %w", ErrMalformed)
		}
		return nil, fmt.Errorf("batch frame: %d bytes, shorter than the %d-byte prefix: %w", len(frame), fixedPrefixLen, ErrTruncated)
	}
	if string(frame[:4]) != batchMagic {
		return nil, fmt.Errorf("batch frame: bad magic %q: %w", frame[:4], ErrMalformed)
	}
	if major := frame[4]; major != MajorVersion {
		return nil, fmt.Errorf("batch frame: version %d.%d, this decoder speaks %d.x: %w", major, frame[5], MajorVersion, ErrUnknownVersion)
	}
	hlen := int(binary.BigEndian.Uint32(frame[6:10]))
	if hlen > maxHeaderLen {
		return nil, fmt.Errorf("batch frame: header length %d exceeds %d: %w", hlen, maxHeaderLen, ErrMalformed)
	}
	rest := frame[fixedPrefixLen:]
	if len(rest) < hlen+4 {
		return nil, fmt.Errorf("batch frame: header of %d bytes cut at %d: %w", hlen, len(rest), ErrTruncated)
	}
	hdr := rest[:hlen]
	if got, want := crc32.Checksum(hdr, castagnoli), binary.BigEndian.Uint32(rest[hlen:hlen+4]); got != want {
		return nil, fmt.Errorf("batch frame: header crc32c %08x, want %08x: %w", got, want, ErrChecksum)
	}
	var h BatchHeader
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("batch frame: header json: %v: %w", err, ErrMalformed)
	}
	if err := checkVersion("batch "+h.BatchID, h.Version); err != nil {
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	payload := rest[hlen+4:]
	switch {
	case int64(len(payload)) < h.PayloadBytes:
		return nil, fmt.Errorf("batch %s: payload %d of %d bytes: %w", h.BatchID, len(payload), h.PayloadBytes, ErrTruncated)
	case int64(len(payload)) > h.PayloadBytes:
		return nil, fmt.Errorf("batch %s: %d bytes after the %d-byte payload: %w", h.BatchID, int64(len(payload))-h.PayloadBytes, h.PayloadBytes, ErrMalformed)
	}
	sum := sha256.Sum256(payload)
	if got := hex.EncodeToString(sum[:]); got != h.PayloadSHA256 {
		return nil, fmt.Errorf("batch %s: payload sha256 %s, header says %s: %w", h.BatchID, got, h.PayloadSHA256, ErrChecksum)
	}
	return &Batch{Header: h, Payload: payload}, nil
}

// PeekBatchID returns the batch id of a frame that may fail to decode, so the hub can
// address a rejection to the batch the agent holds. The frame prefix and the header's
// batch_id field keep their form in every major version for this reason. It returns ""
// when no id can be read.
func PeekBatchID(frame []byte) string {
	return peekHeader(frame).BatchID
}

// PeekBatchTable returns the table a frame's header names without checking the frame,
// or "" when none can be read. A sender uses it to group what it has in flight.
func PeekBatchTable(frame []byte) string {
	return peekHeader(frame).Table
}

type peekedHeader struct {
	BatchID string `json:"batch_id"`
	Table   string `json:"table"`
}

// peekHeader reads a frame's header fields without checking the frame; a field that
// cannot be read, or is implausibly long, is "".
func peekHeader(frame []byte) peekedHeader {
	var h peekedHeader
	if len(frame) < fixedPrefixLen || string(frame[:4]) != batchMagic {
		return h
	}
	hlen := int(binary.BigEndian.Uint32(frame[6:10]))
	if hlen > maxHeaderLen || len(frame) < fixedPrefixLen+hlen {
		return h
	}
	if json.Unmarshal(frame[fixedPrefixLen:fixedPrefixLen+hlen], &h) != nil {
		return peekedHeader{}
	}
	if len(h.BatchID) > 128 {
		h.BatchID = ""
	}
	if len(h.Table) > 128 {
		h.Table = ""
	}
	return h
}

// checkVersion accepts "M.m" with M == MajorVersion.
func checkVersion(what, v string) error {
	majorStr, _, ok := strings.Cut(v, ".")
	if !ok {
		return fmt.Errorf("%s: version %q is not major.minor: %w", what, v, ErrMalformed)
	}
	major, err := strconv.Atoi(majorStr)
	if err != nil {
		return fmt.Errorf("%s: version %q is not major.minor: %w", what, v, ErrMalformed)
	}
	if major != MajorVersion {
		return fmt.Errorf("%s: version %s, this decoder speaks %d.x: %w", what, v, MajorVersion, ErrUnknownVersion)
	}
	return nil
}
