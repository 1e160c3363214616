package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/medlake/medlake/agent"
	"github.com/medlake/medlake/agent/normalize"
	"github.com/medlake/medlake/agent/unpack"
	"github.com/medlake/medlake/protocol/feed"
)

const feedsUsage = `Usage: medlake feeds <command> [flags]

Commands:
  test -f DEF.yaml SAMPLE...   run a feed definition over sample files with no server:
                               prints the rows it makes, every reject with its reason,
                               and the resulting table schema. Exits non-zero when the
                               definition is invalid, a sample cannot be read, or a row
                               is rejected, so it can gate a definition in CI.
  apply -f FILE|DIR            validate definitions and record them in the catalog as new
                               versions (re-applying the same text changes nothing).
                               Running hubs load a new version within seconds and push
                               it to every agent, which reads its next file with it.
  list                         the newest version of every feed in the catalog
  show [--version N] NAME      a feed's definition as applied
  history NAME                 every version of a feed: when and by whom it was applied
  diff -f FILE|DIR             what apply would change, as a unified diff
  infer [--name N] SAMPLE      draft a definition (YAML on stdout) from a delimited
                               sample with a header line: delimiter, column names and
                               types guessed from the first records.
`

func runFeeds(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, feedsUsage)
		return errors.New("feeds: no command given")
	}
	switch args[0] {
	case "test":
		return runFeedsTest(ctx, args[1:], stdout)
	case "infer":
		return runFeedsInfer(ctx, args[1:], stdout)
	case "apply":
		return runFeedsApply(ctx, args[1:], stdout)
	case "list":
		return runFeedsList(ctx, args[1:], stdout)
	case "show":
		return runFeedsShow(ctx, args[1:], stdout)
	case "history":
		return runFeedsHistory(ctx, args[1:], stdout)
	case "diff":
		return runFeedsDiff(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, feedsUsage)
		return nil
	}
	fmt.Fprint(os.Stderr, feedsUsage)
	return fmt.Errorf("feeds: unknown command %q", args[0])
}

// errRejects reports that a feed test found rows its definition rejects.
var errRejects = errors.New("rejected rows")

func runFeedsTest(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		defPath, secretsDir string
		limit               int
	)
	fs := flag.NewFlagSet("medlake feeds test", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), feedsUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&defPath, "f", "", "feed definition file (YAML)")
	fs.IntVar(&limit, "limit", 10, "rows to print per entry (0: none)")
	fs.StringVar(&secretsDir, "secrets-dir", "", "directory holding the secrets named by match.password_secret and hash transforms (as the agent's secrets_dir)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if defPath == "" || fs.NArg() == 0 {
		fs.Usage()
		return errors.New("feeds test: need -f DEF.yaml and at least one sample file")
	}
	data, err := os.ReadFile(defPath)
	if err != nil {
		return err
	}
	def, err := feed.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", defPath, err)
	}
	var secret func(string) ([]byte, error)
	if secretsDir != "" {
		secret = func(name string) ([]byte, error) {
			s, err := agent.ReadSecret(secretsDir, name)
			return []byte(s), err
		}
	}
	n, err := normalize.New(def, normalize.Options{Secret: secret})
	if err != nil {
		return err
	}
	lim := unpack.DefaultLimits()
	if def.Match.PasswordSecret != "" && secretsDir != "" {
		lim.Passwords = func(archive, entry string) ([]string, error) {
			pw, err := agent.ReadSecret(secretsDir, def.Match.PasswordSecret)
			if err != nil {
				return nil, err
			}
			return []string{pw}, nil
		}
	}
	var rejected int64
	for _, sample := range fs.Args() {
		err := unpack.Walk(ctx, sample, lim, func(e unpack.Entry) error {
			if e.Skip != "" {
				fmt.Fprintf(stdout, "== %s: skipped: %s\n", e.Name, e.Skip)
				return nil
			}
			// A sample lies outside any watched folder: match.folder is not checked.
			sampleDef := *def
			sampleDef.Match.Folder = ""
			entry := bufio.NewReaderSize(e.Reader, 64<<10)
			ok, err := sampleDef.Accepts("", e.BaseName(), func(encoding string) (string, error) {
				raw, err := entry.Peek(normalize.SniffPeekBytes)
				if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
					return "", err
				}
				return normalize.SniffText(raw, encoding)
			})
			if err != nil {
				return err
			}
			if !ok {
				fmt.Fprintf(stdout, "== %s: does not match glob %q or sniff %q; not read\n", e.Name, def.Match.Glob, def.Match.Sniff)
				return nil
			}
			fmt.Fprintf(stdout, "== %s\n", e.Name)
			var rows [][]string
			var header []string // from the first batch: drift add may extend the feed's columns
			st, err := n.Run(ctx, entry, e.Name, func(rec arrow.RecordBatch) error {
				if header == nil {
					for _, f := range rec.Schema().Fields() {
						header = append(header, f.Name)
					}
				}
				for i := 0; i < int(rec.NumRows()) && len(rows) < limit; i++ {
					row := make([]string, rec.NumCols())
					for c := range row {
						row[c] = rec.Column(c).ValueStr(i)
					}
					rows = append(rows, row)
				}
				return nil
			}, func(r normalize.Reject) error {
				where := fmt.Sprintf("row %d (line %d)", r.Row, r.Line)
				if r.Column != "" {
					where += " column " + r.Column
				}
				fmt.Fprintf(stdout, "reject %s: %s: %s\n  %s\n", e.Name, where, r.Reason, truncate(r.Raw, 200))
				return nil
			})
			if err != nil {
				return err
			}
			rejected += st.Rejected
			if len(rows) > 0 {
				if err := printRows(stdout, "table", header, rows); err != nil {
					return err
				}
			}
			fmt.Fprintf(stdout, "%d records: %d rows, %d rejected", st.Rows, st.Accepted, st.Rejected)
			if len(st.Unmapped) > 0 {
				fmt.Fprintf(stdout, "; fields no column takes: %s", strings.Join(st.Unmapped, ", "))
			}
			fmt.Fprintln(stdout)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s cannot be read with feed %s: %w", sample, def.Name, err)
		}
	}
	fmt.Fprintf(stdout, "== table %s (feed %s version %d)\n", def.Table, def.Name, def.Version)
	for _, f := range def.TableSchema().Fields() {
		fmt.Fprintf(stdout, "  %-16s %s\n", f.Name, f.Type)
	}
	if rejected > 0 {
		return fmt.Errorf("feeds test: %w: %d", errRejects, rejected)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
