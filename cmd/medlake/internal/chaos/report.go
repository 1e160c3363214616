package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Commit is one batch the lake committed, as the catalog's ledger records it.
type Commit struct {
	At    time.Time // the ledger's committed_at
	Agent string    // the agent that sent the batch
	Rows  int64
	// Source is the SHA-256 of the batch's source file ("" for a reconciled entry).
	Source string
}

// FaultResult is one injected fault and what the run saw around it.
type FaultResult struct {
	Fault
	Injected time.Time // the fault happened (kill, stop, SIGSTOP)
	Restored time.Time // the component was back (restarted and ready, SIGCONT)
	// Recovery is the time from Restored to the first commit after it: of the faulted
	// agent's batches for an agent fault, of any batch otherwise. Recovered is false
	// when no such commit came before the run ended.
	Recovery  time.Duration
	Recovered bool
	// Gap is the longest time without any commit between Injected and the recovery.
	Gap time.Duration
	// Next is when the next fault was injected (zero for the last fault). A recovery
	// that runs past it includes that fault's effect too; AloneGap is Gap counted only
	// up to Next, the part this fault alone answers for.
	Next     time.Time
	AloneGap time.Duration
	// Queries and QueryFailures count the queries run against the query node while a
	// MinIO node was down.
	Queries, QueryFailures int
	QueryErr               string // the first query failure
	Err                    string // the injection or restore failed
}

// agentOf is the agent whose commits show a fault's recovery, or "" for any commit.
func (f Fault) agentOf(agentIDs map[string]string) string {
	if strings.HasPrefix(f.Target, "agent-") {
		return agentIDs[f.Target]
	}
	return ""
}

// Settle fills Recovery, Recovered and Gap from the run's commits, sorted by At.
// agentIDs maps a target name (agent-N) to the agent id the ledger records.
func (r *FaultResult) Settle(commits []Commit, agentIDs map[string]string) {
	agent := r.agentOf(agentIDs)
	end := time.Time{}
	r.Recovered = false
	for _, c := range commits {
		if c.At.Before(r.Restored) || (agent != "" && c.Agent != agent) {
			continue
		}
		r.Recovery, r.Recovered, end = c.At.Sub(r.Restored), true, c.At
		break
	}
	if !r.Recovered && len(commits) > 0 {
		end = commits[len(commits)-1].At
	}
	r.Gap = LongestGap(commits, r.Injected, end)
	r.AloneGap = r.Gap
	if !r.Next.IsZero() && r.Next.Before(end) {
		r.AloneGap = LongestGap(commits, r.Injected, r.Next)
	}
}

// LongestGap is the longest time between consecutive commits (sorted by At) in
// [from, to], counting from from to the first commit and from the last one to to.
func LongestGap(commits []Commit, from, to time.Time) time.Duration {
	if !to.After(from) {
		return 0
	}
	i := sort.Search(len(commits), func(i int) bool { return !commits[i].At.Before(from) })
	prev, gap := from, time.Duration(0)
	for ; i < len(commits) && !commits[i].At.After(to); i++ {
		gap = max(gap, commits[i].At.Sub(prev))
		prev = commits[i].At
	}
	return max(gap, to.Sub(prev))
}

// TableResult is what the lake holds in one table against the manifest.
type TableResult struct {
	Table            string
	Expected         int64 // rows the manifest says
	Rows             int64 // rows in the lake
	Distinct         int64 // distinct keys in the lake
	KeyChecksumOK    bool
	RowChecksumOK    bool
	KeySum, WantKey  string
	RowSum, WantRow  string
	ReadErr          string
	Lost, Duplicated int64
}

// Settle computes Lost and Duplicated: a key seen twice is a duplicate, a manifest row
// whose key is missing is lost. Rows not in the manifest show as a checksum mismatch.
func (t *TableResult) Settle() {
	t.Duplicated = t.Rows - t.Distinct
	t.Lost = max(t.Expected-t.Distinct, 0)
}

