package feed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"go.yaml.in/yaml/v3"
)

// Column types a definition may use.
const (
	TypeString    = "string"
	TypeInt       = "int"
	TypeFloat     = "float"
	TypeBool      = "bool"
	TypeDate      = "date"
	TypeTimestamp = "timestamp"
	TypeDecimal   = "decimal" // exact, with precision and scale: Arrow decimal128
)

// Format types.
const (
	FormatCSV   = "csv"   // delimited text: CSV, TXT
	FormatFixed = "fixed" // fixed-width text: columns at rune positions
	FormatXML   = "xml"   // XML: one record per file, or many records streamed from one file
)

// Encodings a feed may declare. Empty means UTF-8; a UTF-8 or UTF-16 byte order mark is
// honoured whatever is declared.
const (
	EncodingUTF8        = "utf-8"
	EncodingWindows1252 = "windows-1252"
	EncodingLatin1      = "latin-1" // ISO-8859-1
	EncodingUTF16       = "utf-16"  // byte order from the BOM, big-endian without one
	EncodingUTF16LE     = "utf-16le"
	EncodingUTF16BE     = "utf-16be"
)

// Encodings lists the encodings Validate accepts.
func Encodings() []string {
	return []string{EncodingUTF8, EncodingWindows1252, EncodingLatin1, EncodingUTF16, EncodingUTF16LE, EncodingUTF16BE}
}

// Lineage columns. ColSourceFile and ColRow are filled by the agent per row; the others
// are constant per batch and added by the hub from the batch header, so they cost nothing
// on the wire.
const (
	ColRow          = "_row"
	ColTenant       = "_tenant"
	ColFacility     = "_facility"
	ColAgent        = "_agent"
	ColFeed         = "_feed"
	ColFeedVersion  = "_feed_version"
	ColSourceFile   = "_source_file"
	ColSourceSHA256 = "_source_sha256"
	ColBatchID      = "_batch_id"
	ColIngestedAt   = "_ingested_at"
	// ColRescued holds, when drift is rescue, the source fields no column takes as a
	// JSON object {source name: value} of their non-empty values; NULL when none.
	ColRescued = "_rescued"
)

