package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/medlake/medlake/agent"
	"github.com/medlake/medlake/agent/quarantine"
	"github.com/medlake/medlake/cmd/internal/cliconfig"
)

// The quarantine and rejects commands work on the state directory's folders only, never
// on state.db, which a running agent holds locked: they work while the agent runs, and a
// retry is a request file the agent picks up (see package quarantine).

const quarantineUsage = `Usage:
  medlake-agent quarantine list [--json]      quarantined files: time, sha256, path, size, reason
  medlake-agent quarantine show SHA256        one file's full reason and copy (a unique prefix will do)
  medlake-agent quarantine retry SHA256|--all re-process from the quarantine copy under the
                                              current feed definitions (after fixing them or a password)
Flags: --config FILE, --state-dir DIR (default: the agent configuration's state_dir)
`

const rejectsUsage = `Usage:
  medlake-agent rejects list [--json]   files with rejected rows: time, sha256, rows, first source and reason
  medlake-agent rejects show SHA256     every rejected row of a file: source, row, line, column, reason
  medlake-agent rejects retry SHA256|--all
                                        re-run the rejected rows (only those) of files whose feed
                                        definition has a higher version than the one that rejected them
Flags: --config FILE, --state-dir DIR (default: the agent configuration's state_dir)
`

// adminArgs are the flags and positional arguments of an admin command.
type adminArgs struct {
	stateDir string
	json     bool
	all      bool
	args     []string
}

// parseAdmin reads --config and MEDLAKE_AGENT_* for state_dir without validating the rest
// of the configuration: ops must be able to look into a misconfigured agent's folders.
func parseAdmin(name, usage string, args []string) (adminArgs, error) {
	cfg := agent.DefaultConfig()
	if err := cliconfig.Load(&cfg, cliconfig.ConfigPath(args, "MEDLAKE_AGENT_CONFIG"), "MEDLAKE_AGENT_"); err != nil {
		return adminArgs{}, err
	}
	var a adminArgs
	fs := flag.NewFlagSet("medlake-agent "+name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	fs.String("config", "", "YAML configuration file (env MEDLAKE_AGENT_CONFIG)")
	fs.StringVar(&a.stateDir, "state-dir", cfg.StateDir, "the agent's state directory")
	fs.BoolVar(&a.json, "json", false, "print JSON")
	fs.BoolVar(&a.all, "all", false, "every quarantined file")
	// Flags may follow positional arguments: "show abc123 --state-dir /x".
	for {
		if err := fs.Parse(args); err != nil {
			return adminArgs{}, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		a.args = append(a.args, rest[0])
		args = rest[1:]
	}
	if a.stateDir == "" {
		return adminArgs{}, errors.New("no state directory: give --state-dir or --config")
	}
	return a, nil
}

func runQuarantine(args []string, stdout io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, quarantineUsage)
		return errors.New("quarantine: missing command (list, show, retry)")
	}
	sub := args[0]
	a, err := parseAdmin("quarantine "+sub, quarantineUsage, args[1:])
	if err != nil {
		return err
	}
	dir := filepath.Join(a.stateDir, "quarantine")
	switch sub {
	case "list":
		entries, err := quarantine.List(dir)
		if err != nil {
			return err
		}
		if a.json {
			if entries == nil {
				entries = []quarantine.Entry{}
			}
			return writeJSON(stdout, entries)
		}
		if len(entries) == 0 {
			fmt.Fprintln(stdout, "no quarantined files")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tSHA256\tPATH\tSIZE\tREASON")
		for _, e := range entries {
			reason := oneLine(e.Reason, 100)
			if e.RetryPending {
				reason = "(retry pending) " + reason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339), shortSHA(e.SHA256), e.Path, size(e.Size), reason)
		}
		return tw.Flush()
	case "show":
		if len(a.args) != 1 {
			return errors.New("quarantine show: give one sha256 (or a unique prefix)")
		}
		e, err := quarantine.Find(dir, a.args[0])
		if err != nil {
			return err
		}
		if a.json {
			return writeJSON(stdout, e)
		}
		fmt.Fprintf(stdout, "sha256:  %s\nfile:    %s\ncopy:    %s\nsize:    %s\ntime:    %s\nretry:   %s\nreason:  %s\n",
			e.SHA256, e.Path, e.Copy, size(e.Size), e.Time.Format(time.RFC3339), pending(e.RetryPending), e.Reason)
		return nil
	case "retry":
		var targets []quarantine.Entry
		switch {
		case a.all && len(a.args) == 0:
			if targets, err = quarantine.List(dir); err != nil {
				return err
			}
		case !a.all && len(a.args) > 0:
			for _, p := range a.args {
				e, err := quarantine.Find(dir, p)
				if err != nil {
					return err
				}
				targets = append(targets, e)
			}
		default:
			return errors.New("quarantine retry: give sha256 prefixes or --all, not both or neither")
		}
		n := 0
		for _, e := range targets {
			if e.SHA256 == "" || e.Size < 0 {
				fmt.Fprintf(stdout, "skipped %s: no quarantine copy to re-process\n", e.Path)
				continue
			}
			if err := quarantine.RequestRetry(dir, e.SHA256); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "retry requested: %s %s\n", shortSHA(e.SHA256), e.Path)
			n++
		}
		fmt.Fprintf(stdout, "%d retries requested; a running agent takes them within seconds, a stopped one at its next start\n", n)
		return nil
	}
	fmt.Fprint(os.Stderr, quarantineUsage)
	return fmt.Errorf("quarantine: unknown command %q", sub)
}

