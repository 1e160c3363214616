package results

import "testing"

func TestNegotiate(t *testing.T) {
	tests := []struct{ format, accept, want string }{
		{"", "", "json"},
		{"CSV", "application/json", "csv"},
		{"", "text/html, text/csv;q=0.9", "csv"},
		{"", "application/vnd.apache.parquet", "parquet"},
		{"", "*/*", "json"},
		{"", "text/html", ""},
		{"xml", "", ""},
	}
	for _, tt := range tests {
		e, err := Negotiate(tt.format, tt.accept)
		if got := e.Name; got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("Negotiate(%q, %q) = %q, %v; want %q", tt.format, tt.accept, got, err, tt.want)
		}
	}
}
