package gen

import (
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/medlake/medlake/protocol/feed"
)

// kind is the kind of one generated value; the encoders render it per format.
type kind uint8

const (
	kNull kind = iota
	kStr
	kInt
	kFloat
	kBool
	kDate // i: unix seconds at midnight UTC
	kTime // i: unix seconds
)

type value struct {
	k kind
	i int64
	f float64
	s string
}

func str(s string) value { return value{k: kStr, s: s} }
func num(i int64) value  { return value{k: kInt, i: i} }
func flt(f float64) value {
	return value{k: kFloat, f: f}
}
func boolean(b bool) value {
	if b {
		return value{k: kBool, i: 1}
	}
	return value{k: kBool}
}
func ts(sec int64) value   { return value{k: kTime, i: sec} }
func date(sec int64) value { return value{k: kDate, i: sec - sec%86400} }

var null = value{}

type column struct {
	name     string
	typ      string // a feed.Type* constant
	required bool
}

// entity is one kind of record: one lake table, exported by every facility.
type entity struct {
	name      string // table name and the entity part of file names
	record    string // XML root element
	keys      []string
	partition string
	weight    int // share of a facility's files
	cols      []column
	gen       func(g *rowGen) // emits one group of related rows (an order's results, an encounter's events)
}

const day = 86400

// entities in the order their feeds and manifest entries are written.
var entities = []*entity{
	{
		name: "patients", record: "patient", keys: []string{"patient_id"}, partition: "updated_at", weight: 10,
		cols: []column{
			{name: "patient_id", typ: feed.TypeString, required: true},
			{name: "mrn", typ: feed.TypeString, required: true},
			{name: "first_name", typ: feed.TypeString},
			{name: "last_name", typ: feed.TypeString},
			{name: "birth_date", typ: feed.TypeDate},
			{name: "sex", typ: feed.TypeString},
			{name: "address_line", typ: feed.TypeString},
			{name: "city", typ: feed.TypeString},
			{name: "state", typ: feed.TypeString},
			{name: "zip", typ: feed.TypeString},
			{name: "phone", typ: feed.TypeString},
			{name: "insurance", typ: feed.TypeString},
			{name: "active", typ: feed.TypeBool},
			{name: "updated_at", typ: feed.TypeTimestamp, required: true},
		},
		gen: genPatient,
	},
	{
		name: "adt_events", record: "adt_event", keys: []string{"event_id"}, partition: "event_time", weight: 15,
		cols: []column{
			{name: "event_id", typ: feed.TypeString, required: true},
			{name: "visit_id", typ: feed.TypeString, required: true},
			{name: "patient_id", typ: feed.TypeString, required: true},
			{name: "event_type", typ: feed.TypeString, required: true},
			{name: "event_time", typ: feed.TypeTimestamp, required: true},
			{name: "unit", typ: feed.TypeString},
			{name: "bed", typ: feed.TypeString},
			{name: "attending", typ: feed.TypeString},
			{name: "diagnosis_code", typ: feed.TypeString},
			{name: "diagnosis_desc", typ: feed.TypeString},
			{name: "admit_source", typ: feed.TypeString},
			{name: "disposition", typ: feed.TypeString},
		},
		gen: genEncounter,
	},
	{
		name: "bed_census", record: "bed_census", keys: []string{"census_id"}, partition: "census_date", weight: 10,
		cols: []column{
			{name: "census_id", typ: feed.TypeString, required: true},
			{name: "facility_id", typ: feed.TypeString, required: true},
			{name: "unit", typ: feed.TypeString, required: true},
			{name: "census_date", typ: feed.TypeDate, required: true},
			{name: "census_time", typ: feed.TypeTimestamp, required: true},
			{name: "beds_total", typ: feed.TypeInt, required: true},
			{name: "beds_occupied", typ: feed.TypeInt, required: true},
			{name: "beds_blocked", typ: feed.TypeInt},
			{name: "occupancy_pct", typ: feed.TypeFloat},
		},
		gen: genCensus,
	},
	{
		name: "vitals", record: "vital_signs", keys: []string{"vital_id"}, partition: "taken_at", weight: 30,
		cols: []column{
			{name: "vital_id", typ: feed.TypeString, required: true},
			{name: "patient_id", typ: feed.TypeString, required: true},
			{name: "taken_at", typ: feed.TypeTimestamp, required: true},
			{name: "heart_rate", typ: feed.TypeInt},
			{name: "systolic", typ: feed.TypeInt},
			{name: "diastolic", typ: feed.TypeInt},
			{name: "temp_c", typ: feed.TypeFloat},
			{name: "spo2", typ: feed.TypeInt},
			{name: "resp_rate", typ: feed.TypeInt},
			{name: "pain_score", typ: feed.TypeInt},
			{name: "weight_kg", typ: feed.TypeFloat},
			{name: "recorded_by", typ: feed.TypeString},
		},
		gen: genVitals,
	},
	{
		name: "lab_results", record: "lab_result", keys: []string{"lab_id"}, partition: "collected_at", weight: 35,
		cols: []column{
			{name: "lab_id", typ: feed.TypeString, required: true},
			{name: "order_id", typ: feed.TypeString, required: true},
			{name: "patient_id", typ: feed.TypeString, required: true},
			{name: "panel", typ: feed.TypeString},
			{name: "test_code", typ: feed.TypeString, required: true},
			{name: "test_name", typ: feed.TypeString},
			{name: "value", typ: feed.TypeFloat},
			{name: "value_text", typ: feed.TypeString},
			{name: "unit", typ: feed.TypeString},
			{name: "ref_low", typ: feed.TypeFloat},
			{name: "ref_high", typ: feed.TypeFloat},
			{name: "abnormal_flag", typ: feed.TypeString},
			{name: "ordered_at", typ: feed.TypeTimestamp},
			{name: "collected_at", typ: feed.TypeTimestamp, required: true},
			{name: "resulted_at", typ: feed.TypeTimestamp},
			{name: "comment", typ: feed.TypeString},
			{name: "performing_lab", typ: feed.TypeString},
		},
		gen: genLabOrder,
	},
}

