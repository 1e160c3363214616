package gen

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medlake/medlake/protocol/feed"
	"go.yaml.in/yaml/v3"
)

// smallOptions makes a quick data set: small archives, every format.
func smallOptions(tb testing.TB, formats ...string) Options {
	tb.Helper()
	o := DefaultOptions()
	o.Out = tb.TempDir()
	o.Seed = 42
	o.Facilities = 9
	o.FilesPerFacility = 6
	o.MinBytes = 8 << 10
	o.MaxBytes = 48 << 10
	if len(formats) > 0 {
		o.Formats = formats
	}
	return o
}

func run(tb testing.TB, o Options) *Manifest {
	tb.Helper()
	m, err := Run(context.Background(), o, nil)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	return m
}

// readTree returns every file under dir by slash-separated relative path.
func readTree(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

func TestDeterministic(t *testing.T) {
	a := smallOptions(t, FormatCSV, FormatTXT, FormatXML)
	a.Large = 1
	a.LargeBytes = 200 << 10
	a.Workers = 1
	b := a
	b.Out = t.TempDir()
	b.Workers = 3 // scheduling must not matter
	run(t, a)
	run(t, b)
	ta, tb := readTree(t, a.Out), readTree(t, b.Out)
	if len(ta) != len(tb) {
		t.Fatalf("runs wrote %d and %d files", len(ta), len(tb))
	}
	for name, data := range ta {
		if !bytes.Equal(data, tb[name]) {
			t.Errorf("%s differs between runs with the same seed", name)
		}
	}

	c := a
	c.Out = t.TempDir()
	c.Seed++
	mc := run(t, c)
	ma, err := ReadManifest(filepath.Join(a.Out, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ma.Tables["lab_results"].KeyChecksum == mc.Tables["lab_results"].KeyChecksum && ma.Files[0].SHA256 == mc.Files[0].SHA256 {
		t.Errorf("seeds %d and %d generated the same data", a.Seed, c.Seed)
	}
}

// TestManifestMatchesOutput reads every archive back with the standard library's CSV
// and XML readers and checks it against the manifest and the feed definitions: rows,
// key checksums, unique keys, hashes, sizes, headers, and that every value parses as
// its column's type and lies in the window.
func TestManifestMatchesOutput(t *testing.T) {
	o := smallOptions(t, FormatCSV, FormatTXT, FormatXML, FormatDAT)
	o.Large = 2
	o.LargeBytes = 160 << 10
	m := run(t, o)
	read, err := ReadManifest(filepath.Join(o.Out, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if read.Rows != m.Rows || len(read.Files) != len(m.Files) || read.Tables["vitals"].KeyChecksum != m.Tables["vitals"].KeyChecksum {
		t.Fatalf("ReadManifest does not round-trip Run's manifest")
	}
	if len(m.Files) != o.Facilities*o.FilesPerFacility {
		t.Fatalf("manifest lists %d files, want %d", len(m.Files), o.Facilities*o.FilesPerFacility)
	}
	defs := loadDefinitions(t, o.Out, m)

	seen := map[string]string{} // table/key -> file
	tables := map[string]*KeyChecksum{}
	var large int
	for _, f := range m.Files {
		def := defs[f.Feed]
		if def == nil {
			t.Fatalf("%s: feed %q not written", f.Path, f.Feed)
		}
		data, err := os.ReadFile(filepath.Join(o.Out, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.Bytes {
			t.Errorf("%s: sha256/bytes differ from the manifest", f.Path)
		}
		if !def.Matches(path.Base(f.Path)) {
			t.Errorf("%s: feed %s glob %q does not match the archive name", f.Path, def.Name, def.Match.Glob)
		}
		if f.Large {
			large++
		}
		var sum KeyChecksum
		entries := readArchive(t, f, data)
		if len(entries) != len(f.Entries) {
			t.Fatalf("%s: %d entries, manifest says %d", f.Path, len(entries), len(f.Entries))
		}
		var rows int64
		for i, e := range entries {
			if e.name != f.Entries[i].Name {
				t.Errorf("%s: entry %d is %s, manifest says %s", f.Path, i, e.name, f.Entries[i].Name)
			}
			if !def.Matches(e.name) {
				t.Errorf("%s: feed %s glob %q does not match entry %s", f.Path, def.Name, def.Match.Glob, e.name)
			}
			var recs []map[string]string
			switch f.Format {
			case FormatXML:
				recs = []map[string]string{parseXMLRecord(t, e.data)}
			case FormatDAT:
				recs = parseFixed(t, filepath.Join(o.Out, filepath.FromSlash(feedPath(m, f.Feed))), e.data)
			default:
				recs = parseDelimited(t, def, e.data)
			}
			if int64(len(recs)) != f.Entries[i].Rows {
				t.Errorf("%s!%s: %d rows, manifest says %d", f.Path, e.name, len(recs), f.Entries[i].Rows)
			}
			for j, rec := range recs {
				where := f.Path + "!" + e.name + " row " + strconv.Itoa(j+1)
				checkRecord(t, where, def, rec, m.WindowStart, m.WindowEnd)
				var key []string
				for _, k := range def.Keys {
					key = append(key, rec[sourceName(def, f.Format, k)])
				}
				id := f.Table + "/" + strings.Join(key, "|")
				if prev, dup := seen[id]; dup {
					t.Errorf("%s: key %v already in %s", where, key, prev)
				}
				seen[id] = where
				sum.Add(key...)
			}
			rows += int64(len(recs))
		}
		if rows != f.Rows || sum.String() != f.KeyChecksum {
			t.Errorf("%s: read %d rows checksum %s, manifest says %d rows checksum %s", f.Path, rows, sum.String(), f.Rows, f.KeyChecksum)
		}
		if tables[f.Table] == nil {
			tables[f.Table] = &KeyChecksum{}
		}
		tables[f.Table].Merge(sum)
	}
	if large != o.Large {
		t.Errorf("%d large files, want %d", large, o.Large)
	}
	var total int64
	for name, tab := range m.Tables {
		got := tables[name]
		if got == nil {
			got = &KeyChecksum{}
		}
		if got.Count() != tab.Rows || got.String() != tab.KeyChecksum {
			t.Errorf("table %s: read %d rows checksum %s, manifest says %d rows checksum %s", name, got.Count(), got, tab.Rows, tab.KeyChecksum)
		}
		var byFormat KeyChecksum
		for _, c := range tab.ByFormat {
			s, err := ParseKeyChecksum(c.KeyChecksum)
			if err != nil {
				t.Fatal(err)
			}
			byFormat.sum += s
			byFormat.n += c.Rows
		}
		if byFormat != *got {
			t.Errorf("table %s: per-format counts do not add up to the table's", name)
		}
		if tab.Ready.Rows != tab.Rows {
			t.Errorf("table %s: ready rows %d, want all %d now that every format has a feed", name, tab.Ready.Rows, tab.Rows)
		}
		total += tab.Rows
	}
	if total != m.Rows {
		t.Errorf("tables hold %d rows, manifest total is %d", total, m.Rows)
	}
}

type entry struct {
	name string
	data []byte
}

func readArchive(tb testing.TB, f File, data []byte) []entry {
	tb.Helper()
	var out []entry
	switch f.Archive {
	case ArchiveGzip:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			tb.Fatalf("%s: %v", f.Path, err)
		}
		body, err := io.ReadAll(zr)
		if err != nil {
			tb.Fatalf("%s: %v", f.Path, err)
		}
		if zr.ModTime.IsZero() {
			tb.Errorf("%s: gzip header has no time", f.Path)
		}
		out = append(out, entry{zr.Name, body})
	case ArchiveZip:
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			tb.Fatalf("%s: %v", f.Path, err)
		}
		for _, zf := range zr.File {
			rc, err := zf.Open()
			if err != nil {
				tb.Fatalf("%s!%s: %v", f.Path, zf.Name, err)
			}
			body, err := io.ReadAll(rc)
			if err != nil {
				tb.Fatalf("%s!%s: %v", f.Path, zf.Name, err)
			}
			out = append(out, entry{zf.Name, body})
		}
	case ArchiveTarGz:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			tb.Fatalf("%s: %v", f.Path, err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatalf("%s: %v", f.Path, err)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatalf("%s!%s: %v", f.Path, h.Name, err)
			}
			out = append(out, entry{h.Name, body})
		}
	default:
		tb.Fatalf("%s: unknown archive %q", f.Path, f.Archive)
	}
	return out
}

// parseDelimited reads CSV/TXT with encoding/csv, checks the header against the feed and
// returns the records keyed by header name.
// feedPath is the manifest's path of the named feed's definition.
func feedPath(m *Manifest, name string) string {
	for _, f := range m.Feeds {
		if f.Name == name {
			return f.Path
		}
	}
	return ""
}

// parseFixed reads fixed-width lines by the start and width of each column in the feed
// definition at defPath, read on its own so as not to trust the code under test.
func parseFixed(tb testing.TB, defPath string, data []byte) []map[string]string {
	tb.Helper()
	raw, err := os.ReadFile(defPath)
	if err != nil {
		tb.Fatal(err)
	}
	var def struct {
		Format  struct{ Type string }
		Columns []struct {
			Name         string
			Start, Width int
		}
	}
	if err := yaml.Unmarshal(raw, &def); err != nil || def.Format.Type != "fixed" {
		tb.Fatalf("%s: not a fixed-width feed (%v)", defPath, err)
	}
	var recs []map[string]string
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\r\n"), "\r\n") {
		runes := []rune(line)
		rec := map[string]string{}
		end := 0
		for _, c := range def.Columns {
			if c.Start < 1 || c.Width < 1 || c.Start-1+c.Width > len(runes) {
				tb.Fatalf("%s line %d: %d characters, column %s at %d width %d", defPath, i+1, len(runes), c.Name, c.Start, c.Width)
			}
			rec[c.Name] = strings.TrimRight(string(runes[c.Start-1:c.Start-1+c.Width]), " ")
			end = max(end, c.Start-1+c.Width)
		}
		if end != len(runes) {
			tb.Fatalf("%s line %d: %d characters, columns end at %d", defPath, i+1, len(runes), end)
		}
		recs = append(recs, rec)
	}
	return recs
}

func parseDelimited(tb testing.TB, def *feed.Definition, data []byte) []map[string]string {
	tb.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma = def.Format.Comma()
	all, err := r.ReadAll()
	if err != nil {
		tb.Fatalf("feed %s: %v", def.Name, err)
	}
	if len(all) == 0 {
		tb.Fatalf("feed %s: no header", def.Name)
	}
	hdr := all[0]
	if len(hdr) != len(def.Columns) {
		tb.Fatalf("feed %s: header has %d columns, feed %d", def.Name, len(hdr), len(def.Columns))
	}
	for i, c := range def.Columns {
		if hdr[i] != c.SourceName() {
			tb.Fatalf("feed %s: header column %d is %q, feed expects %q", def.Name, i, hdr[i], c.SourceName())
		}
	}
	recs := make([]map[string]string, 0, len(all)-1)
	for _, row := range all[1:] {
		rec := make(map[string]string, len(hdr))
		for i, v := range row {
			rec[hdr[i]] = v
		}
		recs = append(recs, rec)
	}
	return recs
}

func parseXMLRecord(tb testing.TB, data []byte) map[string]string {
	tb.Helper()
	var doc struct {
		XMLName  xml.Name
		Facility string `xml:"facility,attr"`
		Fields   []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		tb.Fatalf("parsing XML record: %v\n%s", err, data)
	}
	rec := map[string]string{}
	for _, f := range doc.Fields {
		rec[f.XMLName.Local] = f.Value
	}
	return rec
}

func sourceName(def *feed.Definition, format, column string) string {
	c, _ := def.Column(column)
	return c.SourceName()
}

// checkRecord parses every value as its column's type, as an agent would.
func checkRecord(tb testing.TB, where string, def *feed.Definition, rec map[string]string, start, end time.Time) {
	tb.Helper()
	for _, c := range def.Columns {
		v := rec[c.SourceName()]
		if v == "" {
			if c.Required {
				tb.Errorf("%s: required column %s is empty", where, c.Name)
			}
			continue
		}
		var err error
		switch c.Type {
		case feed.TypeInt:
			_, err = strconv.ParseInt(v, 10, 64)
		case feed.TypeFloat:
			_, err = strconv.ParseFloat(v, 64)
		case feed.TypeBool:
			_, err = strconv.ParseBool(v)
		case feed.TypeDate, feed.TypeTimestamp:
			var tm time.Time
			tm, err = time.Parse(c.Layouts()[0], v)
			if err == nil && (c.Type == feed.TypeTimestamp || c.Name == def.PartitionTime) && (tm.Before(start) || !tm.Before(end)) {
				tb.Errorf("%s: %s %s is outside the window %s–%s", where, c.Name, v, start, end)
			}
		}
		if err != nil {
			tb.Errorf("%s: column %s (%s): %v", where, c.Name, c.Type, err)
		}
	}
}

// loadDefinitions loads the feeds the manifest lists: feeds/ strictly with feed.ParseFS,
// feeds-pending/ leniently (they use format fields feed.Parse does not know yet).
func loadDefinitions(tb testing.TB, out string, m *Manifest) map[string]*feed.Definition {
	tb.Helper()
	parsed, err := feed.ParseFS(os.DirFS(filepath.Join(out, FeedsDir)))
	if err != nil {
		tb.Fatalf("generated feeds: %v", err)
	}
	defs := map[string]*feed.Definition{}
	for _, d := range parsed {
		defs[d.Name] = d
	}
	for _, f := range m.Feeds {
		data, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(f.Path)))
		if err != nil {
			tb.Fatal(err)
		}
		_, perr := feed.Parse(data)
		if f.Pending != (perr != nil) {
			tb.Errorf("feed %s: pending=%v but feed.Parse error is %v", f.Name, f.Pending, perr)
		}
		if !f.Pending {
			if defs[f.Name] == nil {
				tb.Errorf("feed %s listed in the manifest but not in %s", f.Name, FeedsDir)
			}
			continue
		}
		var d feed.Definition
		if err := yaml.Unmarshal(data, &d); err != nil {
			tb.Fatalf("pending feed %s: %v", f.Name, err)
		}
		defs[f.Name] = &d
	}
	if len(defs) != len(m.Feeds) {
		tb.Errorf("%d feeds on disk, manifest lists %d", len(defs), len(m.Feeds))
	}
	return defs
}

// TestFeedsParse checks that every CSV/TXT feed the generator writes parses with
// feed.Parse, that each archive is matched by exactly one feed, and that XML feeds are
// held back while the feed format cannot express them.
func TestFeedsParse(t *testing.T) {
	o := smallOptions(t, FormatCSV, FormatTXT, FormatXML)
	o.Facilities, o.FilesPerFacility = 3, 10
	m := run(t, o)
	entries, err := os.ReadDir(filepath.Join(o.Out, FeedsDir))
	if err != nil {
		t.Fatal(err)
	}
	var defs []*feed.Definition
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(o.Out, FeedsDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		d, err := feed.Parse(data)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		if e.Name() != d.Name+".yaml" {
			t.Errorf("%s holds feed %s", e.Name(), d.Name)
		}
		defs = append(defs, d)
	}
	if want := len(entities) * 3; len(defs) != want {
		t.Errorf("%d feeds in %s, want %d (every entity in csv, txt and xml)", len(defs), FeedsDir, want)
	}
	pending, _ := os.ReadDir(filepath.Join(o.Out, FeedsPendingDir))
	if len(pending) != 0 || len(m.PendingFormats) != 0 {
		t.Errorf("pending feeds %d, pending formats %v; want none", len(pending), m.PendingFormats)
	}
	for _, f := range m.Files {
		var matched []string
		for _, d := range defs {
			if d.Matches(path.Base(f.Path)) {
				matched = append(matched, d.Name)
			}
		}
		switch {
		case f.Pending && len(matched) != 0:
			t.Errorf("%s: pending XML file matched by ready feeds %v", f.Path, matched)
		case !f.Pending && (len(matched) != 1 || matched[0] != f.Feed):
			t.Errorf("%s: matched by feeds %v, want only %s", f.Path, matched, f.Feed)
		}
	}
}

// TestSizeBounds checks the default distribution: CSV/TXT archives stay within
// 20 KB–1.5 MB compressed.
func TestSizeBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 10 MB of archives")
	}
	o := DefaultOptions()
	o.Out = t.TempDir()
	o.Seed = 7
	o.Facilities, o.FilesPerFacility = 3, 10
	m := run(t, o)
	var small, mid, big int
	for _, f := range m.Files {
		if f.Bytes < o.MinBytes || f.Bytes > o.MaxBytes {
			t.Errorf("%s: %d bytes, outside %d–%d", f.Path, f.Bytes, o.MinBytes, o.MaxBytes)
		}
		switch {
		case f.Bytes < 100<<10:
			small++
		case f.Bytes < 500<<10:
			mid++
		default:
			big++
		}
	}
	t.Logf("archives: %d under 100 KB, %d 100–500 KB, %d over 500 KB", small, mid, big)
}

