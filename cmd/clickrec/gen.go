package main

import (
	"context"
	"os"

	"github.com/clickrec/clickrec/gen"
)

func init() {
	register(command{name: "gen", synopsis: gen.Synopsis, run: func(ctx context.Context, args []string) error {
		return gen.Command(ctx, args, os.Stdout)
	}})
}
