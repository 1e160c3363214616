package feed_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/invopop/jsonschema"
	jsonschemav6 "github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/medlake/medlake/protocol/feed"
)

var update = flag.Bool("update", false, "rewrite feed.schema.json from the Go types")

// TestJSONSchema keeps feed.schema.json, the published schema editors and CI linters use
// for feed definitions, in step with the Go types: it fails when they drift.
func TestJSONSchema(t *testing.T) {
	r := &jsonschema.Reflector{RequiredFromJSONSchemaTags: true, DoNotReference: true}
	if err := r.AddGoComments("github.com/medlake/medlake/protocol/feed", "./"); err != nil {
		t.Fatal(err)
	}
	s := r.Reflect(&feed.Definition{})
	s.ID = ""
	s.Title = "medlake feed definition"
	s.Description = "How a facility's files are recognized and mapped to a lake table. See protocol/feed."
	got, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile("feed.schema.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("feed.schema.json")
	if err != nil {
		t.Fatalf("%v (run go test ./protocol/feed -run TestJSONSchema -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Error("feed.schema.json is stale: run go test ./protocol/feed -run TestJSONSchema -update")
	}
}

// TestExamplesMatchSchema checks the shipped example definitions against the published
// schema, and that the schema refuses what Parse refuses for the same reason.
func TestExamplesMatchSchema(t *testing.T) {
	sch := compiledSchema(t)
	examples, _ := filepath.Glob("../testdata/*.yaml")
	more, _ := filepath.Glob("testdata/examples/*.yaml")
	examples = append(examples, more...)
	for _, path := range examples {
		var v any
		if err := yaml.Unmarshal(mustRead(t, path), &v); err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(toJSONValue(v)); err != nil {
			t.Errorf("%s does not match feed.schema.json: %v", path, err)
		}
		if _, err := feed.Parse(mustRead(t, path)); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	var bad any
	if err := yaml.Unmarshal([]byte("name: Bad-Name\nversion: 0\ntable: t\nmatch: {glob: x}\nformat: {type: parquet}\ncolumns: []\n"), &bad); err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(toJSONValue(bad)); err == nil {
		t.Error("the schema accepts a definition Parse refuses")
	}
}

// compiledSchema is feed.schema.json, compiled for validation.
func compiledSchema(t *testing.T) *jsonschemav6.Schema {
	t.Helper()
	c := jsonschemav6.NewCompiler()
	doc, err := jsonschemav6.UnmarshalJSON(bytes.NewReader(mustRead(t, "feed.schema.json")))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("feed.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("feed.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// toJSONValue turns YAML-decoded values into what a JSON decoder would give.
func toJSONValue(v any) any {
	data, _ := json.Marshal(v)
	out, _ := jsonschemav6.UnmarshalJSON(bytes.NewReader(data))
	return out
}

// TestSchemaTransforms checks that the published schema describes transform lists as
// Parse reads them: bare steps and one-key maps pass, anything else fails.
func TestSchemaTransforms(t *testing.T) {
	sch := compiledSchema(t)
	tests := []struct {
		transforms string
		ok         bool
	}{
		{`[trim, upper, {default: U}, {null_if: ["", NULL]}, {null_if: "-"}, {lookup: codes}]`, true},
		{`[{lookup: {table: codes, missing: keep}}, {split: {separator: "^", index: 2}}]`, true},
		{`[{regex: {pattern: '(\d+)', group: 1}}, {replace: {pattern: x, with: ""}}, {hash: {secret: k}}, {mask: {keep_last: 4}}]`, true},
		{`[shout]`, false},
		{`[{upper: x}]`, false},
		{`[{default: U, trim: x}]`, false},
		{`[{split: {separator: "^"}}]`, false},
		{`[{split: {separator: "^", index: 0}}]`, false},
		{`[{lookup: {table: codes, missing: drop}}]`, false},
		{`[{hash: {}}]`, false},
		{`[{mask: {keep_last: 4, extra: 1}}]`, false},
	}
	for _, tt := range tests {
		var v any
		def := "name: t\nversion: 1\ntable: t\nmatch: {glob: x}\nformat: {type: csv}\nlookups: {codes: {a: b}}\ncolumns:\n  - {name: v, type: string, transforms: " + tt.transforms + "}\n"
		if err := yaml.Unmarshal([]byte(def), &v); err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(toJSONValue(v)); (err == nil) != tt.ok {
			t.Errorf("%s: schema validation error %v, want ok=%v", tt.transforms, err, tt.ok)
		}
		if _, err := feed.Parse([]byte(def)); (err == nil) != tt.ok {
			t.Errorf("%s: Parse error %v, want ok=%v", tt.transforms, err, tt.ok)
		}
	}
}
