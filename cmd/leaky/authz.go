package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/leakytokens/leaky/authz"
	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/serve"
)

// runAuthz runs the authz service until ctx ends, or with the argument
// "migrate" applies its PostgreSQL migrations and exits. The database URL
// comes from -database-url, LEAKY_DATABASE_URL or, failing both,
// DATABASE_URL.
func runAuthz(ctx context.Context, e env, args []string) error {
	if len(args) > 0 && args[0] == "migrate" {
		return runAuthzMigrate(ctx, e, args[1:])
	}
	cfg := authz.DefaultConfig()
	fs := newFlagSet(e, "authz", "authz [flags]   |   leaky authz migrate [-database-url URL]")
	cfg.RegisterFlags(fs)
	var consulAddr string
	consulAddrFlag(fs, &consulAddr)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = e.getenv("DATABASE_URL")
	}
	logger := e.logger.With(serve.KeyService, "authz")
	svc, err := newAuthz(ctx, cfg, logger)
	if err != nil {
		return err
	}
	deregister, err := registerInstances(ctx, logger, consulAddrOf(e, consulAddr),
		serviceInstances(model.ServiceAuthzGRPC, svc.GRPCAddr(), model.ServiceAuthzHTTP, svc.HTTPAddr()))
	if err != nil {
		svc.Close()
		return err
	}
	defer deregister()
	// The generated password goes to stdout once, never to the log.
	if a := svc.Admin(); a.Password != "" {
		fmt.Fprintf(e.stdout, "authz: bootstrap admin %q created with password %s (shown once; set LEAKY_ADMIN_PASSWORD to choose it)\n", a.Username, a.Password)
	}
	return svc.Run(ctx)
}

func runAuthzMigrate(ctx context.Context, e env, args []string) error {
	cfg := authz.DefaultConfig()
	fs := newFlagSet(e, "authz migrate", "authz migrate [-database-url URL]")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = e.getenv("DATABASE_URL")
	}
	if cfg.DatabaseURL == "" {
		return errors.New("authz migrate: -database-url (or LEAKY_DATABASE_URL, DATABASE_URL) is required")
	}
	st, err := openAuthzStore(ctx, cfg.DatabaseURL) // applies the migrations
	if err != nil {
		return fmt.Errorf("authz migrate: %w", err)
	}
	st.Close()
	fmt.Fprintln(e.stdout, "authz: migrations applied")
	return nil
}
