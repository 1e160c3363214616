package hub

import (
	"slices"
	"testing"
)

func TestSummaryBatches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		props map[string]string
		want  []SummaryBatch
	}{
		{"none", map[string]string{}, nil},
		{"ids and rows", map[string]string{PropBatchIDs: "a,b", PropBatchRows: "3,0"}, []SummaryBatch{{"a", 3}, {"b", 0}}},
		{"an older hub's, without rows", map[string]string{PropBatchIDs: "a,b"}, []SummaryBatch{{"a", -1}, {"b", -1}}},
		{"rows not aligned with ids", map[string]string{PropBatchIDs: "a,b", PropBatchRows: "3"}, []SummaryBatch{{"a", -1}, {"b", -1}}},
		{"a count that is not one", map[string]string{PropBatchIDs: "a,b", PropBatchRows: "x,-4"}, []SummaryBatch{{"a", -1}, {"b", -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SummaryBatches(tc.props); !slices.Equal(got, tc.want) {
				t.Errorf("SummaryBatches(%v) = %v, want %v", tc.props, got, tc.want)
			}
		})
	}
}
