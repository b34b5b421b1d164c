package workflows

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/eval"
)

// holdoutSession is one line of holdout.jsonl.
type holdoutSession struct {
	Items []int64      `json:"items"`
	Types []event.Type `json:"types,omitempty"` // nil: all views
}

// splitHoldout keeps the most recent fraction of the sessions (at least
// one; they are in start-time order) as the holdout and the rest for
// training; too few sessions for both are NoData.
func splitHoldout(sessions []model.Session, fraction float64) (train, hold []model.Session, err error) {
	n := len(sessions)
	nHold := max(1, int(math.Round(fraction*float64(n))))
	if n-nHold < 1 {
		return nil, nil, noData("%d sessions are too few to train on and hold some out", n)
	}
	return sessions[:n-nHold], sessions[n-nHold:], nil
}

// writeHoldout writes the holdout sessions to path, one holdoutSession
// JSON line each.
func writeHoldout(path string, ss []model.Session) error {
	var b []byte
	for _, s := range ss {
		line, err := json.Marshal(holdoutSession{Items: s.Items, Types: s.Types})
		if err != nil {
			return fmt.Errorf("cannot encode the holdout: %w", err)
		}
		b = append(append(b, line...), '\n')
	}
	return writeFileAtomic(path, b)
}

// readHoldout reads the holdout sessions writeHoldout wrote; a missing or
// malformed file is BadInput.
func readHoldout(path string) ([]holdoutSession, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badInput("holdout file: %v", err)
	}
	defer f.Close()
	var out []holdoutSession
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var s holdoutSession
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, badInput("holdout file %s: %v", path, err)
		}
		out = append(out, s)
	}
}

// holdoutCases turns sessions into prefix → next-item cases, at most max of
// them, taken evenly.
func holdoutCases(ss []holdoutSession, max int) []eval.Case {
	var all []eval.Case
	for _, s := range ss {
		for t := 1; t < len(s.Items); t++ {
			all = append(all, eval.Case{Prefix: s.Items[:t], Target: s.Items[t]})
		}
	}
	if len(all) <= max {
		return all
	}
	out := make([]eval.Case, max)
	for i := range out {
		out[i] = all[i*len(all)/max]
	}
	return out
}
