// Package onnx exports a clickrec model (model.Model) to ONNX and scores
// sessions with it through ONNX Runtime (github.com/yalue/onnxruntime_go).
//
// # Graph
//
// Export writes one self-contained ModelProto (IR version 8, default-domain
// opset 17; no Python anywhere, the protobuf types are in onnxpb). A model
// without retrieval tables gets the full-catalogue graph FormatFull
// ("session-foldin-topk/1"); one with them the candidate-ranking graph below.
// Shapes, with B the dynamic batch, L the fixed session length
// (ExportOptions.MaxSessionLen, default 20), E the dynamic number of exclusion
// slots, N items, K factors:
//
//	inputs   items   int64   [B, L]  item indexes; padding: index 0
//	         weights float32 [B, L]  per-item weights; padding: 0
//	         exclude int64   [B, E]  excluded item indexes; padding: -1
//	         k       int64   [1]     how many items to return
//	weights  P       float32 [N, K]  fold-in rows (model.Projection)
//	         Yt      float32 [K, N]  item factors, stored transposed
//	         prior   float32 [N]
//	graph    rows     = Gather(P, items, axis 0)            [B, L, K]
//	         u        = ReduceSum(rows · Unsqueeze(weights, 2), axes [1])  [B, K]
//	         scores   = MatMul(u, Yt) + prior                [B, N]  (ORT fuses to Gemm)
//	         idx, add = Where(exclude < 0, 0, exclude), Where(exclude < 0, 0, -inf)
//	         masked   = ScatterElements(scores, idx, add, axis 1, reduction "add")
//	outputs  top_scores float32 [B, k], top_items int64 [B, k]
//	         = TopK(masked, k, axis 1, largest, sorted)
//
// Exclusions are indices scattered into the score matrix, not a dense [B, N]
// mask: the scorer writes B×E numbers instead of B×N, and ONNX Runtime runs the
// scatter in place (≈ 3 µs for a batch of 10 at N = 50,000, against ≈ 800 µs
// for the Gemm). Padding slots add 0 to item 0; a real slot adds -inf, so
// duplicates are harmless. The scorer drops -inf results, so a session with
// fewer than k allowed items gets fewer than k, never an excluded one. TopK
// breaks ties by the lower index, as model.GoScorer does.
//
// # Candidate-ranking graph
//
// A model with retrieval tables (model.Model.HasRetrieval, the default since
// training builds them) is exported as the graph FormatRank
// ("session-candidates-rank/2"): the scorer builds each session's candidates
// in Go (model.Candidates: the session's items, their co-occurrence and
// embedding neighbours, the popular items; excluded items never enter) and
// the graph ranks only those, so a click costs the same at any catalogue size:
//
//	inputs   items, weights  as above
//	         candidates      int64   [B, C]  candidate item indexes; padding: 0
//	         candidate_bias  float32 [B, C]  neighbourhood score; padding: -inf
//	         k               int64   [1]
//	weights  P, Y            float32 [N, K]  (Y not transposed: rows are gathered)
//	         prior           float32 [N]
//	graph    u        = ReduceSum(Gather(P, items) · Unsqueeze(weights, 2), axes [1])  [B, K]
//	         rows     = Gather(Y, candidates)                     [B, C, K]
//	         scores   = Squeeze(MatMul(rows, Unsqueeze(u, 2)), 2)
//	                  + Gather(prior, candidates) + candidate_bias [B, C]
//	         top_scores, pos = TopK(scores, k, axis 1)
//	outputs  top_items = GatherElements(candidates, pos, axis 1)   [B, k]
//
// C is the batch's longest candidate list rounded up to 64 (at most
// model.MaxCandidates, 64 by default). ScorerOptions.Model must be the model
// the graph was exported from: the scorer needs its neighbour lists and checks
// its item table against the graph's. Runs take at most 16 sessions by default
// so the gathered rows stay in cache. model.GoScorer ranks the same candidates
// with the same scores; the tests hold both to a float64 reference.
//
// metadata_props carry the contract revision, the model version, K, N, L and
// the SHA-256 of the item-id table (see Metadata, ReadMetadata, ItemIDsHash),
// and for FormatRank the candidate bound.
// Debian's python3-onnx 1.12 checker (full_check, with shape inference)
// accepts both graphs; the test runs it when /usr/bin/python3 has onnx.
//
// # Scorer
//
// NewScorer needs libonnxruntime.so.1 (ONNX Runtime 1.24.3, from
// scripts/onnxruntime.sh install; path in ScorerOptions.LibraryPath or
// $CLICKREC_ONNXRUNTIME_LIB). The ONNX Runtime environment is process-wide,
// initialized by the first scorer and kept; scorers come and go with model
// swaps. Each scorer owns one session (1 intra-op thread by default, no
// spinning), checks every index before a call (ONNX Runtime would score a
// negative index as item N−1 instead of failing), keeps only a session's last L
// items (Input.Items are oldest first), and warms the session before it is
// returned. Batches above ScorerOptions.MaxBatch (default 64) are split.
// model.GoScorer folds in every item it is given, so the two agree only on
// sessions of at most L items: the hot path's --recent-items (default 20) must
// not exceed the exported L.
//
// Input and output tensors are views over buffers allocated once, bound to the
// session with an IoBinding per (batch size, exclusion slots, k) shape, so a
// steady Score call allocates nothing (0 allocs/op). E is rounded up to a power
// of two. The first Run of a new shape costs ≈ 1.3× a steady one; warming with
// a full MaxBatch batch keeps it there by growing ONNX Runtime's arena before
// the hot path sees the scorer. Close calls glibc's malloc_trim(0): without it
// RSS grew by ≈ 170 MB over 30 swaps of a 50,000-item model, with it ≈ 30 MB.
//
// # Cost
//
// Measured with BenchmarkScore (top-10, K = 64, sessions of 20 items with 2
// exclusions, 1 intra-op thread, a whole Score call including input checks)
// on the 2-core development machine while another process used about one and
// a half of its cores; best of 5 runs, per session:
//
//	items    ORT batch 10   ORT batch 100   model.GoScorer batch 10 / 100
//	 1,000        4.0 µs          4.2 µs        11 µs / 12 µs
//	10,000         23 µs           21 µs       103 µs / 105 µs
//	50,000        121 µs          102 µs       641 µs / 513 µs
//
// A steady Score call allocates nothing (0 B/op, 0 allocs/op). At 50,000
// items ONNX Runtime's profiler puts ≈ 65 % of a batch-10 Run in the Gemm
// (≈ 80 GFLOP/s, near one core's peak) and ≈ 25 % in TopK; everything else
// is small. Per session the cost is flat in the batch size, so MaxBatch only
// bounds memory. Brute force grows with the catalogue; beyond ≈ 50,000 items
// candidate generation (item neighbours) and re-ranking keep the cost flat.
//
// The candidate-ranking graph (BenchmarkRank: model.Synthetic catalogues, K =
// 64, 64 candidates, sessions of 20 items, one thread, candidate building
// included, each call on new sessions), per click: ONNX Runtime 5.2 / 7.1 /
// 9.7 µs at 10k / 100k / 1M items (batch 10), model.GoScorer 5.3 / 12.9 /
// 26.2 µs; the growth is memory latency (the gathered rows come from a 2.5 MB
// table at 10k and a 256 MB one at 1M), not arithmetic: with one batch scored
// over and over 1M items cost 3.3 µs. Two intra-op threads made batches of
// 100 slower (5.8 against 4.2 µs at 10k): the graph is too small to split.
// Creating a scorer (parse, optimize, warm) for the 50,000-item model (26 MB
// of ONNX) takes ≈ 50 ms (BenchmarkNewScorer).
package onnx
