package gen

import (
	"context"
	"fmt"
	"time"
)

// StreamOptions say what Stream generates: the facilities and window of Options with
// Seed, Facilities and Days (so tenants, facilities and kinds are those `medlake gen`
// writes for the same values), and how many rows each facility has per day.
type StreamOptions struct {
	Seed       int64
	Facilities int
	Days       int
	// RowsPerFacilityDay is the number of rows each facility generates per day of the
	// window, at least (a group of related rows, an order's panel, is never split).
	// Zero means the entity's natural volume where it has one (bed_census: one snapshot
	// of every unit per hour) and 100 otherwise.
	RowsPerFacilityDay int
}

// Value is one generated field: a string, an integer, a float, a boolean, a date or a
// timestamp (both as Unix seconds), or null.
type Value = value

// Null reports a missing value (an empty string counts as present).
func (v value) Null() bool { return v.k == kNull }

// Str returns a string value.
func (v value) Str() string { return v.s }

// Int returns an integer, boolean (0 or 1), date or timestamp (Unix seconds) value.
func (v value) Int() int64 { return v.i }

// Float returns a float value.
func (v value) Float() float64 { return v.f }

// Column is one column of a generated table, with its feed type (feed.Type*).
type Column struct {
	Name, Type string
}

// Tables lists the tables Stream generates, in order.
func Tables() []string {
	out := make([]string, len(entities))
	for i, e := range entities {
		out[i] = e.name
	}
	return out
}

// Columns returns table's columns in the order of the values Stream emits.
func Columns(table string) ([]Column, error) {
	e := entityByName(table)
	if e == nil {
		return nil, fmt.Errorf("%w: no table %q", ErrOptions, table)
	}
	out := make([]Column, len(e.cols))
	for i, c := range e.cols {
		out[i] = Column{Name: c.name, Type: c.typ}
	}
	return out, nil
}

// FeedYAML returns the CSV feed definition of table, the one `medlake gen` writes: it
// gives the table's schema, keys and partition column.
func FeedYAML(table string) ([]byte, error) {
	e := entityByName(table)
	if e == nil {
		return nil, fmt.Errorf("%w: no table %q", ErrOptions, table)
	}
	return feedYAML(e, FormatCSV), nil
}

// StreamWindow returns the first and last day (exclusive) of the window Stream
// generates for o.
func StreamWindow(o StreamOptions) (time.Time, time.Time) {
	start := windowStart(o.Seed)
	return start, start.AddDate(0, 0, o.Days)
}

// StreamTenants returns the tenants and facilities Stream generates for o.
func StreamTenants(o StreamOptions) ([]Tenant, error) {
	p, err := makePlan(o.options())
	if err != nil {
		return nil, err
	}
	return p.tenants, nil
}

func (o StreamOptions) options() Options {
	opts := DefaultOptions()
	opts.Out, opts.Seed, opts.Facilities, opts.Days, opts.FilesPerFacility = "-", o.Seed, o.Facilities, o.Days, 1
	return opts
}

// Stream generates table's rows without writing archives, for loading large data sets
// straight into databases (benchmarks): for each facility in order, for each day of the
// window in order, rows whose event times fall in that day (the later events of a group,
// a discharge or a panel's results, may fall on a later day). emit gets the facility and
// the row's values, in Columns order; the slice is reused between calls. Same options,
// same rows in the same order. An error from emit stops the stream and is returned.
func Stream(ctx context.Context, o StreamOptions, table string, emit func(f *Facility, row []Value) error) error {
	e := entityByName(table)
	if e == nil {
		return fmt.Errorf("%w: no table %q", ErrOptions, table)
	}
	opts := o.options()
	if err := opts.Validate(); err != nil {
		return err
	}
	if o.RowsPerFacilityDay < 0 {
		return fmt.Errorf("%w: rows per facility day: want 0 or more, got %d", ErrOptions, o.RowsPerFacilityDay)
	}
	p, err := makePlan(opts)
	if err != nil {
		return err
	}
	ti := 0
	for ti < len(entities) && entities[ti] != e {
		ti++
	}
	for _, fp := range p.facilities {
		st := &facilityState{Facility: fp.Facility, kind: fp.kind}
		ar := newRand(o.Seed, streamAttending, uint64(fp.num))
		for range 6 + ar.IntN(20) {
			st.attending = append(st.attending, fmt.Sprintf("%s, %s %s", lastNames[ar.IntN(len(lastNames))],
				firstNames[ar.IntN(len(firstNames))], []string{"MD", "MD", "MD", "DO", "NP", "PA-C"}[ar.IntN(6)]))
		}
		g := &rowGen{fac: st, end: p.end.Unix(), vals: make([]value, len(e.cols))}
		var n int
		var emitErr error
		g.emit = func() {
			if emitErr == nil {
				emitErr = emit(&st.Facility, g.vals)
			}
			n++
		}
		for d := range o.Days {
			if err := ctx.Err(); err != nil {
				return err
			}
			// One stream per facility, table and day, apart from the archive streams.
			g.rng = newRand(o.Seed, streamRows, 1<<62|uint64(fp.num)<<24|uint64(ti)<<16|uint64(d))
			g.from = p.start.Unix() + int64(d)*day
			g.to = g.from + day
			n = 0
			if e.name == "bed_census" && o.RowsPerFacilityDay == 0 {
				for h := range int64(24) {
					g.from, g.to = p.start.Unix()+int64(d)*day+h*3600, p.start.Unix()+int64(d)*day+(h+1)*3600
					e.gen(g)
				}
			} else {
				want := o.RowsPerFacilityDay
				if want == 0 {
					want = 100
				}
				for n < want && emitErr == nil {
					e.gen(g)
				}
			}
			if emitErr != nil {
				return emitErr
			}
		}
	}
	return nil
}