// KindSummary is the worst case of one fault kind.
type KindSummary struct {
	Kind        Kind
	Injected    int
	Failed      int           // injections or restores that failed
	Unrecovered int           // faults after which no commit came
	MaxRecovery time.Duration // longest restore → commit
	MaxGap      time.Duration // longest time without commits from injection to recovery
	MaxAlone    time.Duration // the same, counted only until the next fault
	Queries     int
	QueryFails  int
}

// Report is a run's outcome.
type Report struct {
	Seed          int64
	Started       time.Time
	Elapsed       time.Duration
	Facilities    int
	Agents, Hubs  int
	Files         int
	RecordsIn     int64 // rows of the files dropped into watched folders
	RecordsOut    int64 // rows the lake holds in the generated tables
	Lost          int64
	Duplicated    int64
	Tables        []TableResult
	Faults        []FaultResult
	SpoolsDrained bool
	SpoolLeft     map[string]int // agent → frames left in spool and dead letter
	Quarantined   int            // files agents quarantined
	DrainTime     time.Duration  // last fault restored → every record committed
	Freshness     *Freshness     // drop → committed and queryable
	Problems      []string       // anything that makes the run fail, besides lost/dup
}

// Summaries groups the faults by kind, in Kinds order.
func (r *Report) Summaries() []KindSummary {
	by := map[Kind]*KindSummary{}
	for _, k := range Kinds() {
		by[k] = &KindSummary{Kind: k}
	}
	for _, f := range r.Faults {
		s := by[f.Kind]
		if s == nil {
			continue
		}
		s.Injected++
		if f.Err != "" {
			s.Failed++
		}
		if !f.Recovered {
			s.Unrecovered++
		}
		s.MaxRecovery = max(s.MaxRecovery, f.Recovery)
		s.MaxGap = max(s.MaxGap, f.Gap)
		s.MaxAlone = max(s.MaxAlone, f.AloneGap)
		s.Queries += f.Queries
		s.QueryFails += f.QueryFailures
	}
	out := make([]KindSummary, 0, len(by))
	for _, k := range Kinds() {
		out = append(out, *by[k])
	}
	return out
}

// HubDownGap is the longest time without commits while a hub was killed: the
// "one of two hubs down" figure.
func (r *Report) HubDownGap() time.Duration {
	var g time.Duration
	for _, f := range r.Faults {
		if f.Kind == KindHubKill {
			g = max(g, f.AloneGap)
		}
	}
	return g
}

// OK says whether the run passed: nothing lost or duplicated, every checksum equal,
// spools drained, every fault injected and recovered from, no other problem.
func (r *Report) OK() bool {
	if r.Lost != 0 || r.Duplicated != 0 || !r.SpoolsDrained || len(r.Problems) > 0 || r.RecordsOut != r.RecordsIn {
		return false
	}
	for _, t := range r.Tables {
		if !t.KeyChecksumOK || !t.RowChecksumOK || t.ReadErr != "" {
			return false
		}
	}
	for _, s := range r.Summaries() {
		if s.Failed > 0 || s.Unrecovered > 0 {
			return false
		}
	}
	return true
}

