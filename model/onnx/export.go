package onnx

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx/onnxpb"
)

// Opset is the ONNX operator set the exported graph uses (default domain).
// ScatterElements with reduction "add" needs opset 16 or later; 17 is the
// newest that Debian's onnx 1.12 checker knows, and ONNX Runtime 1.24 runs it.
const Opset = 17

// irVersion is the ONNX IR version written into the model (ONNX 1.12/1.13).
const irVersion = 8

// Names of the graph's inputs and outputs.
const (
	InputItems   = "items"      // int64 [B, L]: item indexes, padded with 0
	InputWeights = "weights"    // float32 [B, L]: weights, 0 on padding
	InputExclude = "exclude"    // int64 [B, E]: excluded item indexes, padded with -1
	InputK       = "k"          // int64 [1]: how many items TopK returns
	OutputScores = "top_scores" // float32 [B, k], best first
	OutputItems  = "top_items"  // int64 [B, k], item indexes

	// The candidate-ranking graph (FormatRank) takes candidates instead of
	// exclusions.
	InputCandidates = "candidates"     // int64 [B, C]: candidate item indexes, padded with 0
	InputCandBias   = "candidate_bias" // float32 [B, C]: 0, or -inf on padding
)

const (
	defaultMaxLen  = 20
	producerName   = "clickrec"
	graphName      = "clickrec_session_topk"
	formatRevision = "session-foldin-topk/1" // bump when the graph's contract changes
)

// Graph contracts (Metadata.Format). FormatFull scores every item; FormatRank
// ranks the candidates the caller passes (a model with retrieval).
const (
	FormatFull = formatRevision
	FormatRank = "session-candidates-rank/2"
)

// Keys of the model's metadata_props.
const (
	MetaFormat        = "clickrec.format"          // graph contract revision, "session-foldin-topk/1"
	MetaModelVersion  = "clickrec.model_version"   // model.Model.Version
	MetaK             = "clickrec.k"               // latent dimension
	MetaNumItems      = "clickrec.num_items"       // catalogue size N
	MetaMaxSessionLen = "clickrec.max_session_len" // L, the fixed second dimension of items/weights
	MetaItemIDsSHA256 = "clickrec.item_ids_sha256" // ItemIDsHash(model.ItemIDs)
	MetaMaxCandidates = "clickrec.max_candidates"  // FormatRank: model.MaxCandidates
)

// ExportOptions configure Export.
type ExportOptions struct {
	// MaxSessionLen is L, the number of session items the graph folds in; the
	// scorer keeps a session's most recent L items (the last ones). Default 20.
	MaxSessionLen int
}

// Metadata is what Export stores in the model's metadata_props.
type Metadata struct {
	Format        string
	ModelVersion  string
	K             int
	NumItems      int
	MaxSessionLen int
	ItemIDsSHA256 string
	MaxCandidates int // FormatRank only
}

