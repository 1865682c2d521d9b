package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes checks that the document describes exactly the
// routes the handler registers: every registered method and path is in the
// document, and every operation of the document is registered.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e, _ := newTestAPI(t)
	registered := map[string]bool{}
	for _, r := range e.Routes() {
		if !slices.Contains([]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete,
			http.MethodPatch, http.MethodHead, http.MethodOptions}, r.Method) {
			continue // echo's internal not-found entries
		}
		registered[r.Method+" "+r.Path] = true
	}
	documented := map[string]bool{}
	for path, item := range OpenAPI().Paths {
		for method := range item {
			documented[strings.ToUpper(method)+" "+echoPattern(path)] = true
		}
	}
	for k := range registered {
		if !documented[k] {
			t.Errorf("route %s is registered but not in the OpenAPI document", k)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("operation %s is in the OpenAPI document but not registered", k)
		}
	}
	if len(registered) != 19 {
		t.Errorf("%d routes registered, want the 18 of SPEC §6, the document and a checkout's status", len(registered))
	}
}

// TestOpenAPIWellFormed checks what a validator would: unique operation
// ids, every $ref resolving, every path parameter declared, responses on
// every operation.
func TestOpenAPIWellFormed(t *testing.T) {
	doc := OpenAPI()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				if !resolves(tree, r) {
					t.Errorf("$ref %s does not resolve", r)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(tree)

	ids := map[string]bool{}
	params := doc.Components.Parameters
	for path, item := range doc.Paths {
		for method, op := range item {
			if !slices.Contains([]string{"get", "post", "put", "delete"}, method) {
				t.Errorf("%s: method %q", path, method)
			}
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q missing or repeated", method, path, op.OperationID)
			}
			ids[op.OperationID] = true
			if len(op.Responses) == 0 {
				t.Errorf("%s %s: no responses", method, path)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				if r, ok := p["$ref"].(string); ok {
					p = params[strings.TrimPrefix(r, "#/components/parameters/")]
				}
				if p["in"] == "path" {
					declared[p["name"].(string)] = true
				}
			}
			for _, seg := range strings.Split(path, "/") {
				if strings.HasPrefix(seg, "{") {
					name := strings.Trim(seg, "{}")
					if !declared[name] {
						t.Errorf("%s %s: path parameter %s not declared", method, path, name)
					}
					delete(declared, name)
				}
			}
			if len(declared) != 0 {
				t.Errorf("%s %s: parameters %v are not in the path", method, path, declared)
			}
		}
	}
}

func resolves(tree any, ref string) bool {
	if !strings.HasPrefix(ref, "#/") {
		return false
	}
	cur := tree
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}
