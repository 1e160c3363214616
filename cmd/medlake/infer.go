package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/protocol/feed"
)

// inferRows is how many records infer looks at per column.
const inferRows = 1000

func runFeedsInfer(ctx context.Context, args []string, stdout io.Writer) error {
	var name string
	fs := flag.NewFlagSet("medlake feeds infer", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), feedsUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&name, "name", "", "feed and table name (default: from the sample's file name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("feeds infer: need exactly one sample file")
	}
	sample := fs.Arg(0)
	var def *feed.Definition
	err := unpack.Walk(ctx, sample, unpack.DefaultLimits(), func(e unpack.Entry) error {
		if def != nil || e.Reader == nil {
			return nil
		}
		var err error
		def, err = inferDefinition(e.BaseName(), e.Reader, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("feeds infer %s: %w", sample, err)
	}
	if def == nil {
		return fmt.Errorf("feeds infer %s: no file inside to read", sample)
	}
	if err := def.Validate(); err != nil {
		return fmt.Errorf("feeds infer %s: the draft does not validate (rename columns by hand): %w", sample, err)
	}
	fmt.Fprintf(stdout, "# Drafted by medlake feeds infer from %s (first %d records).\n", path.Base(sample), inferRows)
	fmt.Fprintln(stdout, "# Check types, add keys, partition_time and required columns, then run medlake feeds test.")
	enc := yaml.NewEncoder(stdout)
	enc.SetIndent(2)
	if err := enc.Encode(def); err != nil {
		return err
	}
	return enc.Close()
}

// inferDefinition drafts a CSV feed from a delimited sample with a header line.
func inferDefinition(base string, r io.Reader, name string) (*feed.Definition, error) {
	br := bufio.NewReader(r)
	first, err := br.Peek(64 << 10)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	headerLine, _, _ := strings.Cut(string(first), "\n")
	comma := sniffDelimiter(headerLine)
	cr := csv.NewReader(br)
	cr.Comma = comma
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("reading the header line: %w", err)
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	cols := make([]columnGuess, len(header))
	for n := 0; n < inferRows; n++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			continue // a malformed record says nothing about types
		}
		for i := range cols {
			if i < len(rec) {
				cols[i].see(strings.TrimSpace(rec[i]))
			}
		}
	}
	stem := strings.ToLower(base)
	if i := strings.IndexByte(stem, '.'); i > 0 {
		stem = stem[:i]
	}
	if name == "" {
		name = identifier(stem)
	}
	def := &feed.Definition{
		Name: name, Version: 1, Table: name,
		Match:  feed.Match{Glob: "*" + path.Ext(base)},
		Format: feed.Format{Type: feed.FormatCSV},
	}
	if comma != ',' {
		def.Format.Delimiter = string(comma)
		if comma == '\t' {
			def.Format.Delimiter = `\t`
		}
	}
	for i, h := range header {
		c := feed.Column{Name: identifier(h), Type: cols[i].typ(), Format: cols[i].layout()}
		if !strings.EqualFold(c.Name, strings.TrimSpace(h)) {
			c.Source = h
		}
		if cols[i].seen > 0 && cols[i].empty == 0 {
			c.Required = true
		}
		def.Columns = append(def.Columns, c)
	}
	return def, nil
}

// sniffDelimiter picks the most frequent of the usual delimiters in the header line.
func sniffDelimiter(line string) rune {
	best, bestN := ',', 0
	for _, d := range []rune{',', '|', ';', '\t'} {
		if n := strings.Count(line, string(d)); n > bestN {
			best, bestN = d, n
		}
	}
	return best
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// identifier turns a header name into a column name: lower snake case starting with a letter.
func identifier(s string) string {
	id := strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(strings.TrimSpace(s)), "_"), "_")
	if id == "" || id[0] < 'a' || id[0] > 'z' {
		id = "c_" + id
	}
	if len(id) > 63 {
		id = id[:63]
	}
	return id
}

// columnGuess narrows a column's type as values are seen: each candidate survives only
// while every non-empty value parses as it.
type columnGuess struct {
	seen, empty    int
	notInt, notNum bool
	notBool        bool
	dateLayout     string
	timeLayout     string
	notDate, notTS bool
}

var (
	dateLayouts = []string{"2006-01-02", "20060102", "01/02/2006"}
	timeLayouts = []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "20060102150405", "01/02/2006 15:04:05"}
)

func (g *columnGuess) see(v string) {
	if v == "" {
		g.empty++
		return
	}
	g.seen++
	if _, err := strconv.ParseInt(v, 10, 64); err != nil || (len(v) > 1 && v[0] == '0') {
		g.notInt = true // leading zeros (ZIP codes, MRNs) are identifiers, not numbers
	}
	if _, err := strconv.ParseFloat(v, 64); err != nil || (len(v) > 1 && v[0] == '0' && v[1] != '.') {
		g.notNum = true
	}
	if _, err := strconv.ParseBool(v); err != nil {
		g.notBool = true
	}
	g.dateLayout, g.notDate = narrowLayout(g.dateLayout, g.notDate, dateLayouts, v)
	g.timeLayout, g.notTS = narrowLayout(g.timeLayout, g.notTS, timeLayouts, v)
}

// narrowLayout keeps the first layout that parses every value seen so far.
func narrowLayout(current string, ruledOut bool, layouts []string, v string) (string, bool) {
	if ruledOut {
		return "", true
	}
	if current != "" {
		if _, err := time.Parse(current, v); err == nil {
			return current, false
		}
		return "", true
	}
	for _, l := range layouts {
		if _, err := time.Parse(l, v); err == nil {
			return l, false
		}
	}
	return "", true
}

func (g *columnGuess) typ() string {
	// Compact dates and times (20261102, 20261102143000) also parse as integers; a column
	// whose every value is a valid date or time is taken for one.
	switch {
	case g.seen == 0:
		return feed.TypeString
	case !g.notDate:
		return feed.TypeDate
	case !g.notTS:
		return feed.TypeTimestamp
	case !g.notInt:
		return feed.TypeInt
	case !g.notNum:
		return feed.TypeFloat
	case !g.notBool:
		return feed.TypeBool
	}
	return feed.TypeString
}

func (g *columnGuess) layout() string {
	switch g.typ() {
	case feed.TypeDate:
		return g.dateLayout
	case feed.TypeTimestamp:
		return g.timeLayout
	}
	return ""
}
