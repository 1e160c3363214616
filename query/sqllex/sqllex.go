// Package sqllex splits PostgreSQL and DuckDB SQL text into tokens whose texts
// concatenate back to the input, for the few rewrites done on text, not parse trees.
package sqllex

import "strings"

// Kind is a token's lexical class.
type Kind int

const (
	Space  Kind = iota // whitespace and comments
	Ident              // unquoted identifier or keyword
	QIdent             // "quoted identifier"
	String             // '...', E'...', $tag$...$tag$
	Number
	Param // $n
	Op    // operator characters: + - * / < > = ~ ! @ # % ^ & | ` ? and ::
	Punct // ( ) [ ] , ; . and anything else
)

// Token is one lexical token and its exact text.
type Token struct {
	Kind Kind
	Text string
}

const opChars = "+-*/<>=~!@#%^&|`?"

// Lex splits sql into tokens whose texts concatenate to sql exactly. It knows
// PostgreSQL's quoting: '...' (a doubled quote escapes), E'...' (backslash
// escapes), "..." identifiers, $tag$...$tag$ dollar quoting, -- and nested
// /* */ comments. An unterminated quote or comment runs to the end of the
// input, where the SQL engine reports the syntax error.
func Lex(sql string) []Token {
	var toks []Token
	i, n := 0, len(sql)
	for i < n {
		c := sql[i]
		start := i
		kind := Punct
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			for i < n && strings.IndexByte(" \t\n\r\f\v", sql[i]) >= 0 {
				i++
			}
			kind = Space
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
			kind = Space
		case c == '/' && i+1 < n && sql[i+1] == '*':
			i = skipComment(sql, i)
			kind = Space
		case (c == 'e' || c == 'E') && i+1 < n && sql[i+1] == '\'':
			i = skipQuoted(sql, i+1, '\'', true)
			kind = String
		case c == '\'':
			i = skipQuoted(sql, i, '\'', false)
			kind = String
		case c == '"':
			i = skipQuoted(sql, i, '"', false)
			kind = QIdent
		case c == '$':
			i, kind = dollar(sql, i)
		case c == ':' && i+1 < n && sql[i+1] == ':':
			i += 2
			kind = Op
		case strings.IndexByte(opChars, c) >= 0:
			for i < n && strings.IndexByte(opChars, sql[i]) >= 0 {
				i++
			}
			kind = Op
		case c >= '0' && c <= '9':
			for i < n && (sql[i] >= '0' && sql[i] <= '9' || sql[i] == '.' || sql[i] == 'e' || sql[i] == 'E') {
				i++
			}
			kind = Number
		case isIdentStart(c):
			// An identifier may hold $ (PostgreSQL allows it), so a$1 is one name, not a parameter.
			for i < n && (isIdentStart(sql[i]) || sql[i] >= '0' && sql[i] <= '9' || sql[i] == '$') {
				i++
			}
			kind = Ident
		default:
			i++
		}
		toks = append(toks, Token{kind, sql[start:i]})
	}
	return toks
}

// dollar lexes what starts with the $ at sql[i]: a parameter $n, a dollar-quoted
// string $tag$...$tag$, or a lone $.
func dollar(sql string, i int) (int, Kind) {
	n := len(sql)
	j := i + 1
	for j < n && sql[j] >= '0' && sql[j] <= '9' {
		j++
	}
	if j > i+1 {
		return j, Param
	}
	j = i + 1
	for j < n && (isIdentStart(sql[j]) || j > i+1 && sql[j] >= '0' && sql[j] <= '9') {
		j++
	}
	if j < n && sql[j] == '$' {
		tag := sql[i : j+1]
		if end := strings.Index(sql[j+1:], tag); end >= 0 {
			return j + 1 + end + len(tag), String
		}
		return n, String
	}
	return i + 1, Punct
}

// skipComment returns the index after the /* */ comment starting at sql[i];
// comments nest.
func skipComment(sql string, i int) int {
	depth := 0
	for i < len(sql) {
		switch {
		case sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// skipQuoted returns the index after the closing quote that matches sql[i]
// (a doubled quote stays inside; with backslash, \ escapes the next byte).
func skipQuoted(sql string, i int, q byte, backslash bool) int {
	i++
	for i < len(sql) {
		switch {
		case backslash && sql[i] == '\\':
			i += 2
		case sql[i] == q && i+1 < len(sql) && sql[i+1] == q:
			i += 2
		case sql[i] == q:
			return i + 1
		default:
			i++
		}
	}
	return len(sql)
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// Name is the name an identifier token stands for: lower-cased when unquoted,
// as PostgreSQL folds it; "" for other tokens.
func (t Token) Name() string {
	switch t.Kind {
	case Ident:
		return strings.ToLower(t.Text)
	case QIdent:
		if len(t.Text) >= 2 && t.Text[len(t.Text)-1] == '"' {
			return strings.ReplaceAll(t.Text[1:len(t.Text)-1], `""`, `"`)
		}
	}
	return ""
}

// StringValue is the value of a plain '...' literal.
func (t Token) StringValue() (string, bool) {
	if t.Kind != String || len(t.Text) < 2 || t.Text[0] != '\'' || t.Text[len(t.Text)-1] != '\'' {
		return "", false
	}
	return strings.ReplaceAll(t.Text[1:len(t.Text)-1], "''", "'"), true
}
