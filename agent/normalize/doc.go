// Package normalize turns one entry, delimited text, fixed-width text or XML, into Arrow
// record batches shaped by a feed definition's BatchSchema, and every record it cannot
// convert into a Reject.
//
// It owns decoding the declared text encoding to UTF-8 (DecodingReader), parsing, header
// and path mapping, type conversion and the _row position; it does not pick the feed,
// unpack archives, spool or send batches, and it keeps no state between runs.
//
// # Row stage
//
// CSV and XML records go through one value pipeline (row.go), column by column:
// source field(s) → sources joined (each trimmed, empty ones skipped, by join) →
// transforms in order → text that is empty or white space is NULL (a required column
// rejects the row) → conversion → validation (min, max, pattern, enum, max_length).
// The first failing column rejects the row; the reason names the column, the value
// (quoted, cut to 64 bytes) and the rule: `column heart_rate: 412 is above max 300`.
//
//   - Everything a definition says is compiled once in New: regexes, code tables, bounds,
//     and the keys of hash steps, read through Options.Secret. A secret that cannot be
//     read fails New, so a feed is never run without the key its values must be hashed
//     with. A column with one source and no transforms or rules costs what it did before
//     transforms existed.
//   - Decimals are read exactly (feed.ParseDecimal): a value needing rounding or more
//     digits than the precision rejects the row.
//   - Timestamps without an offset are read in the column's timezone (default UTC); a
//     wall time the zone skips or repeats at a daylight saving change is read with the
//     offset in effect before the change. Dates ignore the timezone.
//   - A header must hold every source of a required column (ErrHeader otherwise). In
//     XML, an absent element or attribute is NULL; a required column without transforms
//     rejects the record, one with transforms sees empty text (a default may fill it).
//
// # Delimited and fixed-width text
//
// Delimited text in encoding/csv's dialect (quote '"', quotes doubled) is read by
// encoding/csv, the fast path; a custom quote, no quoting or an escape character by
// delimReader, which keeps encoding/csv's rules otherwise. format.skip_lines,
// format.comment and format.trailing_delimiter apply to both; fixed width is read line by
// line, columns cut by rune position. Every reject's line counts all physical lines.
//
// # Schema drift
//
// A named source field no column takes and the definition's ignore does not list (a
// header name, an XML leaf path) follows the feed's drift policy: rescue puts it in the
// _rescued JSON column, reject fails the entry with ErrDrift, add makes it an extra
// string column before _source_file and _row (so a batch's schema may extend BatchSchema), ignore drops
// it. Stats.Unmapped lists such fields under every policy.
//
// # XML
//
// A feed with format.type xml is read with encoding/xml's Decoder token by token; no
// document tree is built, so one file of millions of records streams in the memory of
// one record. An entry of at most 32 KiB in the plain shape of one-record exports (no
// DOCTYPE, CDATA, namespace prefix or reference other than the five predefined
// entities) is instead tokenized whole in memory by a small scanner (xmlfast.go) that
// gives exactly encoding/xml's tokens, offsets and lines; anything else, errors
// included, is left to encoding/xml from the entry's first byte, so both readers follow
// the same rules and report the same errors. The rules:
//
//   - Paths. format.record is the path of the record element from the document root
//     ("Export/Patients/Patient"); every element at that path is one record, and _row is
//     its 1-based number within the entry, so a file holding one record and a file
//     holding many work alike. A column's source is a path relative to the record
//     element: "Name/First" takes an element's text, "@id" and "Address/@zip" an
//     attribute's value.
//   - Namespaces. Names match by local name only: namespace URIs and prefixes are
//     ignored, and a step written "hl7:Name" matches <Name> in any namespace, with any
//     prefix or none. Two elements that differ only by namespace are the same to a path.
//   - Values. A column's element must be a leaf: its text (CDATA included, entities
//     decoded) is taken as written, untrimmed, and converted like a CSV field, so
//     whitespace-only text, an empty element and an absent element or attribute are
//     NULL, and a required column then rejects the record. Leaf elements and
//     attributes no column names follow the drift policy; Stats.Unmapped lists their
//     paths, and elements beside the record path (a misspelt record element among the
//     records) too, which are never loaded.
//   - One match per column. A column path that matches more than one element or
//     attribute in one record (a repeated <Phone>) rejects the record; none is chosen
//     silently. An element with child elements where a column expects text rejects it too.
//   - Rejects carry the source, the record number, the line of the record's start tag
//     and the record's XML text, cut to MaxXMLRawBytes.
//   - Limits. A column takes at most MaxXMLFieldBytes of text from one record: longer
//     text or CDATA is skipped as it streams, never buffered, and the record is rejected
//     (text of an element no column takes is skipped the same way, record kept). Markup
//     longer than MaxXMLMarkupBytes, or nesting deeper than MaxXMLDepth, fails the file.
//   - Entities. A DOCTYPE is skipped, not processed: no DTD is read, no external entity
//     is fetched and no custom entity is defined, so a reference to one (an XXE or
//     "billion laughs" document) is an undefined entity and the file is malformed. Only
//     the five predefined entities and character references are decoded.
//   - File errors. A document that is not well-formed (including no root element, a
//     second root element or text outside the root) wraps ErrMalformedXML; a root element
//     other than the record path's first step wraps ErrXMLRoot. Both name the source and
//     line, and the caller quarantines the file. As with CSV, batches already emitted then
//     belong to an incomplete entry and must be discarded.
//   - Encoding. The feed's format.encoding decides how bytes are read (DecodingReader; a
//     byte order mark overrides it). The XML declaration's encoding does not choose the
//     decoder: it must agree with the encoding the bytes are read with (windows-1252 and
//     ISO-8859-1 count as one, ASCII agrees with any 8-bit encoding), or the file is
//     malformed, so a mislabelled file is stopped instead of silently mis-decoded.
package normalize
