package onnx

import (
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx/onnxpb"
)

func TestExportMetadataRoundTrip(t *testing.T) {
	m := randomModel(rand.New(rand.NewPCG(1, 2)), 50, 8)
	m.Version = "v20261129-0415"
	b, err := Export(m, ExportOptions{MaxSessionLen: 7})
	if err != nil {
		t.Fatal(err)
	}
	md, err := ReadMetadata(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Metadata{
		Format:        formatRevision,
		ModelVersion:  "v20261129-0415",
		K:             8,
		NumItems:      50,
		MaxSessionLen: 7,
		ItemIDsSHA256: ItemIDsHash(m.ItemIDs),
	}
	if md != want {
		t.Fatalf("metadata %+v, want %+v", md, want)
	}
	if len(md.ItemIDsSHA256) != 64 {
		t.Fatalf("item hash %q is not hex SHA-256", md.ItemIDsSHA256)
	}

	// The full protobuf decodes and has the expected graph contract.
	var mp onnxpb.ModelProto
	if err := proto.Unmarshal(b, &mp); err != nil {
		t.Fatal(err)
	}
	if got := mp.GetOpsetImport()[0].GetVersion(); got != Opset {
		t.Errorf("opset %d, want %d", got, Opset)
	}
	var ins, outs []string
	for _, v := range mp.GetGraph().GetInput() {
		ins = append(ins, v.GetName())
	}
	for _, v := range mp.GetGraph().GetOutput() {
		outs = append(outs, v.GetName())
	}
	if strings.Join(ins, ",") != "items,weights,exclude,k" || strings.Join(outs, ",") != "top_scores,top_items" {
		t.Errorf("inputs %v outputs %v", ins, outs)
	}
	for _, init := range mp.GetGraph().GetInitializer() {
		if init.GetName() == "Yt" {
			if d := init.GetDims(); len(d) != 2 || d[0] != 8 || d[1] != 50 {
				t.Errorf("Yt dims %v, want [8 50]", d)
			}
		}
	}
}

func TestItemIDsHash(t *testing.T) {
	ids := make([]int64, 1300) // more than one internal chunk
	for i := range ids {
		ids[i] = int64(i * 3)
	}
	h := ItemIDsHash(ids)
	if h != ItemIDsHash(append([]int64(nil), ids...)) {
		t.Fatal("hash is not deterministic")
	}
	ids[1299]++
	if h == ItemIDsHash(ids) {
		t.Fatal("hash ignores the last id")
	}
	if ItemIDsHash(nil) == ItemIDsHash([]int64{0}) {
		t.Fatal("hash ignores length")
	}
}

func TestReadMetadataRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"garbage": {0xff, 0xff, 0xff},
		"empty":   {},
		"foreign": mustMarshal(t, &onnxpb.ModelProto{IrVersion: proto.Int64(8)}),
	} {
		if _, err := ReadMetadata(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExportRejectsBadModels(t *testing.T) {
	good := func() *model.Model { return randomModel(rand.New(rand.NewPCG(3, 4)), 10, 4) }
	cases := map[string]func(m *model.Model){
		"zero K":           func(m *model.Model) { m.K = 0 },
		"no items":         func(m *model.Model) { m.ItemIDs = nil },
		"short factors":    func(m *model.Model) { m.Factors = m.Factors[1:] },
		"short projection": func(m *model.Model) { m.Projection = m.Projection[1:] },
		"short prior":      func(m *model.Model) { m.Prior = m.Prior[1:] },
		"NaN factor":       func(m *model.Model) { m.Factors[5] = float32(math.NaN()) },
		"Inf prior":        func(m *model.Model) { m.Prior[2] = float32(math.Inf(1)) },
	}
	for name, breakIt := range cases {
		m := good()
		breakIt(m)
		if _, err := Export(m, ExportOptions{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Export(nil, ExportOptions{}); err == nil {
		t.Error("nil model: no error")
	}
	if _, err := Export(good(), ExportOptions{MaxSessionLen: -1}); err == nil {
		t.Error("negative MaxSessionLen: no error")
	}
}

// TestExportPassesONNXChecker runs the official ONNX checker (with shape
// inference) when Debian's python3-onnx is installed. Optional: the real
// validation is ONNX Runtime loading and running the model (scorer tests).
func TestExportPassesONNXChecker(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import onnx").Run(); err != nil {
		t.Skipf("python3-onnx not installed (apt-get install python3-onnx): %v", err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, m := range []*model.Model{randomModel(rng, 100, 16), withRetrieval(rng, randomModel(rng, 100, 16), 8, 64)} {
		b, err := Export(m, ExportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "model.onnx")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		script := `import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
print(onnx.helper.printable_graph(m.graph).count("\n"), "lines")`
		out, err := exec.Command(py, "-c", script, path).CombinedOutput()
		if err != nil {
			t.Fatalf("onnx checker (retrieval %v): %v\n%s", m.HasRetrieval(), err, out)
		}
		t.Logf("onnx checker ok (retrieval %v): %s", m.HasRetrieval(), strings.TrimSpace(string(out)))
	}
}