func TestLargeArchives(t *testing.T) {
	o := smallOptions(t, FormatCSV, FormatTXT)
	o.Large = 3
	o.LargeBytes = 512 << 10
	m := run(t, o)
	n := 0
	for _, f := range m.Files {
		if !f.Large {
			continue
		}
		n++
		if f.Archive == ArchiveTarGz || len(f.Entries) != 1 {
			t.Errorf("%s: large archive is %s with %d entries, want one streamed entry", f.Path, f.Archive, len(f.Entries))
		}
		if lo, hi := o.LargeBytes*9/10, o.LargeBytes*11/10; f.Bytes < lo || f.Bytes > hi {
			t.Errorf("%s: %d bytes, want about %d", f.Path, f.Bytes, o.LargeBytes)
		}
	}
	if n != o.Large {
		t.Errorf("%d large archives, want %d", n, o.Large)
	}
}

func TestXMLArchives(t *testing.T) {
	o := smallOptions(t, FormatXML)
	m := run(t, o)
	for _, f := range m.Files {
		if f.Archive != ArchiveZip || len(f.Entries) < 20 || len(f.Entries) > 300 {
			t.Errorf("%s: %s with %d entries, want a zip of 20–300 records", f.Path, f.Archive, len(f.Entries))
		}
		if f.Pending {
			t.Errorf("%s: XML file marked pending though its feed parses", f.Path)
		}
	}
	if tab := m.Tables["lab_results"]; tab.Ready.Rows != tab.Rows || tab.Rows == 0 {
		t.Errorf("lab_results: %d rows, %d ready; want rows, all ready", tab.Rows, tab.Ready.Rows)
	}
}