// rejectFile summarizes rejects/<sha256>.jsonl.
type rejectFile struct {
	SHA256 string    `json:"sha256"`
	Time   time.Time `json:"time"`
	Rows   int       `json:"rows"`
	Feeds  []string  `json:"feeds"`
	Source string    `json:"source"` // entry of the first rejected row
	Reason string    `json:"reason"` // of the first rejected row
	Path   string    `json:"path"`   // the JSONL file
}

func readRejects(path string, fn func(agent.RejectLine) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		var r agent.RejectLine
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s line %d: %w", path, n, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return sc.Err()
}

func listRejects(dir string) ([]rejectFile, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing rejects %s: %w", dir, err)
	}
	var out []rejectFile
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || !strings.HasSuffix(name, ".jsonl") {
			continue
		}
		info, err := de.Info()
		if err != nil {
			return nil, err
		}
		rf := rejectFile{SHA256: strings.TrimSuffix(name, ".jsonl"), Time: info.ModTime().UTC(), Path: filepath.Join(dir, name)}
		err = readRejects(rf.Path, func(r agent.RejectLine) error {
			if rf.Rows == 0 {
				rf.Source, rf.Reason = r.Source, r.Reason
			}
			rf.Rows++
			if r.Feed != "" && !slices.Contains(rf.Feeds, r.Feed) {
				rf.Feeds = append(rf.Feeds, r.Feed)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, rf)
	}
	slices.SortFunc(out, func(a, b rejectFile) int { return a.Time.Compare(b.Time) })
	return out, nil
}

func runRejects(args []string, stdout io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, rejectsUsage)
		return errors.New("rejects: missing command (list, show, retry)")
	}
	sub := args[0]
	a, err := parseAdmin("rejects "+sub, rejectsUsage, args[1:])
	if err != nil {
		return err
	}
	dir := filepath.Join(a.stateDir, "rejects")
	files, err := listRejects(dir)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		if a.json {
			if files == nil {
				files = []rejectFile{}
			}
			return writeJSON(stdout, files)
		}
		if len(files) == 0 {
			fmt.Fprintln(stdout, "no rejected rows")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tSHA256\tROWS\tFEEDS\tSOURCE\tFIRST REASON")
		for _, f := range files {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", f.Time.Format(time.RFC3339), shortSHA(f.SHA256), f.Rows,
				strings.Join(f.Feeds, ","), f.Source, oneLine(f.Reason, 80))
		}
		return tw.Flush()
	case "show":
		if len(a.args) != 1 {
			return errors.New("rejects show: give one sha256 (or a unique prefix)")
		}
		f, err := findRejects(files, a.args[0])
		if err != nil {
			return err
		}
		var rows []agent.RejectLine
		if err := readRejects(f.Path, func(r agent.RejectLine) error { rows = append(rows, r); return nil }); err != nil {
			return err
		}
		if a.json {
			return writeJSON(stdout, rows)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tFEED\tROW\tLINE\tCOLUMN\tREASON")
		for _, r := range rows {
			feedName := r.Feed
			if r.Feed != "" {
				feedName = fmt.Sprintf("%s v%d", r.Feed, r.FeedVersion)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.Source, feedName, r.Row, r.Line, r.Column, oneLine(r.Reason, 120))
		}
		return tw.Flush()
	case "retry":
		var targets []rejectFile
		switch {
		case a.all && len(a.args) == 0:
			targets = files
		case !a.all && len(a.args) > 0:
			for _, p := range a.args {
				f, err := findRejects(files, p)
				if err != nil {
					return err
				}
				targets = append(targets, f)
			}
		default:
			return errors.New("rejects retry: give sha256 prefixes or --all, not both or neither")
		}
		for _, f := range targets {
			if err := quarantine.RequestRetry(dir, f.SHA256); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "retry requested: %s %d rejected rows\n", shortSHA(f.SHA256), f.Rows)
		}
		fmt.Fprintf(stdout, "%d retries requested; the agent re-runs rows of feeds whose definition it has loaded at a higher version (see its log)\n", len(targets))
		return nil
	}
	fmt.Fprint(os.Stderr, rejectsUsage)
	return fmt.Errorf("rejects: unknown command %q", sub)
}

// findRejects finds a file with rejects by hash prefix.
func findRejects(files []rejectFile, prefix string) (rejectFile, error) {
	if len(prefix) < quarantine.MinPrefix {
		return rejectFile{}, fmt.Errorf("sha256 prefix %q: give at least %d hex digits", prefix, quarantine.MinPrefix)
	}
	var match []rejectFile
	for _, f := range files {
		if strings.HasPrefix(f.SHA256, strings.ToLower(prefix)) {
			match = append(match, f)
		}
	}
	if len(match) != 1 {
		return rejectFile{}, fmt.Errorf("%s: %d files with rejected rows match", prefix, len(match))
	}
	return match[0], nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func size(n int64) string {
	if n < 0 {
		return "missing"
	}
	return fmt.Sprint(n)
}

func pending(p bool) string {
	if p {
		return "pending"
	}
	return "none"
}

// oneLine keeps a table row on one line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
