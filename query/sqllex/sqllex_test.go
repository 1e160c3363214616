package sqllex

import (
	"strings"
	"testing"
)

func TestLex(t *testing.T) {
	tests := []struct {
		in   string
		want []Token
	}{
		{"SELECT a$1, $2", []Token{{Ident, "SELECT"}, {Space, " "}, {Ident, "a$1"}, {Punct, ","}, {Space, " "}, {Param, "$2"}}},
		{"x::int", []Token{{Ident, "x"}, {Op, "::"}, {Ident, "int"}}},
		{"'it''s' E'a\\'b'", []Token{{String, "'it''s'"}, {Space, " "}, {String, "E'a\\'b'"}}},
		{`"a""b".c`, []Token{{QIdent, `"a""b"`}, {Punct, "."}, {Ident, "c"}}},
		{"$$;$$ $x$ ; $x$", []Token{{String, "$$;$$"}, {Space, " "}, {String, "$x$ ; $x$"}}},
		{"1 /* a /* b */ c */ 2.5e3", []Token{{Number, "1"}, {Space, " "}, {Space, "/* a /* b */ c */"}, {Space, " "}, {Number, "2.5e3"}}},
		{"a -- c;\n;", []Token{{Ident, "a"}, {Space, " "}, {Space, "-- c;"}, {Space, "\n"}, {Punct, ";"}}},
		{"a <>= b", []Token{{Ident, "a"}, {Space, " "}, {Op, "<>="}, {Space, " "}, {Ident, "b"}}},
		{"'open", []Token{{String, "'open"}}},
		{"$", []Token{{Punct, "$"}}},
	}
	for _, tt := range tests {
		got := Lex(tt.in)
		if len(got) != len(tt.want) {
			t.Errorf("Lex(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("Lex(%q)[%d] = %v, want %v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func TestNameAndStringValue(t *testing.T) {
	toks := Lex(`Foo "Bar""x" 'a''b' E'c' 1`)
	var names []string
	for _, tok := range toks {
		if n := tok.Name(); n != "" {
			names = append(names, n)
		}
	}
	if got := strings.Join(names, ","); got != `foo,Bar"x` {
		t.Errorf("names = %q", got)
	}
	if v, ok := toks[4].StringValue(); !ok || v != "a'b" {
		t.Errorf("StringValue(%q) = %q, %v", toks[4].Text, v, ok)
	}
	if _, ok := toks[6].StringValue(); ok {
		t.Errorf("StringValue(%q) took an escape string as plain", toks[6].Text)
	}
}

func FuzzLex(f *testing.F) {
	for _, s := range []string{"SELECT 1; SELECT 2", "SELECT $1, '$2'", "$a$;$a$", "/* /* */", "E'\\'", `"";''`, "x::regclass ~* 'a'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b strings.Builder
		for _, tok := range Lex(s) {
			if tok.Text == "" {
				t.Fatalf("empty token in %q", s)
			}
			b.WriteString(tok.Text)
		}
		if b.String() != s {
			t.Fatalf("tokens of %q concatenate to %q", s, b.String())
		}
	})
}
