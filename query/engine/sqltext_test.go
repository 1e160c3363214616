package engine

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"  -- only a comment\n", []string{""}},
		{";;", []string{""}},
		{"SELECT 1", []string{"SELECT 1"}},
		{"SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"SELECT ';'; SELECT 2", []string{"SELECT ';'", "SELECT 2"}},
		{`SELECT "a;b" FROM t`, []string{`SELECT "a;b" FROM t`}},
		{"SELECT 'it''s;'", []string{"SELECT 'it''s;'"}},
		{`SELECT E'a\';b'; SELECT 3`, []string{`SELECT E'a\';b'`, "SELECT 3"}},
		{"SELECT $$;$$; SELECT $x$ ; $x$", []string{"SELECT $$;$$", "SELECT $x$ ; $x$"}},
		{"SELECT 1 /* ; /* nested ; */ ; */; SELECT 2", []string{"SELECT 1 /* ; /* nested ; */ ; */", "SELECT 2"}},
		{"SELECT 1 -- ; comment\n; SELECT 2", []string{"SELECT 1 -- ; comment", "SELECT 2"}},
		{"SELECT 'unterminated;", []string{"SELECT 'unterminated;"}},
	}
	for _, tt := range tests {
		if got := SplitStatements(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("SplitStatements(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCastParams(t *testing.T) {
	tests := []struct {
		in   string
		cast map[int]bool
		want string
	}{
		{"SELECT $1", map[int]bool{1: true}, "SELECT CAST($1 AS VARCHAR)"},
		{"SELECT $1, $2, '$1', $10", map[int]bool{1: true, 10: true}, "SELECT CAST($1 AS VARCHAR), $2, '$1', CAST($10 AS VARCHAR)"},
		{"SELECT $$ $1 $$, a$1", map[int]bool{1: true}, "SELECT $$ $1 $$, a$1"},
	}
	for _, tt := range tests {
		if got := castParams(tt.in, tt.cast); got != tt.want {
			t.Errorf("castParams(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFirstKeyword(t *testing.T) {
	for in, want := range map[string]string{
		"set x = 1": "SET", " /* c */ show all": "SHOW", "-- c\nSELECT 1": "SELECT", "": "", "'x'": "",
	} {
		if got := FirstKeyword(in); got != want {
			t.Errorf("FirstKeyword(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzSplitStatements(f *testing.F) {
	for _, s := range []string{"SELECT 1; SELECT 2", "SELECT $1, '$2'", "$a$;$a$", "/* /* */", "E'\\'", `"";''`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		parts := SplitStatements(s)
		if len(parts) == 0 {
			t.Fatal("no statements")
		}
		// Nothing is invented: every piece is a substring of the input.
		for _, p := range parts {
			if !strings.Contains(s, p) {
				t.Fatalf("piece %q not in input %q", p, s)
			}
		}
		out := castParams(s, map[int]bool{1: true, 2: true})
		if strings.Count(out, "CAST(") < strings.Count(s, "CAST(") {
			t.Fatalf("castParams lost text: %q -> %q", s, out)
		}
		_ = FirstKeyword(s)
	})
}