// Schema metadata keys on BatchSchema and TableSchema.
const (
	MetaFeed        = "medlake.feed"
	MetaFeedVersion = "medlake.feed_version"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid feed definition")

// Definition is one feed: which files it takes and how their records map to a table.
type Definition struct {
	Name    string `yaml:"name" json:"name" jsonschema:"required,pattern=^[a-z][a-z0-9_]*$,maxLength=63"`
	Version int    `yaml:"version" json:"version" jsonschema:"required,minimum=1"`
	Table   string `yaml:"table" json:"table" jsonschema:"required,pattern=^[a-z][a-z0-9_]*$,maxLength=63"`
	Match   Match  `yaml:"match" json:"match" jsonschema:"required"`
	Format  Format `yaml:"format" json:"format" jsonschema:"required"`
	// PartitionTime names the date or timestamp column whose day partitions the table;
	// empty means the ingest time.
	PartitionTime string   `yaml:"partition_time,omitempty" json:"partition_time,omitempty"`
	Keys          []string `yaml:"keys,omitempty" json:"keys,omitempty"`
	// Drift says what happens to a source field no column takes (a header name, an XML
	// leaf path): see the Drift constants. Empty means DriftRescue.
	Drift string `yaml:"drift,omitempty" json:"drift,omitempty" jsonschema:"enum=rescue,enum=reject,enum=add,enum=ignore"`
	// Ignore lists source fields known and deliberately not loaded: never drift.
	Ignore    []string `yaml:"ignore,omitempty" json:"ignore,omitempty"`
	Columns   []Column `yaml:"columns" json:"columns" jsonschema:"required,minItems=1"`
	TableMode `yaml:",inline"`
}

// Match says which files a feed takes.
type Match struct {
	// Glob is matched (path.Match) against the base name of a file and of each entry
	// inside an archive.
	Glob string `yaml:"glob" json:"glob" jsonschema:"required"`
	// Folder is matched (path.Match, slash-separated) against the file's directory
	// relative to the watched folder ("" for a file directly in it); a final "/**"
	// matches that folder and every folder below it. Empty means any folder.
	Folder string `yaml:"folder,omitempty" json:"folder,omitempty"`
	// Sniff is a regular expression (RE2) that must match within the first SniffBytes of
	// an entry's text, decoded from format.encoding; anchor it with ^ to test the start.
	Sniff string `yaml:"sniff,omitempty" json:"sniff,omitempty"`
	// PasswordSecret names the secret holding the password of encrypted zip archives. The
	// agent looks the name up in its secret store; the password itself is never part of
	// a definition, a log line or a status report.
	PasswordSecret string `yaml:"password_secret,omitempty" json:"password_secret,omitempty"`
}

// Format says how a file's bytes become records.
type Format struct {
	Type      string `yaml:"type" json:"type" jsonschema:"required,enum=csv,enum=fixed,enum=xml"`
	Delimiter string `yaml:"delimiter,omitempty" json:"delimiter,omitempty"`
	// Quote is the csv quote character, '"' when omitted. An explicit empty string (or
	// "none") turns quoting off: every quote character is field text.
	Quote *string `yaml:"quote,omitempty" json:"quote,omitempty"`
	// Escape is a csv character that, inside a quoted field, makes the next character
	// literal (`\"`). Empty means a quote inside a quoted field is written doubled.
	Escape string `yaml:"escape,omitempty" json:"escape,omitempty"`
	// Comment starts a line that is skipped (csv and fixed). A comment inside a quoted
	// field is field text.
	Comment string `yaml:"comment,omitempty" json:"comment,omitempty"`
	// SkipLines physical lines are skipped before the header or first record (csv and
	// fixed); line numbers in rejects still count them.
	SkipLines int `yaml:"skip_lines,omitempty" json:"skip_lines,omitempty" jsonschema:"minimum=0"`
	// TrailingDelimiter says every csv line (header too) ends with one extra delimiter,
	// which is dropped.
	TrailingDelimiter bool `yaml:"trailing_delimiter,omitempty" json:"trailing_delimiter,omitempty"`
	// Header is a pointer so an omitted value can default to true. false makes csv
	// columns positional (column.index); fixed never has one.
	Header *bool `yaml:"header,omitempty" json:"header,omitempty"`
	// Encoding of the bytes; see the Encoding constants.
	Encoding string `yaml:"encoding,omitempty" json:"encoding,omitempty" jsonschema:"enum=utf-8,enum=windows-1252,enum=latin-1,enum=utf-16,enum=utf-16le,enum=utf-16be"`
	// Record is, for XML, the slash-separated path of the element that holds one record,
	// from the document root ("Patient", "Export/Patients/Patient"). Columns' sources are
	// paths relative to it: "Name/First", "@id", "Address/@zip".
	Record string `yaml:"record,omitempty" json:"record,omitempty"`
}

// HasHeader reports whether the first line names the columns.
func (f Format) HasHeader() bool {
	return f.Type != FormatFixed && (f.Header == nil || *f.Header)
}

// Comma returns the field delimiter.
func (f Format) Comma() rune {
	if f.Delimiter == "" {
		return ','
	}
	r := []rune(f.Delimiter)
	if f.Delimiter == `\t` {
		return '\t'
	}
	return r[0]
}

// Column maps one source field to one table column.
type Column struct {
	Name string `yaml:"name" json:"name" jsonschema:"required,pattern=^[a-z][a-z0-9_]*$,maxLength=63"`
	// Source is the header name in the file (CSV) or the path below the record element
	// (XML: "Name/First", "@id"); empty means Name.
	Source string `yaml:"source,omitempty" json:"source,omitempty"`
	Type   string `yaml:"type" json:"type" jsonschema:"required,enum=string,enum=int,enum=float,enum=bool,enum=date,enum=timestamp,enum=decimal"`
	// Format is the Go time layout for date and timestamp columns.
	Format   string `yaml:"format,omitempty" json:"format,omitempty"`
	Required bool   `yaml:"required,omitempty" json:"required,omitempty"`
	// Index is, for csv without a header, the 1-based field number.
	Index int `yaml:"index,omitempty" json:"index,omitempty" jsonschema:"minimum=1"`
	// Start is, for fixed width, the 1-based rune position of the field in its line.
	Start int `yaml:"start,omitempty" json:"start,omitempty" jsonschema:"minimum=1"`
	// Width is, for fixed width, the field's length in runes.
	Width    int `yaml:"width,omitempty" json:"width,omitempty" jsonschema:"minimum=1"`
	RowStage `yaml:",inline"`
}

// SourceName is the header name that feeds this column.
func (c Column) SourceName() string {
	if c.Source != "" {
		return c.Source
	}
	return c.Name
}

var identRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Parse decodes one YAML definition strictly (unknown fields are errors) and validates it.
func Parse(data []byte) (*Definition, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var d Definition
	if err := dec.Decode(&d); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("empty document: %w", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// ParseFS parses every *.yaml and *.yml file in the root of fsys, sorted by name. Two
// feeds with one name, or one table declared with different columns, are errors.
func ParseFS(fsys fs.FS) ([]*Definition, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading feed definitions: %w", err)
	}
	var defs []*Definition
	byName := map[string]string{}
	for _, e := range entries {
		ext := path.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		data, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("reading feed definition %s: %w", e.Name(), err)
		}
		d, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("feed definition %s: %w", e.Name(), err)
		}
		if prev, ok := byName[d.Name]; ok {
			return nil, fmt.Errorf("feed definition %s: feed %q already defined in %s: %w", e.Name(), d.Name, prev, ErrInvalid)
		}
		byName[d.Name] = e.Name()
		defs = append(defs, d)
	}
	if err := CheckTables(defs); err != nil {
		return nil, err
	}
	return defs, nil
}