func entityByName(name string) *entity {
	for _, e := range entities {
		if e.name == name {
			return e
		}
	}
	return nil
}

func (e *entity) keyIndexes() []int {
	idx := make([]int, len(e.keys))
	for i, k := range e.keys {
		for j, c := range e.cols {
			if c.name == k {
				idx[i] = j
			}
		}
	}
	return idx
}

// facilityState is what one facility's generator carries from file to file: the
// sequence counters that make every key unique across the facility's exports.
// Owned by the single goroutine generating the facility.
type facilityState struct {
	Facility
	kind      *facilityKind
	attending []string
	seq       struct{ patient, visit, event, census, vital, order, lab int64 }
}

// rowGen generates the rows of one archive entry and hands each to emit.
type rowGen struct {
	rng      *rand.Rand
	fac      *facilityState
	from, to int64 // the file's slice of the window, unix seconds
	end      int64 // end of the whole window: no event is generated after it
	vals     []value
	emit     func() // writes vals as one row
}

func (g *rowGen) id(prefix byte, n int64) string {
	b := make([]byte, 0, len(g.fac.ID)+12)
	b = append(b, g.fac.ID...)
	b = append(b, '-', prefix)
	return string(appendPadded(b, n, 9))
}

func appendPadded(b []byte, n int64, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], n, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

func (g *rowGen) pick(list []string) string { return list[g.rng.IntN(len(list))] }

// at is a time in the file's slice.
func (g *rowGen) at() int64 { return g.from + g.rng.Int64N(max(g.to-g.from, 1)) }

// atBefore is a time in the file's slice at least margin seconds before the end of the
// window, so that the later times of the group stay inside the window.
func (g *rowGen) atBefore(margin int64) int64 {
	return min(g.at(), max(g.end-margin-g.rng.Int64N(3600), g.from))
}

// patientRef is an existing patient of the facility.
func (g *rowGen) patientRef() string {
	return g.id('P', 1+g.rng.Int64N(int64(g.fac.kind.patients)))
}

// maybe returns v, or null with probability p.
func (g *rowGen) maybe(p float64, v value) value {
	if g.rng.Float64() < p {
		return null
	}
	return v
}

func (g *rowGen) normal(mean, sd float64) float64 { return mean + sd*g.rng.NormFloat64() }

func round(f float64, prec int) float64 {
	p := math.Pow10(prec)
	return math.Round(f*p) / p
}

