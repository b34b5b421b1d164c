package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"
)

// The binary model format, little-endian:
//
//	magic      [8]byte "CLKRMDL1"
//	header     uint32 header length H, then H bytes of JSON (binHeader)
//	item ids   N × int64
//	factors    N·K × float32 (Y, row-major)
//	projection N·K × float32 (P, row-major)
//	prior      N × float32
//	neighbours N·M × int32 (format 2; M = header "neighbors", may be 0)
//	popular    R × int32   (format 2; R = header "popular")
//	checksum   [32]byte SHA-256 of everything before it
//
// Format 1 (no retrieval tables) is still read.
// The JSON header keeps the small fields (version, K, N, weighting) readable
// and extensible; the arrays are raw so a 50k×64 model loads in milliseconds.
const (
	binMagic     = "CLKRMDL1"
	binFormat    = 2
	maxHeaderLen = 1 << 20
)

type binHeader struct {
	Format    int       `json:"format"`
	Version   string    `json:"version"`
	K         int       `json:"k"`
	Items     int       `json:"items"`
	Weighting Weighting `json:"weighting"`
	// Format 2: retrieval.
	Neighbors      int     `json:"neighbors,omitempty"`
	Popular        int     `json:"popular,omitempty"`
	MaxCandidates  int     `json:"max_candidates,omitempty"`
	NeighborWeight float32 `json:"neighbor_weight,omitempty"`
	RetrievalItems int     `json:"retrieval_items,omitempty"`
}

// ErrChecksum means the model bytes are corrupt or truncated.
var ErrChecksum = errors.New("model: checksum mismatch")

