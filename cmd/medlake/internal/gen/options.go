package gen

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
)

// Export formats.
const (
	FormatCSV = "csv" // comma-separated with a header row
	FormatTXT = "txt" // pipe-delimited with an upper-case header row, HL7-style timestamps
	FormatXML = "xml" // a zip of 20–300 XML files holding one record each
	FormatDAT = "dat" // fixed-width text, no header, HL7-style timestamps
)

// Archive kinds, as recorded in the manifest.
const (
	ArchiveGzip  = "gzip"
	ArchiveZip   = "zip"
	ArchiveTarGz = "tar.gz"
)

// Size defaults from the customer's workload: 99% of archives are 20 KB–1.5 MB, a few
// reach 40 MB.
const (
	DefaultMinBytes   = 20 << 10
	DefaultMaxBytes   = 1536 << 10
	DefaultLargeBytes = 40 << 20
)

// ErrOptions is wrapped by every option validation error.
var ErrOptions = errors.New("invalid generator options")

// Options say what to generate. Everything except Out and Workers is recorded in the
// manifest and determines the output bytes.
type Options struct {
	// Out is the output directory; it must not already hold a generated data set.
	Out string `json:"-"`
	// Seed makes the output reproducible: same seed and options, same bytes.
	Seed int64 `json:"seed"`
	// Facilities is how many facilities to generate; they are grouped into tenants of
	// about seven facilities, as 8,000 facilities belong to 1,100 customers.
	Facilities int `json:"facilities"`
	// FilesPerFacility is how many archives each facility exports.
	FilesPerFacility int `json:"files_per_facility"`
	// Formats lists the export formats to use (FormatCSV, FormatTXT, FormatXML, FormatDAT).
	Formats []string `json:"formats"`
	// Large is how many CSV/TXT archives are made about LargeBytes instead of following
	// the MinBytes–MaxBytes distribution.
	Large int `json:"large"`
	// Days is the length of the window the records' event times fall in. The window
	// starts at an epoch derived from the seed, never from the clock.
	Days int `json:"days"`
	// MinBytes and MaxBytes bound the compressed size of CSV/TXT archives; sizes are
	// log-uniform between them. XML archives are sized by their 20–300 records.
	MinBytes int64 `json:"min_bytes"`
	MaxBytes int64 `json:"max_bytes"`
	// LargeBytes is the approximate compressed size of each large archive.
	LargeBytes int64 `json:"large_bytes"`
	// Workers is how many facilities are generated at once; it never changes the output.
	// Zero means GOMAXPROCS.
	Workers int `json:"-"`
}

// DefaultOptions returns options for a small data set in CSV and TXT.
func DefaultOptions() Options {
	return Options{
		Seed:             1,
		Facilities:       8,
		FilesPerFacility: 10,
		Formats:          []string{FormatCSV, FormatTXT},
		Days:             30,
		MinBytes:         DefaultMinBytes,
		MaxBytes:         DefaultMaxBytes,
		LargeBytes:       DefaultLargeBytes,
	}
}

// Validate reports every problem with the options.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Out == "" {
		bad("out: an output directory is required")
	}
	if o.Facilities < 1 || o.Facilities > 999_999 {
		bad("facilities: want 1–999999, got %d", o.Facilities)
	}
	if o.FilesPerFacility < 1 || o.FilesPerFacility > 999_999 {
		bad("files per facility: want 1–999999, got %d", o.FilesPerFacility)
	}
	if len(o.Formats) == 0 {
		bad("formats: at least one of csv, txt, xml, dat is required")
	}
	for i, f := range o.Formats {
		switch {
		case f != FormatCSV && f != FormatTXT && f != FormatXML && f != FormatDAT:
			bad("formats: unknown format %q (csv, txt, xml, dat)", f)
		case slices.Index(o.Formats, f) != i:
			bad("formats: %q listed twice", f)
		}
	}
	if o.Large < 0 {
		bad("large: want 0 or more, got %d", o.Large)
	}
	if o.Large > 0 && !slices.Contains(o.Formats, FormatCSV) && !slices.Contains(o.Formats, FormatTXT) {
		bad("large: large archives are CSV or TXT, but formats are %v", o.Formats)
	}
	if o.Days < 1 || o.Days > 3660 {
		bad("days: want 1–3660, got %d", o.Days)
	}
	if o.MinBytes < 4<<10 {
		bad("min bytes: want at least 4096, got %d", o.MinBytes)
	}
	if o.MaxBytes < o.MinBytes*2 {
		bad("max bytes: want at least twice min bytes (%d), got %d", o.MinBytes, o.MaxBytes)
	}
	if o.Large > 0 && o.LargeBytes < o.MaxBytes {
		bad("large bytes: want at least max bytes (%d), got %d", o.MaxBytes, o.LargeBytes)
	}
	if o.Workers < 0 {
		bad("workers: want 0 or more, got %d", o.Workers)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrOptions, errors.Join(errs...))
	}
	return nil
}

func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}
