package gen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Random streams: each use of randomness has its own stream, so adding a draw in one
// place does not shift every value generated after it elsewhere.
const (
	streamTenants uint64 = iota + 1
	streamFacilities
	streamFiles
	streamLarge
	streamRows
	streamAttending
)

func mix(x uint64) uint64 { // splitmix64 finalizer
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newRand(seed int64, stream, sub uint64) *rand.Rand {
	return rand.New(rand.NewPCG(mix(uint64(seed)^mix(stream)), mix(sub)))
}

// windowStart is the epoch the seed's data starts at: a midnight in 2024–2025 chosen by
// the seed, so the data looks recent without depending on the clock.
func windowStart(seed int64) time.Time {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	return base.AddDate(0, 0, int(mix(uint64(seed)^0x5eed)%731))
}

// plannedFile is one archive to write, decided before any row is generated so the
// plan depends only on the seed and options.
type plannedFile struct {
	index   int // 0-based position among the facility's files; its slice of the window
	ent     *entity
	format  string
	archive string
	entries int   // CSV/TXT files in the archive
	target  int64 // compressed bytes to reach (CSV/TXT)
	records int   // XML records (XML)
	large   bool
	base    string // file name without format and archive extensions
}

func (p *plannedFile) name() string {
	switch p.archive {
	case ArchiveGzip:
		return p.base + "." + p.format + ".gz"
	case ArchiveTarGz:
		return p.base + "." + p.format + ".tar.gz"
	}
	return p.base + "." + p.format + ".zip"
}

func (p *plannedFile) entryName(i int) string {
	switch {
	case p.format == FormatXML:
		return fmt.Sprintf("%s_%04d.xml", p.base, i+1)
	case p.entries == 1:
		return p.base + "." + p.format
	}
	return fmt.Sprintf("%s_p%02d.%s", p.base, i+1, p.format)
}

type facilityPlan struct {
	Facility
	num   int // 1-based, as in the id
	kind  *facilityKind
	files []*plannedFile
}

type plan struct {
	start, end time.Time
	tenants    []Tenant
	facilities []*facilityPlan
}

func logUniform(r *rand.Rand, lo, hi float64) float64 {
	return math.Exp(math.Log(lo) + r.Float64()*(math.Log(hi)-math.Log(lo)))
}

func weighted[T any](r *rand.Rand, items []T, weight func(T) int) T {
	total := 0
	for _, it := range items {
		total += weight(it)
	}
	n := r.IntN(total)
	for _, it := range items {
		if n -= weight(it); n < 0 {
			return it
		}
	}
	return items[len(items)-1]
}

func makePlan(o Options) (*plan, error) {
	p := &plan{start: windowStart(o.Seed)}
	p.end = p.start.AddDate(0, 0, o.Days)

	// Tenants of 1–13 facilities, about 7 on average as 8,000 facilities belong to
	// 1,100 customers.
	tr := newRand(o.Seed, streamTenants, 0)
	for i := 0; i < o.Facilities; {
		n := min(1+tr.IntN(13), o.Facilities-i)
		t := Tenant{ID: fmt.Sprintf("t%04d", len(p.tenants)+1)}
		for range n {
			i++
			kr := newRand(o.Seed, streamFacilities, uint64(i))
			k := weighted(kr, facilityKinds, func(k facilityKind) int { return k.weight })
			f := Facility{ID: fmt.Sprintf("f%06d", i), Tenant: t.ID, Kind: k.name}
			for _, u := range k.units {
				f.Units = append(f.Units, u.name)
			}
			t.Facilities = append(t.Facilities, f)
			p.facilities = append(p.facilities, &facilityPlan{Facility: f, num: i, kind: &k})
		}
		p.tenants = append(p.tenants, t)
	}

	lo, hi := float64(o.MinBytes+o.MinBytes/16), float64(o.MaxBytes-o.MaxBytes/32)
	var eligible []*plannedFile // candidates for large archives
	for _, fp := range p.facilities {
		for j := range o.FilesPerFacility {
			r := newRand(o.Seed, streamFiles, uint64(fp.num)<<24|uint64(j))
			pf := &plannedFile{index: j, entries: 1}
			pf.ent = weighted(r, entities, func(e *entity) int { return e.weight })
			pf.format = o.Formats[r.IntN(len(o.Formats))]
			pf.base = fmt.Sprintf("%s_%s_%06d", fp.ID, pf.ent.name, j+1)
			if pf.format == FormatXML {
				pf.archive = ArchiveZip
				pf.records = int(math.Round(logUniform(r, 20, 292)))
			} else {
				switch x := r.IntN(100); {
				case x < 55:
					pf.archive = ArchiveGzip
				case x < 85:
					pf.archive = ArchiveZip
				default:
					pf.archive = ArchiveTarGz
				}
				if pf.archive != ArchiveGzip {
					pf.entries = weighted(r, []int{1, 1, 1, 2, 2, 3}, func(int) int { return 1 })
				}
				pf.target = int64(logUniform(r, lo, hi))
				eligible = append(eligible, pf)
			}
			fp.files = append(fp.files, pf)
		}
	}
	if o.Large > len(eligible) {
		return nil, fmt.Errorf("%w: large: %d large archives requested but only %d CSV/TXT archives are planned", ErrOptions, o.Large, len(eligible))
	}
	lr := newRand(o.Seed, streamLarge, 0)
	for i := range o.Large {
		k := i + lr.IntN(len(eligible)-i)
		eligible[i], eligible[k] = eligible[k], eligible[i]
		pf := eligible[i]
		pf.large = true
		pf.entries = 1
		if pf.archive == ArchiveTarGz { // tar spools entries to disk; keep large ones streaming
			pf.archive = ArchiveGzip
		}
		pf.target = int64(float64(o.LargeBytes) * (0.95 + 0.1*lr.Float64()))
	}
	return p, nil
}