func TestLayout(t *testing.T) {
	o := smallOptions(t)
	o.Facilities = 40
	o.FilesPerFacility = 1
	m := run(t, o)
	facilities := 0
	for _, tn := range m.Tenants {
		if len(tn.Facilities) < 1 || len(tn.Facilities) > 13 {
			t.Errorf("tenant %s has %d facilities, want 1–13", tn.ID, len(tn.Facilities))
		}
		for _, f := range tn.Facilities {
			facilities++
			if want := "f" + strconv.Itoa(1_000_000 + facilities)[1:]; f.ID != want || f.Tenant != tn.ID {
				t.Errorf("facility %d is %s of %s, want %s of %s", facilities, f.ID, f.Tenant, want, tn.ID)
			}
		}
	}
	if facilities != o.Facilities || len(m.Tenants) < 3 || len(m.Tenants) > 20 {
		t.Errorf("%d facilities in %d tenants, want %d in about %d", facilities, len(m.Tenants), o.Facilities, o.Facilities/7)
	}
	for _, f := range m.Files {
		dir, name := path.Split(f.Path)
		if dir != "exports/"+f.Tenant+"/"+f.Facility+"/" || !strings.HasPrefix(name, f.Facility+"_"+f.Table+"_0000") || !strings.Contains(name, "."+f.Format+".") {
			t.Errorf("file %s not named exports/<tenant>/<facility>/<facility>_<table>_<seq>.<format>.<archive>", f.Path)
		}
	}
	if _, err := os.Stat(filepath.Join(o.Out, tmpDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary directory left behind: %v", err)
	}
}

func TestProgress(t *testing.T) {
	o := smallOptions(t, FormatCSV)
	o.Workers = 3
	var calls []int
	total := -1
	_, err := Run(context.Background(), o, func(done, n int) {
		calls = append(calls, done)
		total = n
	})
	if err != nil {
		t.Fatal(err)
	}
	want := o.Facilities * o.FilesPerFacility
	if total != want || len(calls) != want {
		t.Fatalf("progress called %d times with total %d, want %d", len(calls), total, want)
	}
	for i, d := range calls {
		if d != i+1 {
			t.Fatalf("progress call %d reported %d done", i+1, d)
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Run("output exists", func(t *testing.T) {
		o := smallOptions(t, FormatCSV)
		o.Facilities, o.FilesPerFacility = 1, 1
		run(t, o)
		if _, err := Run(context.Background(), o, nil); !errors.Is(err, ErrOutputExists) {
			t.Errorf("second run into %s: %v, want ErrOutputExists", o.Out, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		o := smallOptions(t, FormatCSV)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Run(ctx, o, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled run: %v, want context.Canceled", err)
		}
		if _, err := os.Stat(filepath.Join(o.Out, ManifestFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cancelled run wrote a manifest")
		}
	})
	t.Run("too many large", func(t *testing.T) {
		o := smallOptions(t, FormatCSV)
		o.Large = o.Facilities*o.FilesPerFacility + 1
		if _, err := Run(context.Background(), o, nil); !errors.Is(err, ErrOptions) {
			t.Errorf("large > files: %v, want ErrOptions", err)
		}
	})
}

func TestValidate(t *testing.T) {
	ok := DefaultOptions()
	ok.Out = "/tmp/x"
	tests := []struct {
		name string
		edit func(*Options)
		want string // substring of the error; empty means valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"no out", func(o *Options) { o.Out = "" }, "out:"},
		{"no facilities", func(o *Options) { o.Facilities = 0 }, "facilities:"},
		{"no files", func(o *Options) { o.FilesPerFacility = 0 }, "files per facility:"},
		{"unknown format", func(o *Options) { o.Formats = []string{"csv", "json"} }, `unknown format "json"`},
		{"duplicate format", func(o *Options) { o.Formats = []string{"csv", "csv"} }, "listed twice"},
		{"large xml only", func(o *Options) { o.Formats = []string{"xml"}; o.Large = 1 }, "large archives are CSV or TXT"},
		{"negative large", func(o *Options) { o.Large = -1 }, "large:"},
		{"days", func(o *Options) { o.Days = 0 }, "days:"},
		{"sizes", func(o *Options) { o.MaxBytes = o.MinBytes }, "max bytes:"},
		{"large smaller than max", func(o *Options) { o.Large = 1; o.LargeBytes = 1 << 10 }, "large bytes:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			o.Formats = append([]string(nil), ok.Formats...)
			tt.edit(&o)
			err := o.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrOptions)):
				t.Errorf("Validate: %v, want ErrOptions mentioning %q", err, tt.want)
			}
		})
	}
}
