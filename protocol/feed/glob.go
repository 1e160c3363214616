package feed

import (
	"path"
	"strings"
)

// matchGlob reports what path.Match(pattern, name) reports for a valid pattern. Feed
// globs are literals and '*' ("*_lab_results_*.xml*"), and an archive's hundreds of
// entries are each matched against every feed, so that case is matched here in one
// pass without path.Match's general machinery; a pattern with '?', a class or an
// escape, or a name holding '/', goes to path.Match.
func matchGlob(pattern, name string) bool {
	if strings.ContainsAny(pattern, `?[\`) || strings.IndexByte(name, '/') >= 0 {
		ok, _ := path.Match(pattern, name)
		return ok
	}
	first := strings.IndexByte(pattern, '*')
	if first < 0 {
		return pattern == name
	}
	if !strings.HasPrefix(name, pattern[:first]) {
		return false
	}
	name = name[first:]
	last := strings.LastIndexByte(pattern, '*')
	suffix := pattern[last+1:]
	if !strings.HasSuffix(name, suffix) {
		return false
	}
	name = name[:len(name)-len(suffix)]
	// Between the first and last '*', each literal chunk is taken at its leftmost
	// place: with '*' alone on both sides of it, the leftmost is never worse.
	mid := ""
	if last > first {
		mid = pattern[first+1 : last]
	}
	for mid != "" {
		chunk := mid
		if i := strings.IndexByte(mid, '*'); i >= 0 {
			chunk, mid = mid[:i], mid[i+1:]
		} else {
			mid = ""
		}
		if chunk == "" {
			continue
		}
		j := strings.Index(name, chunk)
		if j < 0 {
			return false
		}
		name = name[j+len(chunk):]
	}
	return true
}
