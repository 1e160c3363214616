package reports

import (
	"strings"
	"testing"
)

func TestExamplesParse(t *testing.T) {
	ex, err := Examples()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ex {
		names = append(names, d.Name)
	}
	if got := strings.Join(names, ","); got != "daily_census,lab_turnaround,weekly_admissions" {
		t.Errorf("examples %s", got)
	}
}

func TestParseDefinitionErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"name: Bad Name\ncron: '@daily'\nformat: csv\nsql: SELECT 1\n", "report name"},
		{"name: r\ncron: '@daily'\nformat: csv\nsql: ' '\n", "sql is empty"},
		{"name: r\ncron: '99 * * * *'\nformat: csv\nsql: SELECT 1\n", "schedule"},
		{"name: r\ncron: '@daily'\nformat: xls\nsql: SELECT 1\n", "unknown format"},
		{"name: r\ncron: '@daily'\nformat: csv\nsql: SELECT 1\nowner: x\n", "field owner not found"},
	}
	for _, tt := range tests {
		if _, err := ParseDefinition([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseDefinition(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
}
