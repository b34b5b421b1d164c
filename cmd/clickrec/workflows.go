package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/workflows"
)

func init() {
	register(command{name: "workflows", synopsis: "start a workflow by hand (retrain, refresh, drift-check), wait and print its result", run: runWorkflows})
}

// stdout and stderr of the workflows command; tests replace them.
var (
	workflowsOut io.Writer = os.Stdout
	workflowsErr io.Writer = os.Stderr
)

func runWorkflows(ctx context.Context, args []string) error {
	const usage = "usage: clickrec workflows <retrain|refresh|drift-check> [flags]"
	if len(args) == 0 {
		return cli.Usagef("%s", usage)
	}
	if args[0] == "-h" || args[0] == "--help" {
		args = []string{"retrain", "--help"} // the flags are the same for every workflow
	}
	verb, rest := args[0], args[1:]
	var (
		lg     cli.Logging
		tf     temporalFlags
		params paramFlags
		reason string
		wait   bool
	)
	fs := newFlagSet("workflows", `Start one workflow run on the clickrec task queue, print where to follow it
in the Temporal UI, wait for it and print its result as JSON. A running
clickrec worker executes it.

  retrain      RetrainModel with id `+workflows.RetrainWorkflowID+`: collect, train, export, evaluate,
               gate, promote, observe, check, roll back if worse. At most one runs
               at a time: while one runs, another start is refused.
  refresh      RefreshPopularity: recompute the top-N popularity tables now.
  drift-check  CheckDrift: compare the last minutes of live traffic with the
               served model's reference; roll back or retrain on drift.

Ctrl-C stops waiting, not the run. While a retrain observes its candidate, the
signals promote-now and abort (Temporal UI, or temporal workflow signal) end it.`)
	lg.Register(fs)
	tf.register(fs)
	params.register(fs)
	fs.StringVar(&reason, "reason", "manual", "retrain: why (recorded in the registry history)")
	fs.BoolVar(&wait, "wait", true, "wait for the run to finish and print its result (false: print its id and return)")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if err := params.validate(); err != nil {
		return err
	}
	log, err := lg.Logger()
	if err != nil {
		return err
	}
	opts := client.StartWorkflowOptions{TaskQueue: tf.queue}
	// Unique per start: two manual runs in the same second must not share one
	// workflow (a start with a taken id returns the running one).
	stamp := time.Now().UTC().Format("20060102-150405") + "-" + strconv.FormatUint(rand.Uint64()&0xffffff, 16)
	var (
		fn  any
		arg any
	)
	switch verb {
	case "retrain":
		params.retrain.Reason = reason
		opts.ID = workflows.RetrainWorkflowID
		opts.WorkflowIDConflictPolicy = enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL
		opts.WorkflowIDReusePolicy = enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE
		opts.WorkflowExecutionErrorWhenAlreadyStarted = true
		opts.StaticSummary = "retrain: " + reason
		fn, arg = workflows.RetrainModel, params.retrain
	case "refresh":
		opts.ID = "clickrec-refresh-popularity-manual-" + stamp
		fn, arg = workflows.RefreshPopularity, params.refresh
	case "drift-check":
		opts.ID = "clickrec-check-drift-manual-" + stamp
		fn, arg = workflows.CheckDrift, params.drift
	default:
		return cli.Usagef("unknown workflow %q; %s", verb, usage)
	}
	c, err := tf.dial(ctx, log)
	if err != nil {
		return err
	}
	defer c.Close()
	run, err := c.ExecuteWorkflow(ctx, opts, fn, arg)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return fmt.Errorf("a retrain is already running: %s (follow it at %s)", opts.ID, tf.link(opts.ID, already.RunId))
	}
	if err != nil {
		return fmt.Errorf("cannot start %s: %w", opts.ID, err)
	}
	fmt.Fprintf(workflowsErr, "started %s %s (run %s)\n  follow it at %s\n", verb, run.GetID(), run.GetRunID(), tf.link(run.GetID(), run.GetRunID()))
	if !wait {
		return nil
	}
	var res any
	switch verb {
	case "retrain":
		res = new(workflows.RetrainState)
	case "refresh":
		res = new(workflows.PopularityOutput)
	default:
		res = new(workflows.DriftResult)
	}
	if err := run.Get(ctx, res); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(workflowsErr, "stopped waiting; %s keeps running\n", run.GetID())
			return nil
		}
		return fmt.Errorf("%s (run %s) failed: %w", run.GetID(), run.GetRunID(), err)
	}
	enc := json.NewEncoder(workflowsOut)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}