func genPatient(g *rowGen) {
	f := g.fac
	f.seq.patient++
	n := f.seq.patient
	age := int64(g.rng.IntN(95))
	if f.kind.name == "nursing_home" {
		age = 65 + int64(g.rng.IntN(35))
	}
	born := g.from - age*365*day - g.rng.Int64N(365*day)
	last := g.pick(lastNames)
	if g.rng.IntN(40) == 0 {
		last += ", " + g.pick(suffixes)
	}
	pl := places[g.rng.IntN(len(places))]
	addr := strconv.Itoa(1+g.rng.IntN(9899)) + " " + g.pick(streets)
	if g.rng.IntN(5) == 0 {
		addr += ", Apt " + strconv.Itoa(1+g.rng.IntN(40)) + string(rune('A'+g.rng.IntN(4)))
	}
	sex := "F"
	switch r := g.rng.IntN(100); {
	case r < 48:
		sex = "M"
	case r < 50:
		sex = "U"
	}
	v := g.vals
	v[0] = str(g.id('P', n))
	v[1] = str(string(appendPadded([]byte("MRN"), 10_000_000+(n*7919)%89_999_999, 8)))
	v[2] = str(g.pick(firstNames))
	v[3] = str(last)
	v[4] = date(born)
	v[5] = str(sex)
	v[6] = g.maybe(0.03, str(addr))
	v[7] = str(pl.city)
	v[8] = str(pl.state)
	v[9] = str(string(appendPadded([]byte(pl.zip3), int64(g.rng.IntN(100)), 2)))
	v[10] = g.maybe(0.1, str("("+strconv.Itoa(200+g.rng.IntN(800))+") 555-"+string(appendPadded(nil, int64(g.rng.IntN(10000)), 4))))
	v[11] = g.maybe(0.05, str(g.pick(insurers)))
	v[12] = boolean(g.rng.IntN(50) != 0)
	v[13] = ts(g.at())
	g.emit()
}

func (g *rowGen) bed(u unitSpec) string {
	room := 1 + g.rng.IntN(max(u.beds/2, 1))
	return u.name + "-" + strconv.Itoa(room) + string(rune('A'+g.rng.IntN(2)))
}

// genEncounter emits one visit: an admission (A01), maybe transfers (A02), and a
// discharge (A03) unless the patient is still in at the end of the window.
func genEncounter(g *rowGen) {
	f := g.fac
	f.seq.visit++
	visit := g.id('V', f.seq.visit)
	patient := g.patientRef()
	dx := diagnoses[g.rng.IntN(len(diagnoses))]
	attending := g.pick(f.attending)
	unit := f.kind.units[g.rng.IntN(len(f.kind.units))]
	t := g.at()
	event := func(typ string, unit unitSpec, src, disp value) {
		f.seq.event++
		v := g.vals
		v[0] = str(g.id('E', f.seq.event))
		v[1] = str(visit)
		v[2] = str(patient)
		v[3] = str(typ)
		v[4] = ts(t)
		v[5] = str(unit.name)
		v[6] = str(g.bed(unit))
		v[7] = g.maybe(0.02, str(attending))
		v[8] = str(dx.code)
		v[9] = g.maybe(0.05, str(dx.desc))
		v[10] = src
		v[11] = disp
		g.emit()
	}
	event("A01", unit, str(g.pick(admitSources)), null)
	for range g.rng.IntN(3) {
		t += 2*3600 + g.rng.Int64N(46*3600)
		if t >= g.end {
			return
		}
		unit = f.kind.units[g.rng.IntN(len(f.kind.units))]
		event("A02", unit, null, null)
	}
	t += 6*3600 + g.rng.Int64N(7*day)
	if t >= g.end {
		return
	}
	event("A03", unit, null, str(g.pick(dispositions)))
}

// genCensus emits one hourly snapshot of every unit.
func genCensus(g *rowGen) {
	f := g.fac
	t := g.at()
	t -= t % 3600
	for _, u := range f.kind.units {
		f.seq.census++
		occ := int64(math.Round(float64(u.beds) * (0.55 + 0.4*g.rng.Float64())))
		blocked := int64(g.rng.IntN(max(u.beds/10, 1) + 1))
		if occ+blocked > int64(u.beds) {
			blocked = int64(u.beds) - occ
		}
		v := g.vals
		v[0] = str(g.id('C', f.seq.census))
		v[1] = str(f.ID)
		v[2] = str(u.name)
		v[3] = date(t)
		v[4] = ts(t)
		v[5] = num(int64(u.beds))
		v[6] = num(occ)
		v[7] = num(blocked)
		v[8] = flt(round(100*float64(occ)/float64(u.beds), 1))
		g.emit()
	}
}