// MarshalBinary encodes m in the binary model format.
func (m *Model) MarshalBinary() ([]byte, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(binHeader{Format: binFormat, Version: m.Version, K: m.K, Items: m.NumItems(), Weighting: m.Weighting,
		Neighbors: m.NumNeighbors, Popular: len(m.Popular), MaxCandidates: m.MaxCandidates, NeighborWeight: m.NeighborWeight, RetrievalItems: m.RetrievalItems})
	if err != nil {
		return nil, fmt.Errorf("model: header: %w", err)
	}
	n, k := m.NumItems(), m.K
	size := len(binMagic) + 4 + len(hdr) + n*8 + 2*n*k*4 + n*4 + 4*(len(m.Neighbors)+len(m.Popular)) + sha256.Size
	b := make([]byte, 0, size)
	b = append(b, binMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(hdr)))
	b = append(b, hdr...)
	for _, id := range m.ItemIDs {
		b = binary.LittleEndian.AppendUint64(b, uint64(id))
	}
	for _, s := range [][]float32{m.Factors, m.Projection, m.Prior} {
		for _, v := range s {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	for _, s := range [][]int32{m.Neighbors, m.Popular} {
		for _, v := range s {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// UnmarshalBinary decodes the binary model format into m, verifying the
// checksum and the shape.
func (m *Model) UnmarshalBinary(b []byte) error {
	if len(b) < len(binMagic)+4+sha256.Size || string(b[:len(binMagic)]) != binMagic {
		return errors.New("model: not a clickrec model (bad magic)")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return ErrChecksum
	}
	p := body[len(binMagic):]
	hl := int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if hl > maxHeaderLen || hl > len(p) {
		return fmt.Errorf("model: header length %d out of range", hl)
	}
	var h binHeader
	if err := json.Unmarshal(p[:hl], &h); err != nil {
		return fmt.Errorf("model: header: %w", err)
	}
	p = p[hl:]
	if h.Format < 1 || h.Format > binFormat {
		return fmt.Errorf("model: format %d, this build reads 1 to %d", h.Format, binFormat)
	}
	n, k := h.Items, h.K
	if n < 1 || k < 1 || n > math.MaxInt32 || k > 1<<16 || h.Neighbors < 0 || h.Neighbors > 1<<16 || h.Popular < 0 || h.Popular > n {
		return fmt.Errorf("model: bad shape %d×%d (neighbours %d, popular %d)", n, k, h.Neighbors, h.Popular)
	}
	if want := n*8 + 2*n*k*4 + n*4 + 4*(n*h.Neighbors+h.Popular); len(p) != want {
		return fmt.Errorf("model: %d bytes of arrays, want %d for %d×%d", len(p), want, n, k)
	}
	out := Model{Version: h.Version, K: k, Weighting: h.Weighting, ItemIDs: make([]int64, n),
		NumNeighbors: h.Neighbors, MaxCandidates: h.MaxCandidates, NeighborWeight: h.NeighborWeight, RetrievalItems: h.RetrievalItems}
	for i := range out.ItemIDs {
		out.ItemIDs[i] = int64(binary.LittleEndian.Uint64(p[i*8:]))
	}
	p = p[n*8:]
	floats := func(cnt int) []float32 {
		s := make([]float32, cnt)
		for i := range s {
			s[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[i*4:]))
		}
		p = p[cnt*4:]
		return s
	}
	out.Factors = floats(n * k)
	out.Projection = floats(n * k)
	out.Prior = floats(n)
	ints := func(cnt int) []int32 {
		if cnt == 0 {
			return nil
		}
		s := make([]int32, cnt)
		for i := range s {
			s[i] = int32(binary.LittleEndian.Uint32(p[i*4:]))
		}
		p = p[cnt*4:]
		return s
	}
	out.Neighbors = ints(n * h.Neighbors)
	out.Popular = ints(h.Popular)
	if err := out.Check(); err != nil {
		return err
	}
	seen := make(map[int64]int32, n)
	for i, id := range out.ItemIDs {
		if _, dup := seen[id]; dup {
			return fmt.Errorf("model: item id %d appears twice", id)
		}
		seen[id] = int32(i)
	}
	out.index = seen
	*m = out
	return nil
}

// Metadata describes a saved model: where it came from and how good it is.
// It is stored next to the model as metadata.json.
type Metadata struct {
	Version   string    `json:"version,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Items     int       `json:"items"`
	Factors   int       `json:"factors"`
	// Source is the training data file; Data its size and time window.
	Source string    `json:"source,omitempty"`
	Data   DataStats `json:"data"`
	// TrainingWindow is the span of the training events (absent when the data
	// has no timestamps).
	TrainingWindow *Window   `json:"training_window,omitempty"`
	Config         Config    `json:"config"`
	Training       *Report   `json:"training,omitempty"`
	PriorWeight    float64   `json:"prior_weight"`
	Weighting      Weighting `json:"weighting"`
	// OfflineMetrics are evaluation results by model name, e.g.
	// {"served": {"hr@20": 0.49, ...}}.
	OfflineMetrics map[string]map[string]float64 `json:"offline_metrics,omitempty"`
	// ModelSHA256 and ModelBytes identify model.bin.
	ModelSHA256 string `json:"model_sha256"`
	ModelBytes  int    `json:"model_bytes"`
}

// Window is a time span.
type Window struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// NewMetadata fills the metadata of a freshly trained model.
func NewMetadata(m *Model, cfg Config, rep *Report, source string) Metadata {
	md := Metadata{Version: m.Version, CreatedAt: time.Now().UTC(), Items: m.NumItems(), Factors: m.K, Source: source,
		Config: cfg, Training: rep, Weighting: m.Weighting}
	if rep != nil {
		md.Data = rep.Data
		md.PriorWeight = rep.PriorWeight
		if rep.Data.FromMs != 0 || rep.Data.ToMs != 0 {
			md.TrainingWindow = &Window{From: time.UnixMilli(rep.Data.FromMs).UTC(), To: time.UnixMilli(rep.Data.ToMs).UTC()}
		}
	}
	return md
}

// File names inside a model directory.
const (
	ModelFile    = "model.bin"
	MetadataFile = "metadata.json"
)

// Save writes m (model.bin) and md (metadata.json) into dir, creating it.
// Each file is written to a temporary name and renamed into place. md's
// checksum fields are filled from the bytes written.
func Save(dir string, m *Model, md Metadata) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	md.ModelSHA256 = hex.EncodeToString(sum[:])
	md.ModelBytes = len(b)
	md.Items, md.Factors, md.Weighting = m.NumItems(), m.K, m.Weighting
	if md.Version == "" {
		md.Version = m.Version
	}
	js, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return fmt.Errorf("model: metadata: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, ModelFile), b); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, MetadataFile), append(js, '\n'))
}

// Load reads a model directory written by Save, verifying the model's
// checksum against both its trailer and the metadata.
func Load(dir string) (*Model, Metadata, error) {
	var md Metadata
	js, err := os.ReadFile(filepath.Join(dir, MetadataFile))
	if err != nil {
		return nil, md, fmt.Errorf("model: %w", err)
	}
	if err := json.Unmarshal(js, &md); err != nil {
		return nil, md, fmt.Errorf("model: %s: %w", MetadataFile, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ModelFile))
	if err != nil {
		return nil, md, fmt.Errorf("model: %w", err)
	}
	if sum := sha256.Sum256(b); md.ModelSHA256 != "" && hex.EncodeToString(sum[:]) != md.ModelSHA256 {
		return nil, md, fmt.Errorf("model: %s does not match %s: %w", ModelFile, MetadataFile, ErrChecksum)
	}
	m := new(Model)
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, md, fmt.Errorf("model: %s: %w", ModelFile, err)
	}
	return m, md, nil
}

func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(0o644)
	if err == nil {
		_, err = io.Copy(f, bytes.NewReader(b))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	return nil
}