// Write prints the report for people.
func (r *Report) Write(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("chaos run, seed %d: %d facilities, %d agents, %d hubs, %d files, %s",
		r.Seed, r.Facilities, r.Agents, r.Hubs, r.Files, r.Elapsed.Round(time.Second))
	p("  records in:   %d", r.RecordsIn)
	p("  records out:  %d", r.RecordsOut)
	p("  lost:         %d", r.Lost)
	p("  duplicated:   %d", r.Duplicated)
	for _, t := range r.Tables {
		status := "ok"
		switch {
		case t.ReadErr != "":
			status = "read error: " + t.ReadErr
		case !t.KeyChecksumOK || !t.RowChecksumOK:
			status = fmt.Sprintf("MISMATCH key %s (want %s) row %s (want %s)", t.KeySum, t.WantKey, t.RowSum, t.WantRow)
		}
		p("    %-12s %8d rows (want %d), %d distinct keys, key and row checksums: %s", t.Table, t.Rows, t.Expected, t.Distinct, status)
	}
	if r.SpoolsDrained {
		p("  spools:       drained")
	} else {
		left := make([]string, 0, len(r.SpoolLeft))
		for _, a := range slices.Sorted(maps.Keys(r.SpoolLeft)) {
			left = append(left, fmt.Sprintf("%s=%d", a, r.SpoolLeft[a]))
		}
		p("  spools:       NOT drained: %s", strings.Join(left, " "))
	}
	p("  quarantined:  %d files", r.Quarantined)
	if f := r.Freshness; f != nil {
		p("  freshness:    %d files dropped at %.2f/s; file mtime (drop) →", f.Files, f.Rate)
		p("    committed, per file (ledger, exact):           %s", f.Committed)
		p("    committed, per batch (hubs' histograms):       %s", f.HubCommitted)
		p("    queryable, per snapshot (query's histogram):   %s", f.Queryable)
	}
	if len(r.Faults) == 0 {
		p("  faults:       none (steady run)")
	} else {
		r.writeFaults(p)
	}
	for _, pr := range r.Problems {
		p("  problem: %s", pr)
	}
	if r.OK() {
		p("  result: PASS")
	} else {
		p("  result: FAIL")
	}
}

func (r *Report) writeFaults(p func(string, ...any)) {
	p("  drain:        %s from the last fault's restore to the last record committed", r.DrainTime.Round(time.Millisecond))
	p("  faults (recovery = component back → first commit after it; gap = longest time without commits from fault to recovery;")
	p("          alone = the same gap counted only until the next fault is injected):")
	p("    %-17s %8s %6s %11s %13s %9s %9s", "kind", "injected", "failed", "unrecovered", "max recovery", "max gap", "alone")
	for _, s := range r.Summaries() {
		p("    %-17s %8d %6d %11d %13s %9s %9s", s.Kind, s.Injected, s.Failed, s.Unrecovered,
			s.MaxRecovery.Round(time.Millisecond), s.MaxGap.Round(time.Millisecond), s.MaxAlone.Round(time.Millisecond))
	}
	p("  worst fault of each kind (at = from the start of the fault phase; down = fault to restore):")
	for _, k := range Kinds() {
		var worst *FaultResult
		for i := range r.Faults {
			f := &r.Faults[i]
			if f.Kind == k && (worst == nil || max(f.Recovery, f.Gap) > max(worst.Recovery, worst.Gap)) {
				worst = f
			}
		}
		if worst != nil {
			line := fmt.Sprintf("    %-40s at %7s down %7s recovery %7s gap %7s", worst.Fault.String(), worst.Injected.Sub(r.Started).Round(time.Second),
				worst.Restored.Sub(worst.Injected).Round(time.Millisecond), worst.Recovery.Round(time.Millisecond), worst.Gap.Round(time.Millisecond))
			if worst.AloneGap != worst.Gap {
				var during []string
				for _, o := range r.Faults {
					if o.Injected.After(worst.Injected) && o.Injected.Before(worst.Injected.Add(worst.Gap+worst.Recovery)) {
						during = append(during, o.Fault.String())
					}
				}
				line += fmt.Sprintf(" (alone %s; then %s)", worst.AloneGap.Round(time.Millisecond), strings.Join(during, ", "))
			}
			p("%s", line)
		}
	}
	p("  longest ingestion gap with one hub down: %s", r.HubDownGap().Round(time.Millisecond))
	var q, qf int
	for _, s := range r.Summaries() {
		q, qf = q+s.Queries, qf+s.QueryFails
	}
	p("  queries with one MinIO node down: %d run, %d failed", q, qf)
	for _, f := range r.Faults {
		if f.QueryErr != "" {
			p("    %s: %d of %d queries failed, first %s", f.Fault, f.QueryFailures, f.Queries, f.QueryErr)
		}
	}
	for _, f := range r.Faults {
		if f.Err != "" {
			p("  fault %s failed: %s", f.Fault, f.Err)
		}
	}
}
