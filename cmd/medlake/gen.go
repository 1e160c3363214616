package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/schollz/progressbar/v3"

	"github.com/medlake/medlake/cmd/medlake/internal/gen"
)

const genUsage = `Usage: medlake gen --out DIR [flags]

Generates seed-shaped facility exports: DIR/exports/<tenant>/<facility>/ archives
(gzip, zip, tar.gz) holding CSV, TXT or XML, the feed definitions that read them in
DIR/feeds/, and DIR/manifest.json with per-table row counts and key checksums. The same
seed and flags always give the same bytes.
`

func runGen(ctx context.Context, args []string, stdout io.Writer) error {
	opts := gen.DefaultOptions()
	formats := strings.Join(opts.Formats, ",")
	quiet := false
	fs := flag.NewFlagSet("medlake gen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), genUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.Out, "out", "", "output directory (required; must not hold generated data)")
	fs.Int64Var(&opts.Seed, "seed", opts.Seed, "random seed")
	fs.IntVar(&opts.Facilities, "facilities", opts.Facilities, "number of facilities")
	fs.IntVar(&opts.FilesPerFacility, "files-per-facility", opts.FilesPerFacility, "archives per facility")
	fs.StringVar(&formats, "formats", formats, "comma-separated export formats: csv, txt, xml, dat (fixed width)")
	fs.IntVar(&opts.Large, "large", opts.Large, "number of large (~40 MB) archives")
	fs.IntVar(&opts.Days, "days", opts.Days, "days the records' event times span")
	fs.Int64Var(&opts.MinBytes, "min-bytes", opts.MinBytes, "smallest compressed archive size")
	fs.Int64Var(&opts.MaxBytes, "max-bytes", opts.MaxBytes, "largest compressed archive size (except large ones)")
	fs.BoolVar(&quiet, "quiet", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if opts.Out == "" {
		fs.Usage()
		return fmt.Errorf("--out is required")
	}
	opts.Formats = strings.Split(formats, ",")
	var progress func(done, total int)
	if !quiet {
		var bar *progressbar.ProgressBar
		progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("generating archives"), progressbar.OptionShowCount(),
					progressbar.OptionClearOnFinish())
			}
			_ = bar.Set(done)
		}
	}
	m, err := gen.Run(ctx, opts, progress)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d archives for %d facilities to %s\n", len(m.Files), opts.Facilities, opts.Out)
	names := slices.Sorted(maps.Keys(m.Tables))
	for _, name := range names {
		t := m.Tables[name]
		fmt.Fprintf(stdout, "  %-12s %9d rows  key checksum %s\n", name, t.Rows, t.KeyChecksum)
	}
	return nil
}
