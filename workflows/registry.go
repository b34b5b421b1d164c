package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/registry"
)

// RegisterInput is what the registry stores for a candidate.
type RegisterInput struct {
	Version       string         `json:"version"`
	ModelDir      string         `json:"model_dir"`
	ONNXFile      string         `json:"onnx_file"`
	ReferenceFile string         `json:"reference_file"`
	Holdout       HoldoutMetrics `json:"holdout"`
	Reason        string         `json:"reason"`
}

// RegisterOutput says whether an earlier attempt had registered the version.
type RegisterOutput struct {
	AlreadyRegistered bool `json:"already_registered,omitempty"`
}

// RegisterCandidate stores the candidate in the registry (model, ONNX graph,
// metadata with the holdout metrics and the reference profiles) without
// serving it. A version already registered is left as it is.
func (a *Activities) RegisterCandidate(ctx context.Context, in RegisterInput) (*RegisterOutput, error) {
	defer keepAlive(ctx, "registering")()
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	if _, err := reg.Meta(ctx, in.Version); err == nil {
		return &RegisterOutput{AlreadyRegistered: true}, nil
	} else if !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	v, err := candidateVersion(in)
	if err != nil {
		return nil, err
	}
	if err := reg.Register(ctx, v, in.Reason); errors.Is(err, registry.ErrInvalidReference) {
		return nil, badInput("reference file %s: %v", in.ReferenceFile, err)
	} else if err != nil {
		return nil, err
	}
	return &RegisterOutput{}, nil
}

// candidateVersion reads what the registry stores of the candidate from
// its files: the model (which must be in.Version), the ONNX graph, the
// reference profiles and the metadata with the holdout metrics.
func candidateVersion(in RegisterInput) (registry.Version, error) {
	m, md, err := model.Load(in.ModelDir)
	if err != nil {
		return registry.Version{}, badInput("cannot load the candidate: %v", err)
	}
	if md.Version != in.Version {
		return registry.Version{}, badInput("the model in %s is version %q, not %q", in.ModelDir, md.Version, in.Version)
	}
	bin, err := m.MarshalBinary()
	if err != nil {
		return registry.Version{}, fmt.Errorf("cannot encode the candidate: %w", err)
	}
	onnxBytes, err := os.ReadFile(in.ONNXFile)
	if err != nil {
		return registry.Version{}, badInput("ONNX file: %v", err)
	}
	ref, err := os.ReadFile(in.ReferenceFile)
	if err != nil {
		return registry.Version{}, badInput("reference file: %v", err)
	}
	addHoldoutMetrics(&md, in.Holdout)
	meta := registry.Metadata{Metadata: md, Holdout: in.Holdout.Candidate, Reference: json.RawMessage(ref)}
	return registry.Version{Meta: meta, Model: bin, ONNX: onnxBytes}, nil
}

// addHoldoutMetrics adds the holdout metrics of the candidate ("holdout")
// and of the version serving then ("holdout_current") to md's offline
// metrics.
func addHoldoutMetrics(md *model.Metadata, h HoldoutMetrics) {
	if md.OfflineMetrics == nil {
		md.OfflineMetrics = map[string]map[string]float64{}
	}
	if h.Candidate != nil {
		md.OfflineMetrics["holdout"] = h.Candidate
	}
	if h.Current != nil {
		md.OfflineMetrics["holdout_current"] = h.Current
	}
}

// PromoteInput names the version to serve.
type PromoteInput struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// PromoteOutput is the version served before and when the promotion happened.
type PromoteOutput struct {
	Previous   string    `json:"previous,omitempty"`
	PromotedAt time.Time `json:"promoted_at"`
}

// PromoteCandidate serves the version (registry.Promote: every hot path
// worker swaps to it between two batches). If the version already serves
// because an earlier attempt promoted it, that promotion is returned.
func (a *Activities) PromoteCandidate(ctx context.Context, in PromoteInput) (*PromoteOutput, error) {
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	cur, err := reg.Current(ctx)
	if err != nil {
		return nil, err
	}
	if cur == in.Version {
		hist, err := reg.History(ctx, 1000)
		if err != nil {
			return nil, err
		}
		for _, e := range hist {
			if e.Version == in.Version && e.Action == "promote" {
				return &PromoteOutput{Previous: e.Previous, PromotedAt: e.Time}, nil
			}
		}
	}
	prev, err := reg.Promote(ctx, in.Version, in.Reason)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, badInput("version %s is not registered", in.Version)
	}
	if err != nil {
		return nil, err
	}
	return &PromoteOutput{Previous: prev, PromotedAt: time.Now().UTC()}, nil
}

// RollbackInput names the version to roll back from.
type RollbackInput struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
	// Trigger labels recsys_model_rollbacks_total: retrain, drift or abort.
	Trigger string `json:"trigger"`
}

// RollbackOutput says what serves after the rollback.
type RollbackOutput struct {
	RolledBack bool   `json:"rolled_back"`
	Serving    string `json:"serving"`
	// Note explains a rollback not done: the version no longer serves (an
	// earlier attempt or someone else moved on), or nothing served before it.
	Note string `json:"note,omitempty"`
}

// RollbackModel is the compensation of a promotion: if Version still serves,
// the version served before it serves again (registry.RollbackFrom, with the
// reason in the history). The check and the rollback are one atomic step in
// Redis: if Version no longer serves — an earlier attempt already rolled
// back, or someone promoted another version after the caller judged this
// one — nothing changes and Note says so, so the activity is idempotent and
// never undoes someone else's promotion.
func (a *Activities) RollbackModel(ctx context.Context, in RollbackInput) (*RollbackOutput, error) {
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	if in.Version == "" {
		return nil, badInput("no version to roll back from")
	}
	now, err := reg.RollbackFrom(ctx, in.Version, in.Reason)
	var nc *registry.NotCurrentError
	switch {
	case errors.As(err, &nc):
		return &RollbackOutput{Serving: nc.Current, Note: fmt.Sprintf("%s no longer serves (%q does)", in.Version, nc.Current)}, nil
	case errors.Is(err, registry.ErrNoPrevious):
		return &RollbackOutput{Serving: in.Version, Note: "no version served before " + in.Version}, nil
	case err != nil:
		return nil, err
	}
	a.Metrics.rollback(in.Trigger)
	activity.GetLogger(ctx).Warn("rolled back", "from", in.Version, "to", now, "reason", in.Reason)
	return &RollbackOutput{RolledBack: true, Serving: now}, nil
}
