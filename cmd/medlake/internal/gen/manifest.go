package gen

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// ManifestVersion is the manifest format version written by this package.
const ManifestVersion = 1

// Manifest describes a generated data set: what was generated and what a lake that
// ingested all of it must hold. It is written to OUT/manifest.json.
type Manifest struct {
	Version     int       `json:"version"`
	Seed        int64     `json:"seed"`
	Options     Options   `json:"options"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// PendingFormats are formats whose feeds the current feed format cannot express;
	// their definitions are in OUT/feeds-pending/ and their files are marked Pending.
	PendingFormats []string `json:"pending_formats,omitempty"`
	Tenants        []Tenant `json:"tenants"`
	Feeds          []Feed   `json:"feeds"`
	// Tables is keyed by table name.
	Tables map[string]*Table `json:"tables"`
	// Files are sorted by Path.
	Files []File `json:"files"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
}

// Tenant is one customer and its facilities.
type Tenant struct {
	ID         string     `json:"id"`
	Facilities []Facility `json:"facilities"`
}

// Facility is one facility exporting files.
type Facility struct {
	ID     string   `json:"id"`
	Tenant string   `json:"tenant"`
	Kind   string   `json:"kind"` // hospital, urgent_care, nursing_home, emergency, critical_care
	Units  []string `json:"units"`
}

// Feed is one feed definition written for the data set.
type Feed struct {
	Name   string `json:"name"`
	Table  string `json:"table"`
	Format string `json:"format"`
	// Path is relative to the output directory: feeds/NAME.yaml, or
	// feeds-pending/NAME.yaml when Pending.
	Path string `json:"path"`
	// Pending means feed.Parse rejects the definition today; PendingReason says why.
	Pending       bool   `json:"pending,omitempty"`
	PendingReason string `json:"pending_reason,omitempty"`
}

// Table is what the generated files put into one lake table.
type Table struct {
	Keys []string `json:"keys"`
	// Columns are the table's generated columns in order; RowChecksum covers them.
	Columns []string `json:"columns"`
	Counts
	// Ready counts only files whose feed is in feeds/: what the lake holds today after
	// ingesting everything.
	Ready Counts `json:"ready"`
	// ByFormat splits the counts by export format.
	ByFormat map[string]Counts `json:"by_format"`
}

// Counts are rows, key checksum and files of some set of files. KeyChecksum is the
// decimal KeyChecksum of the rows' keys; RowChecksum the same sum over whole rows (every
// column in Columns, each rendered by CanonicalField), so a changed value shows too.
type Counts struct {
	Rows        int64  `json:"rows"`
	KeyChecksum string `json:"key_checksum"`
	RowChecksum string `json:"row_checksum"`
	Files       int    `json:"files"`
}

// File is one generated archive.
type File struct {
	Path     string `json:"path"` // relative to the output directory, slash-separated
	Tenant   string `json:"tenant"`
	Facility string `json:"facility"`
	Table    string `json:"table"`
	Feed     string `json:"feed"`
	Format   string `json:"format"`
	Archive  string `json:"archive"`
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	Rows     int64  `json:"rows"`
	// KeyChecksum and RowChecksum cover this file's rows, so a test can check one
	// file's ingest.
	KeyChecksum string `json:"key_checksum"`
	RowChecksum string `json:"row_checksum"`
	Large       bool   `json:"large,omitempty"`
	// Pending means the file's feed is in feeds-pending/.
	Pending bool `json:"pending,omitempty"`
	// From and To bound the slice of the window this export covers; event times
	// mostly fall in it (an encounter's later events may run past To).
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Entries []Entry   `json:"entries"`
}

// Entry is one file inside an archive (the single member of a gzip file).
type Entry struct {
	Name string `json:"name"`
	Rows int64  `json:"rows"`
}

// ReadManifest reads a manifest written by Run.
func ReadManifest(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parsing manifest %s: %w", path, err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("manifest %s has version %d, this build reads version %d", path, m.Version, ManifestVersion)
	}
	return &m, nil
}

// File returns the file with the given relative path.
func (m *Manifest) File(path string) (*File, bool) {
	for i := range m.Files {
		if m.Files[i].Path == path {
			return &m.Files[i], true
		}
	}
	return nil, false
}
