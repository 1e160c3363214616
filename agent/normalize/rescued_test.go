package normalize

import (
	"bytes"
	"encoding/json"
	"testing"
)

// jsonString is s as encoding/json writes it with HTML escaping off: the oracle for
// appendJSONString.
func jsonString(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

var jsonStrings = []string{
	"", "plain", `q"uote`, `back\slash`, "<5 mg & >2", "tab\tnl\ncr\rbs\bff\f",
	"\x00\x01\x1f\x7f", "Zoë 東京 𝄞", "bad \xff utf-8 \xc3", "sep \u2028 \u2029",
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range jsonStrings {
		if got, want := string(appendJSONString(nil, s)), jsonString(t, s); got != want {
			t.Errorf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	}
	if got := rescued([]string{"@facility", "F001", "Note/b", `x"y`}); got.s != `{"@facility":"F001","Note/b":"x\"y"}` {
		t.Errorf("rescued = %s", got.s)
	}
}

// FuzzAppendJSONString: appendJSONString writes what encoding/json writes.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(appendJSONString(nil, s)), jsonString(t, s); got != want {
			t.Fatalf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	})
}