// ItemIDsHash returns the hex SHA-256 of the item-id table (each id as 8
// little-endian bytes, in index order). The hot path compares it with the
// exported model's MetaItemIDsSHA256 to be sure its id→index map matches.
func ItemIDsHash(ids []int64) string {
	h := sha256.New()
	var buf [8 * 512]byte
	for len(ids) > 0 {
		n := min(len(ids), 512)
		for i, id := range ids[:n] {
			binary.LittleEndian.PutUint64(buf[8*i:], uint64(id))
		}
		h.Write(buf[:8*n])
		ids = ids[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}

// validate checks that m is a complete, finite model.
func validate(m *model.Model) error {
	if m == nil {
		return errors.New("nil model")
	}
	n, k := m.NumItems(), m.K
	switch {
	case k <= 0:
		return fmt.Errorf("model K = %d, want > 0", k)
	case n <= 0:
		return errors.New("model has no items")
	case n > math.MaxInt32:
		return fmt.Errorf("model has %d items, more than int32 indexes allow", n)
	case len(m.Factors) != n*k:
		return fmt.Errorf("model factors have %d values, want N×K = %d×%d", len(m.Factors), n, k)
	case len(m.Projection) != n*k:
		return fmt.Errorf("model projection has %d values, want N×K = %d×%d", len(m.Projection), n, k)
	case len(m.Prior) != n:
		return fmt.Errorf("model prior has %d values, want N = %d", len(m.Prior), n)
	}
	for name, vs := range map[string][]float32{"factors": m.Factors, "projection": m.Projection, "prior": m.Prior} {
		for i, v := range vs {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("model %s[%d] = %v, want a finite value", name, i, v)
			}
		}
	}
	return nil
}

// Export writes m as an ONNX ModelProto (IR version 8, opset 17) whose graph
// scores a batch of sessions and returns each one's top k items; see the
// package documentation for the graph. The result is self-contained (all
// weights are initializers) and carries Metadata in metadata_props.
func Export(m *model.Model, opts ExportOptions) ([]byte, error) {
	if err := validate(m); err != nil {
		return nil, fmt.Errorf("onnx export: %w", err)
	}
	l := opts.MaxSessionLen
	if l == 0 {
		l = defaultMaxLen
	}
	if l < 0 {
		return nil, fmt.Errorf("onnx export: MaxSessionLen = %d, want > 0", l)
	}
	if m.HasRetrieval() {
		return exportRank(m, l)
	}
	n, k := m.NumItems(), m.K

	// Y transposed to [K, N], so that MatMul(u [B,K], Yt [K,N]) needs no Transpose.
	yt := make([]float32, n*k)
	for i := range n {
		row := m.Factors[i*k : (i+1)*k]
		for j, v := range row {
			yt[j*n+i] = v
		}
	}

	g := &onnxpb.GraphProto{
		Name: proto.String(graphName),
		Input: []*onnxpb.ValueInfoProto{
			tensorInfo(InputItems, onnxpb.TensorProto_INT64, "B", int64(l)),
			tensorInfo(InputWeights, onnxpb.TensorProto_FLOAT, "B", int64(l)),
			tensorInfo(InputExclude, onnxpb.TensorProto_INT64, "B", "E"),
			tensorInfo(InputK, onnxpb.TensorProto_INT64, int64(1)),
		},
		Output: topKOutputs(),
		Initializer: []*onnxpb.TensorProto{
			floatTensor("P", m.Projection, int64(n), int64(k)),
			floatTensor("Yt", yt, int64(k), int64(n)),
			floatTensor("prior", m.Prior, int64(n)),
			int64Tensor("axis1", []int64{1}, 1),
			int64Tensor("axis2", []int64{2}, 1),
			int64Tensor("zero_i64", []int64{0}),
			floatTensor("zero_f32", []float32{0}),
			floatTensor("neg_inf", []float32{float32(math.Inf(-1))}),
		},
		Node: append(foldInNodes(),
			// Score every item: u · Y[i] + prior[i].
			node("MatMul", []string{"u", "Yt"}, []string{"dot"}),      // [B,N]
			node("Add", []string{"dot", "prior"}, []string{"scores"}), // [B,N]
			// Exclusions: padding (-1) adds 0 to item 0, a real index adds -inf.
			node("Less", []string{InputExclude, "zero_i64"}, []string{"pad"}),              // [B,E] bool
			node("Where", []string{"pad", "zero_i64", InputExclude}, []string{"excl_idx"}), // [B,E]
			node("Where", []string{"pad", "zero_f32", "neg_inf"}, []string{"excl_add"}),    // [B,E]
			node("ScatterElements", []string{"scores", "excl_idx", "excl_add"}, []string{"masked"},
				intAttr("axis", 1), strAttr("reduction", "add")), // [B,N]
			node("TopK", []string{"masked", InputK}, []string{OutputScores, OutputItems},
				intAttr("axis", 1), intAttr("largest", 1), intAttr("sorted", 1)), // [B,k]
		),
	}
	meta := Metadata{
		Format:        formatRevision,
		ModelVersion:  m.Version,
		K:             k,
		NumItems:      n,
		MaxSessionLen: l,
		ItemIDsSHA256: ItemIDsHash(m.ItemIDs),
	}
	return marshalModel(g, meta, "clickrec session recommender: fold-in of session items, dot product with item factors, popularity prior, exclusions, top-k")
}

// exportRank writes the candidate-ranking graph (FormatRank) of a model with
// retrieval: the caller passes each session's candidates; the graph folds the
// session in, gathers the candidates' rows and priors, scores them and returns
// the top k as item indexes.
func exportRank(m *model.Model, l int) ([]byte, error) {
	n, k := m.NumItems(), m.K
	g := &onnxpb.GraphProto{
		Name: proto.String(graphName),
		Input: []*onnxpb.ValueInfoProto{
			tensorInfo(InputItems, onnxpb.TensorProto_INT64, "B", int64(l)),
			tensorInfo(InputWeights, onnxpb.TensorProto_FLOAT, "B", int64(l)),
			tensorInfo(InputCandidates, onnxpb.TensorProto_INT64, "B", "C"),
			tensorInfo(InputCandBias, onnxpb.TensorProto_FLOAT, "B", "C"),
			tensorInfo(InputK, onnxpb.TensorProto_INT64, int64(1)),
		},
		Output: topKOutputs(),
		Initializer: []*onnxpb.TensorProto{
			floatTensor("P", m.Projection, int64(n), int64(k)),
			floatTensor("Y", m.Factors, int64(n), int64(k)),
			floatTensor("prior", m.Prior, int64(n)),
			int64Tensor("axis1", []int64{1}, 1),
			int64Tensor("axis2", []int64{2}, 1),
		},
		Node: append(foldInNodes(),
			node("Unsqueeze", []string{"u", "axis2"}, []string{"u3"}), // [B,K,1]
			// Score the candidates: Y[c]·u + prior[c] + bias (-inf on padding).
			node("Gather", []string{"Y", InputCandidates}, []string{"cand_rows"}, intAttr("axis", 0)), // [B,C,K]
			node("MatMul", []string{"cand_rows", "u3"}, []string{"dot3"}),                             // [B,C,1]
			node("Squeeze", []string{"dot3", "axis2"}, []string{"dot"}),                               // [B,C]
			node("Gather", []string{"prior", InputCandidates}, []string{"cand_prior"}, intAttr("axis", 0)),
			node("Add", []string{"dot", "cand_prior"}, []string{"scored"}),
			node("Add", []string{"scored", InputCandBias}, []string{"scores"}), // [B,C]
			node("TopK", []string{"scores", InputK}, []string{OutputScores, "top_pos"},
				intAttr("axis", 1), intAttr("largest", 1), intAttr("sorted", 1)), // [B,k]
			node("GatherElements", []string{InputCandidates, "top_pos"}, []string{OutputItems}, intAttr("axis", 1)), // [B,k]
		),
	}
	meta := Metadata{
		Format:        FormatRank,
		ModelVersion:  m.Version,
		K:             k,
		NumItems:      n,
		MaxSessionLen: l,
		ItemIDsSHA256: ItemIDsHash(m.ItemIDs),
		MaxCandidates: m.MaxCandidates,
	}
	return marshalModel(g, meta, "clickrec session recommender: fold-in of session items, candidates ranked by dot product with item factors plus popularity prior, top-k")
}

// topKOutputs are both graphs' outputs: each session's top k scores and items.
func topKOutputs() []*onnxpb.ValueInfoProto {
	return []*onnxpb.ValueInfoProto{
		tensorInfo(OutputScores, onnxpb.TensorProto_FLOAT, "B", "k"),
		tensorInfo(OutputItems, onnxpb.TensorProto_INT64, "B", "k"),
	}
}

// foldInNodes fold each session into a user vector, the same in both graphs:
// u = Σ_l w[l] · P[items[l]] ([B, K], named "u"); they need the initializers
// P, axis1 and axis2.
func foldInNodes() []*onnxpb.NodeProto {
	return []*onnxpb.NodeProto{
		node("Gather", []string{"P", InputItems}, []string{"rows"}, intAttr("axis", 0)),         // [B,L,K]
		node("Unsqueeze", []string{InputWeights, "axis2"}, []string{"w3"}),                      // [B,L,1]
		node("Mul", []string{"rows", "w3"}, []string{"weighted"}),                               // [B,L,K]
		node("ReduceSum", []string{"weighted", "axis1"}, []string{"u"}, intAttr("keepdims", 0)), // [B,K]
	}
}

func marshalModel(g *onnxpb.GraphProto, meta Metadata, doc string) ([]byte, error) {
	mp := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(irVersion),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		ProducerName:    proto.String(producerName),
		ProducerVersion: proto.String(meta.Format),
		DocString:       proto.String(doc),
		Graph:           g,
		MetadataProps:   meta.props(),
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(mp)
	if err != nil {
		return nil, fmt.Errorf("onnx export: marshal: %w", err)
	}
	return b, nil
}

func (md Metadata) props() []*onnxpb.StringStringEntryProto {
	kv := [][2]string{
		{MetaFormat, md.Format},
		{MetaModelVersion, md.ModelVersion},
		{MetaK, strconv.Itoa(md.K)},
		{MetaNumItems, strconv.Itoa(md.NumItems)},
		{MetaMaxSessionLen, strconv.Itoa(md.MaxSessionLen)},
		{MetaItemIDsSHA256, md.ItemIDsSHA256},
	}
	if md.Format == FormatRank {
		kv = append(kv, [2]string{MetaMaxCandidates, strconv.Itoa(md.MaxCandidates)})
	}
	out := make([]*onnxpb.StringStringEntryProto, len(kv))
	for i, p := range kv {
		out[i] = &onnxpb.StringStringEntryProto{Key: proto.String(p[0]), Value: proto.String(p[1])}
	}
	return out
}

// ReadMetadata returns the Metadata of a model written by Export. It reads only
// the top-level metadata_props of the ModelProto (not the weights), so it is
// cheap even for large models.
func ReadMetadata(modelBytes []byte) (Metadata, error) {
	props := map[string]string{}
	b := modelBytes
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Metadata{}, fmt.Errorf("onnx metadata: bad field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 14 && typ == protowire.BytesType { // ModelProto.metadata_props
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Metadata{}, fmt.Errorf("onnx metadata: bad metadata_props: %w", protowire.ParseError(n))
			}
			var e onnxpb.StringStringEntryProto
			if err := proto.Unmarshal(v, &e); err != nil {
				return Metadata{}, fmt.Errorf("onnx metadata: bad metadata_props entry: %w", err)
			}
			props[e.GetKey()] = e.GetValue()
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return Metadata{}, fmt.Errorf("onnx metadata: bad field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	md := Metadata{
		Format:        props[MetaFormat],
		ModelVersion:  props[MetaModelVersion],
		ItemIDsSHA256: props[MetaItemIDsSHA256],
	}
	ints := []struct {
		key string
		dst *int
	}{{MetaK, &md.K}, {MetaNumItems, &md.NumItems}, {MetaMaxSessionLen, &md.MaxSessionLen}}
	switch md.Format {
	case FormatFull:
	case FormatRank:
		ints = append(ints, struct {
			key string
			dst *int
		}{MetaMaxCandidates, &md.MaxCandidates})
	default:
		return Metadata{}, fmt.Errorf("onnx metadata: %s = %q, want %q or %q (not a model written by this package's Export)", MetaFormat, md.Format, FormatFull, FormatRank)
	}
	for _, f := range ints {
		v, err := strconv.Atoi(props[f.key])
		if err != nil || v <= 0 {
			return Metadata{}, fmt.Errorf("onnx metadata: %s = %q, want a positive integer", f.key, props[f.key])
		}
		*f.dst = v
	}
	return md, nil
}

// tensorInfo describes a graph input or output; a dim is an int64 (fixed) or a
// string (a named dynamic dimension).
func tensorInfo(name string, typ onnxpb.TensorProto_DataType, dims ...any) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		switch d := d.(type) {
		case int64:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		case string:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}
		default:
			panic(fmt.Sprintf("tensorInfo: bad dim %T", d))
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(typ)),
			Shape:    shape,
		}}},
	}
}

// floatTensor is a float32 initializer stored as little-endian raw_data.
func floatTensor(name string, vs []float32, dims ...int64) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &onnxpb.TensorProto{
		Name:     proto.String(name),
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
		Dims:     dims,
		RawData:  raw,
	}
}

// int64Tensor is an int64 initializer; no dims means a scalar.
func int64Tensor(name string, vs []int64, dims ...int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{
		Name:      proto.String(name),
		DataType:  proto.Int32(int32(onnxpb.TensorProto_INT64)),
		Dims:      dims,
		Int64Data: vs,
	}
}

func node(op string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{
		Name:      proto.String(out[0] + "_" + op),
		OpType:    proto.String(op),
		Input:     in,
		Output:    out,
		Attribute: attrs,
	}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func strAttr(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}