// genVitals emits a short series of readings for one patient.
func genVitals(g *rowGen) {
	f := g.fac
	patient := g.patientRef()
	t := g.at()
	hr, sys, dia := g.normal(80, 12), g.normal(125, 15), g.normal(78, 9)
	temp, spo2, rr := g.normal(36.9, 0.5), g.normal(96.5, 2), g.normal(16, 3)
	weight := g.normal(78, 18)
	by := g.pick(vitalRecorders)
	for i := range 1 + g.rng.IntN(6) {
		if i > 0 {
			t += 900 + g.rng.Int64N(4*3600)
			if t >= g.end {
				return
			}
		}
		f.seq.vital++
		v := g.vals
		v[0] = str(g.id('W', f.seq.vital))
		v[1] = str(patient)
		v[2] = ts(t)
		v[3] = g.maybe(0.02, num(int64(math.Round(hr+g.normal(0, 6)))))
		bp := g.rng.Float64() < 0.05
		if bp {
			v[4], v[5] = null, null
		} else {
			v[4] = num(int64(math.Round(sys + g.normal(0, 8))))
			v[5] = num(int64(math.Round(dia + g.normal(0, 5))))
		}
		v[6] = g.maybe(0.1, flt(round(temp+g.normal(0, 0.2), 1)))
		v[7] = g.maybe(0.03, num(min(100, int64(math.Round(spo2+g.normal(0, 1))))))
		v[8] = g.maybe(0.05, num(max(6, int64(math.Round(rr+g.normal(0, 2))))))
		v[9] = g.maybe(0.6, num(int64(g.rng.IntN(11))))
		v[10] = g.maybe(0.8, flt(round(max(weight, 2.5), 1)))
		v[11] = str(by)
		g.emit()
	}
}

// genLabOrder emits the results of one order: a panel of LOINC-coded tests.
func genLabOrder(g *rowGen) {
	f := g.fac
	f.seq.order++
	order := g.id('O', f.seq.order)
	patient := g.patientRef()
	panel := labPanels[g.rng.IntN(len(labPanels))]
	ordered := g.atBefore(10 * 3600)
	collected := ordered + 300 + g.rng.Int64N(2*3600)
	lab := g.pick(performingLabs)
	for _, code := range panel.tests {
		t := labTests[code]
		f.seq.lab++
		resulted := collected + 1200 + g.rng.Int64N(6*3600) // within 8h of ordered
		v := g.vals
		v[0] = str(g.id('L', f.seq.lab))
		v[1] = str(order)
		v[2] = str(patient)
		v[3] = str(panel.name)
		v[4] = str(t.code)
		v[5] = str(t.name)
		flag := ""
		if t.answers != nil {
			ans := t.answers[g.rng.IntN(len(t.answers))]
			v[6], v[7] = null, str(ans)
			v[8], v[9], v[10] = null, null, null
			if ans == "Detected" || ans == "Positive" {
				flag = "A"
			}
		} else {
			x := round(max(g.normal(t.mean, t.sd), 0), t.prec)
			v[6], v[7] = flt(x), null
			v[8], v[9], v[10] = str(t.unit), flt(t.low), flt(t.high)
			switch {
			case x > t.high+2*(t.high-t.low):
				flag = "HH"
			case x > t.high:
				flag = "H"
			case x < t.low-(t.high-t.low)/2:
				flag = "LL"
			case x < t.low:
				flag = "L"
			}
		}
		if flag == "" {
			v[11] = null
		} else {
			v[11] = str(flag)
		}
		v[12] = ts(ordered)
		v[13] = ts(collected)
		v[14] = g.maybe(0.01, ts(resulted))
		if g.rng.IntN(25) == 0 {
			v[15] = str(g.pick(labComments))
		} else {
			v[15] = null
		}
		v[16] = str(lab)
		g.emit()
	}
}
