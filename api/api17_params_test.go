package api

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/latticedb/lattice/region"
)

// operationParams lists the names of the parameters (in: where) the
// document's operation method of path declares.
func operationParams(t *testing.T, path, method, in string) []string {
	t.Helper()
	doc := OpenAPI()
	o := doc.Paths[path][method]
	if o == nil {
		t.Fatalf("the document has no %s %s", method, path)
	}
	var names []string
	for _, p := range o.Parameters {
		if r, ok := p["$ref"].(string); ok {
			p = doc.Components.Parameters[strings.TrimPrefix(r, "#/components/parameters/")]
		}
		if p["in"] == in {
			names = append(names, p["name"].(string))
		}
	}
	return names
}

// TestClusterDeclaresCausalHeaders checks GET /v1/cluster against its
// OpenAPI operation: docs/api.md says every route under /v1 but the
// OpenAPI document takes Lattice-Token and Lattice-Wait, and that
// GET /v1/cluster "honours and returns Lattice-Token, so a client can
// wait for a region to apply what it saw"; the route reads both headers
// (a malformed Lattice-Wait is refused naming it), but its operation
// declares neither, while every other /v1 operation but the OpenAPI
// document does.
func TestClusterDeclaresCausalHeaders(t *testing.T) {
	e, _ := newTestAPI(t)
	w := req{method: http.MethodGet, path: "/v1/cluster", header: map[string]string{HeaderWait: "soon"}}.do(t, e)
	assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, HeaderWait)
	got := operationParams(t, "/v1/cluster", "get", "header")
	for _, want := range []string{HeaderToken, HeaderWait} {
		found := false
		for _, n := range got {
			found = found || n == want
		}
		if !found {
			t.Errorf("GET /v1/cluster takes %s, but its OpenAPI operation declares only the headers %v", want, got)
		}
	}
}

// warningService is the fake service of a region that serves with a
// warning for its operator.
type warningService struct{ *fakeService }

func (warningService) Warnings() []string {
	return []string{"the store holds 1 damaged key awaiting repair"}
}

// TestReadyzWarningsDeclared checks GET /readyz of a region with a
// warning against the Health schema of the OpenAPI document: docs/api.md
// (GET /readyz) answers 200 "with "warnings": […] when there is something
// an operator should look at", and the route does, but the schema lists
// only status and region, so the answer holds a member the document does
// not declare (the document's rule: an answer carries no field the
// document lacks).
func TestReadyzWarningsDeclared(t *testing.T) {
	e := New(warningService{newFake()}, Options{Logger: slog.New(slog.DiscardHandler)})
	w := req{method: http.MethodGet, path: "/readyz"}.do(t, e)
	if w.Code != http.StatusOK {
		t.Fatalf("readyz: %d %s", w.Code, w.Body)
	}
	if _, ok := decodeObject(t, w)["warnings"]; !ok {
		t.Fatalf("readyz answered %s, without its warnings", w.Body)
	}
	v, err := DecodeJSON(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range SchemaErrors(documentTree(t), "#/components/schemas/Health", v) {
		t.Errorf("readyz answered %s; against the Health schema: %s", w.Body, e)
	}
}
