package gen

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/medlake/medlake/protocol/feed"
)

func feedName(e *entity, format string) string { return e.name + "_" + format }

// feedGlob matches an entity's archives in one format and the files inside them (the
// archive f000001_lab_results_000003.csv.zip and its entry f000001_lab_results_000003.csv),
// and nothing of another entity or format.
func feedGlob(e *entity, format string) string { return "*_" + e.name + "_*." + format + "*" }

// feedYAML renders the feed definition reading e's exports in one format. XML feeds use
// an XML format section (record element, element per column) that the feed format does
// not know yet; Run keeps them apart until feed.Parse accepts them.
func feedYAML(e *entity, format string) []byte {
	st := styles[format]
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s exported by facilities as %s.\n", e.name, describeFormat(format))
	fmt.Fprintf(&b, "name: %s\nversion: 1\ntable: %s\n", feedName(e, format), e.name)
	fmt.Fprintf(&b, "match:\n  glob: %s\n", strconv.Quote(feedGlob(e, format)))
	b.WriteString("format:\n")
	switch format {
	case FormatXML:
		fmt.Fprintf(&b, "  type: xml\n  record: %s\n", e.record)
	case FormatDAT:
		b.WriteString("  type: fixed\n")
	default:
		fmt.Fprintf(&b, "  type: csv\n  delimiter: %s\n  header: true\n", strconv.Quote(string(st.delim)))
	}
	fmt.Fprintf(&b, "partition_time: %s\n", e.partition)
	b.WriteString("keys: [")
	for i, k := range e.keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
	}
	b.WriteString("]\ncolumns:\n")
	start := 1
	for _, c := range e.cols {
		fmt.Fprintf(&b, "  - {name: %s", c.name)
		if st.fixed {
			fmt.Fprintf(&b, ", start: %d, width: %d", start, fixedWidth(c))
			start += fixedWidth(c)
		} else if src := st.headerName(c); src != c.name {
			fmt.Fprintf(&b, ", source: %s", strconv.Quote(src))
		}
		fmt.Fprintf(&b, ", type: %s", c.typ)
		switch c.typ {
		case feed.TypeTimestamp:
			fmt.Fprintf(&b, ", format: %s", strconv.Quote(st.timeLayout))
		case feed.TypeDate:
			fmt.Fprintf(&b, ", format: %s", strconv.Quote(st.dateLayout))
		}
		if c.required {
			b.WriteString(", required: true")
		}
		b.WriteString("}\n")
	}
	return b.Bytes()
}

func describeFormat(format string) string {
	switch format {
	case FormatCSV:
		return "comma-separated CSV with a header row (gzip, zip or tar.gz)"
	case FormatTXT:
		return "pipe-delimited text with an upper-case header row and HL7-style times (gzip, zip or tar.gz)"
	case FormatDAT:
		return "fixed-width text without a header, HL7-style times (gzip, zip or tar.gz)"
	}
	return "zip archives of 20-300 XML files, one record per file"
}