// CheckTables reports feeds that target one table with different schemas: a table has
// one schema, whichever feed writes it.
func CheckTables(defs []*Definition) error {
	first := map[string]*Definition{}
	for _, d := range defs {
		p, ok := first[d.Table]
		if !ok {
			first[d.Table] = d
			continue
		}
		if !sameColumns(p.TableSchema(), d.TableSchema()) || p.PartitionTime != d.PartitionTime {
			return fmt.Errorf("feeds %q and %q both write table %q but differ in columns, types or partition_time: %w", p.Name, d.Name, d.Table, ErrInvalid)
		}
	}
	return nil
}

func sameColumns(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i := range a.NumFields() {
		fa, fb := a.Field(i), b.Field(i)
		if fa.Name != fb.Name || !arrow.TypeEqual(fa.Type, fb.Type) {
			return false
		}
	}
	return true
}

// Validate reports every problem in the definition, each naming the field at fault.
func (d *Definition) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("feed %q: "+format, append([]any{d.Name}, args...)...))
	}
	if !identRE.MatchString(d.Name) {
		bad("name must match %s", identRE)
	}
	if d.Version < 1 {
		bad("version must be 1 or more, got %d", d.Version)
	}
	if !identRE.MatchString(d.Table) {
		bad("table %q must match %s", d.Table, identRE)
	}
	if IsReserved(d.Name) || IsReserved(d.Table) {
		bad("names starting with %q are reserved for medlake's own tables (%s)", ReservedPrefix, RejectsTable)
	}
	if d.Match.Glob == "" {
		bad("match.glob is required")
	} else if _, err := path.Match(d.Match.Glob, ""); err != nil {
		bad("match.glob %q: %v", d.Match.Glob, err)
	}
	switch d.Format.Type {
	case FormatCSV:
		d.validateCSV(bad)
	case FormatFixed:
		d.validateFixed(bad)
	case FormatXML:
		if d.Format.Record == "" {
			bad("format.record is required for xml (the path of the record element)")
		} else if err := checkXMLPath(d.Format.Record, false); err != nil {
			bad("format.record %q: %v", d.Format.Record, err)
		}
		if d.Format.Delimiter != "" || d.Format.Header != nil {
			bad("format.delimiter and format.header apply only to csv")
		}
		d.validateTextOnly(bad)
		for i, c := range d.Columns {
			if err := checkXMLPath(c.SourceName(), true); err != nil {
				bad("columns[%d] %q: source %q: %v", i, c.Name, c.SourceName(), err)
			}
		}
	case "":
		bad("format.type is required (csv, fixed or xml)")
	default:
		bad("format.type %q is not supported (csv, fixed or xml)", d.Format.Type)
	}
	d.validateMatch(bad)
	d.validateDrift(bad)
	if d.Format.Encoding != "" && !slices.Contains(Encodings(), strings.ToLower(d.Format.Encoding)) {
		bad("format.encoding %q is not supported (%s)", d.Format.Encoding, strings.Join(Encodings(), ", "))
	}
	if len(d.Columns) == 0 {
		bad("columns: at least one column is required")
	}
	seen := map[string]bool{}
	for i, c := range d.Columns {
		switch {
		case !identRE.MatchString(c.Name):
			bad("columns[%d]: name %q must match %s", i, c.Name, identRE)
		case seen[c.Name]:
			bad("columns[%d]: duplicate column %q", i, c.Name)
		}
		seen[c.Name] = true
		if _, ok := arrowType(c); !ok && c.Type != TypeDecimal {
			bad("columns[%d] %q: unknown type %q (string, int, float, bool, date, timestamp, decimal)", i, c.Name, c.Type)
		}
		if c.Format != "" && c.Type != TypeDate && c.Type != TypeTimestamp {
			bad("columns[%d] %q: format applies only to date and timestamp columns", i, c.Name)
		}
	}
	for _, k := range d.Keys {
		if !seen[k] {
			bad("keys: %q is not a column", k)
		}
	}
	if d.PartitionTime != "" {
		c, ok := d.Column(d.PartitionTime)
		if !ok {
			bad("partition_time: %q is not a column", d.PartitionTime)
		} else if c.Type != TypeDate && c.Type != TypeTimestamp {
			bad("partition_time: column %q is %s, want date or timestamp", d.PartitionTime, c.Type)
		}
	}
	errs = append(errs, d.validateRowStage()...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// checkXMLPath checks a slash-separated element path; attr allows a final "@name" step.
func checkXMLPath(p string, attr bool) error {
	steps := strings.Split(p, "/")
	for i, st := range steps {
		name := st
		if strings.HasPrefix(st, "@") {
			if !attr || i != len(steps)-1 {
				return errors.New("an attribute step (@name) may only end a column's path")
			}
			name = st[1:]
		}
		if !xmlNameRE.MatchString(name) {
			return fmt.Errorf("step %q is not an XML name", st)
		}
	}
	return nil
}

// xmlNameRE accepts XML names, with an optional namespace prefix ("hl7:id").
var xmlNameRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9._-]*:)?[A-Za-z_][A-Za-z0-9._-]*$`)

// Column returns the named column.
func (d *Definition) Column(name string) (Column, bool) {
	i := slices.IndexFunc(d.Columns, func(c Column) bool { return c.Name == name })
	if i < 0 {
		return Column{}, false
	}
	return d.Columns[i], true
}

// Matches reports whether a file or archive entry with this base name belongs to the feed.
func (d *Definition) Matches(baseName string) bool {
	return matchGlob(d.Match.Glob, baseName)
}

// PartitionColumn is the column whose day partitions the table.
func (d *Definition) PartitionColumn() string {
	if d.PartitionTime != "" {
		return d.PartitionTime
	}
	return ColIngestedAt
}

func arrowType(c Column) (arrow.DataType, bool) {
	switch c.Type {
	case TypeString:
		return arrow.BinaryTypes.String, true
	case TypeInt:
		return arrow.PrimitiveTypes.Int64, true
	case TypeFloat:
		return arrow.PrimitiveTypes.Float64, true
	case TypeBool:
		return arrow.FixedWidthTypes.Boolean, true
	case TypeDate:
		return arrow.FixedWidthTypes.Date32, true
	case TypeTimestamp:
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, true
	case TypeDecimal:
		if c.Precision < 1 || c.Precision > 38 || c.Scale < 0 || c.Scale > c.Precision {
			return nil, false
		}
		return &arrow.Decimal128Type{Precision: int32(c.Precision), Scale: int32(c.Scale)}, true
	}
	return nil, false
}

func (d *Definition) metadata() arrow.Metadata {
	return arrow.NewMetadata([]string{MetaFeed, MetaFeedVersion}, []string{d.Name, strconv.Itoa(d.Version)})
}

func (d *Definition) dataFields() []arrow.Field {
	return append(d.ColumnFields(), PositionFields()...)
}

// PositionFields are the last fields of every batch: where each row comes from.
func PositionFields() []arrow.Field {
	return []arrow.Field{
		{Name: ColSourceFile, Type: arrow.BinaryTypes.String},
		{Name: ColRow, Type: arrow.PrimitiveTypes.Int64},
	}
}

// ColumnFields are the fields of the defined columns, all nullable, followed by
// ColRescued when drift is rescue: the batch's fields before any added by drift add and
// before PositionFields.
func (d *Definition) ColumnFields() []arrow.Field {
	fields := make([]arrow.Field, 0, len(d.Columns)+2)
	for _, c := range d.Columns {
		t, _ := arrowType(c)
		fields = append(fields, arrow.Field{Name: c.Name, Type: t, Nullable: true})
	}
	if d.HasRescued() {
		fields = append(fields, arrow.Field{Name: ColRescued, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	return fields
}

// Metadata is the schema metadata of the feed's batches and table.
func (d *Definition) Metadata() arrow.Metadata { return d.metadata() }

// BatchSchema is the schema of the records an agent sends for this feed: the data
// columns, all nullable, then ColRescued when drift is rescue, then ColSourceFile, the
// entry a row comes from ("export.zip!visit-0042.xml"; one batch may hold the rows of
// many entries of one archive), and ColRow, the row's 1-based record position in that
// entry. With drift add a batch may carry extra nullable string columns before
// ColSourceFile (see AddedColumnName).
func (d *Definition) BatchSchema() *arrow.Schema {
	md := d.metadata()
	return arrow.NewSchema(d.dataFields(), &md)
}

// LineageFields are the columns the hub appends to every batch, in order.
func LineageFields() []arrow.Field {
	str := arrow.BinaryTypes.String
	return []arrow.Field{
		{Name: ColTenant, Type: str},
		{Name: ColFacility, Type: str},
		{Name: ColAgent, Type: str},
		{Name: ColFeed, Type: str},
		{Name: ColFeedVersion, Type: arrow.PrimitiveTypes.Int64},
		{Name: ColSourceSHA256, Type: str},
		{Name: ColBatchID, Type: str},
		{Name: ColIngestedAt, Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	}
}

// TableSchema is the lake table's schema: BatchSchema followed by LineageFields.
func (d *Definition) TableSchema() *arrow.Schema {
	md := d.metadata()
	return arrow.NewSchema(append(d.dataFields(), LineageFields()...), &md)
}

// Layouts returns the time layouts tried, in order, for a date or timestamp column.
func (c Column) Layouts() []string {
	if c.Format != "" {
		return []string{c.Format}
	}
	if c.Type == TypeDate {
		return []string{"2006-01-02", "20060102", "01/02/2006"}
	}
	return []string{"2006-01-02T15:04:05Z07:00", "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04:05Z07:00", "2006-01-02T15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999"}
}
