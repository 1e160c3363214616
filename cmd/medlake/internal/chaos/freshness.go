package chaos

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Freshness is how soon dropped files were committed and queryable.
type Freshness struct {
	Files int     // files whose every batch the ledger shows committed
	Rate  float64 // files dropped per second over the drop phase
	// Committed is per file, exact: the file's mtime (its drop) → the commit of its
	// last batch, from the catalog's ledger.
	Committed Spread
	// HubCommitted and Queryable are the nodes' own histograms, estimated within their
	// buckets: per batch, medlake_hub_freshness_committed_seconds summed over the hubs
	// (a restarted hub's count starts again), and per snapshot made visible,
	// medlake_query_freshness_queryable_seconds (its oldest file's mtime → the query
	// node's view showing it).
	HubCommitted, Queryable Spread
}

// Spread is a distribution's p50, p99 and max (max only when exact) over Count samples.
type Spread struct {
	Count         int
	P50, P99, Max time.Duration
}

func (s Spread) String() string {
	if s.Count == 0 {
		return "no samples"
	}
	out := fmt.Sprintf("p50 %s, p99 %s", s.P50.Round(10*time.Millisecond), s.P99.Round(10*time.Millisecond))
	if s.Max > 0 {
		out += fmt.Sprintf(", max %s", s.Max.Round(10*time.Millisecond))
	}
	return out + fmt.Sprintf(" (%d)", s.Count)
}

// exactSpread is the spread of samples (sorted in place).
func exactSpread(d []time.Duration) Spread {
	if len(d) == 0 {
		return Spread{}
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(math.Ceil(p*float64(len(d))))-1)] }
	return Spread{Count: len(d), P50: q(0.5), P99: q(0.99), Max: d[len(d)-1]}
}

// freshness measures the run's freshness from the ledger's commits and the nodes'
// metrics. phaseStart is when the drops began.
func (r *run) freshness(ctx context.Context, commits []Commit, phaseStart time.Time) *Freshness {
	dropped := r.dropper.droppedAt()
	last := map[string]time.Time{}
	for _, c := range commits {
		if c.Source != "" && c.At.After(last[c.Source]) {
			last[c.Source] = c.At
		}
	}
	f := &Freshness{}
	var per []time.Duration
	var lastDrop time.Time
	for sha, at := range dropped {
		if at.After(lastDrop) {
			lastDrop = at
		}
		if c, ok := last[sha]; ok {
			per = append(per, max(c.Sub(at), 0))
		}
	}
	f.Files = len(per)
	if span := lastDrop.Sub(phaseStart).Seconds(); span > 0 {
		f.Rate = float64(len(dropped)) / span
	}
	f.Committed = exactSpread(per)
	var hubURLs []string
	for _, h := range r.hubs {
		hubURLs = append(hubURLs, "http://"+h.http+"/metrics")
	}
	f.HubCommitted = scrapeSpread(ctx, hubURLs, "medlake_hub_freshness_committed_seconds")
	if r.query != nil {
		f.Queryable = scrapeSpread(ctx, []string{"http://" + r.query.http + "/metrics"}, "medlake_query_freshness_queryable_seconds")
	}
	return f
}

// scrapeSpread sums the histogram name over every label set at every url and estimates
// p50 and p99 within its buckets. Unreachable nodes are left out.
func scrapeSpread(ctx context.Context, urls []string, name string) Spread {
	cum := map[float64]uint64{}
	var count uint64
	for _, u := range urls {
		h := scrapeHistograms(ctx, u, name)
		for _, m := range h {
			count += m.GetHistogram().GetSampleCount()
			for _, b := range m.GetHistogram().GetBucket() {
				cum[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
	}
	if count == 0 {
		return Spread{}
	}
	bounds := slices.Sorted(func(yield func(float64) bool) {
		for b := range cum {
			if !yield(b) {
				return
			}
		}
	})
	q := func(p float64) time.Duration {
		rank := p * float64(count)
		lower, below := 0.0, uint64(0)
		for _, ub := range bounds {
			if float64(cum[ub]) >= rank {
				in := cum[ub] - below
				if in == 0 {
					return time.Duration(ub * float64(time.Second))
				}
				return time.Duration((lower + (ub-lower)*(rank-float64(below))/float64(in)) * float64(time.Second))
			}
			lower, below = ub, cum[ub]
		}
		return time.Duration(lower * float64(time.Second)) // beyond the last bucket
	}
	return Spread{Count: int(count), P50: q(0.5), P99: q(0.99)}
}

func scrapeHistograms(ctx context.Context, url, name string) []*dto.Metric {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	if mf, ok := families[name]; ok {
		return mf.GetMetric()
	}
	return nil
}
