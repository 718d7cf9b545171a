package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/dualgate/dualgate/gateway"
	"github.com/dualgate/dualgate/web/auth"
)

// tokenMain runs `dualgate token` and returns the exit status: 0 done, 1 failed, 2 bad usage.
func tokenMain(args []string, stdout, stderr io.Writer) int {
	err := runToken(args, stdout, stderr)
	var usage usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "dualgate token:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "dualgate token:", err)
		return 1
	}
}

// runToken mints one JWT that the gateway running with the same config accepts, and prints it
// (only it) on stdout, so `TOKEN=$(dualgate token ...)` works. What it is (algorithm, kid,
// subject, roles, expiry) goes to stderr.
func runToken(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("dualgate token", flag.ContinueOnError)
	flags.SetOutput(stderr)
	config := flags.String("config", "", "the gateway's config file; its http.jwt section says how to sign; required")
	sub := flags.String("sub", "", "subject: the user name the token stands for; required")
	roles := flags.String("roles", "", "comma-separated roles: agent, admin; required (an empty value mints a token with no role)")
	ttl := flags.Duration("ttl", 0, "lifetime, at most 24h (default: the config's http.jwt.ttl)")
	key := flags.String("key", "", "PEM private key (RS256, ES256 or EdDSA) whose public half the config lists (default: the HS256 secret)")
	kid := flags.String("kid", "", "kid header, with -key under jwks_url (default: the configured key's own kid)")
	flags.Usage = func() {
		fmt.Fprint(flags.Output(), `usage: dualgate token -config FILE -sub NAME -roles agent,admin [-ttl 1h] [-key PRIVATE.pem [-kid KID]]

Mints a JWT that the gateway running with FILE accepts, and prints it on stdout. It is signed
with the HS256 secret of http.jwt (secret_file or secret_env), or with -key, a private key
whose public half is among http.jwt.public_key_files or in jwks_file. A config with only
public keys and no -key cannot mint; nor can ephemeral_secret, which only the running gateway
knows. Tokens cannot be revoked: keep -ttl short.

`)
		flags.PrintDefaults()
	}
	set, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	switch {
	case *config == "":
		return usageError{errors.New("-config is required (the embedded development config's secret lives only in the running gateway)")}
	case *sub == "":
		return usageError{errors.New("-sub is required")}
	case !set["roles"]:
		return usageError{errors.New("-roles is required: agent, admin, both (agent,admin) or empty")}
	case set["ttl"] && *ttl <= 0:
		return usageError{fmt.Errorf("-ttl %v: must be positive", *ttl)}
	case *kid != "" && *key == "":
		return usageError{errors.New("-kid goes with -key: an HS256 token names no key")}
	}
	var roleList []string
	for r := range strings.SplitSeq(*roles, ",") {
		r = strings.TrimSpace(r)
		switch {
		case r == "":
		case r != auth.RoleAgent && r != auth.RoleAdmin:
			// The gateway ignores roles it does not know, so a typo would mint a powerless token.
			return usageError{fmt.Errorf("-roles: unknown role %q (known: %s, %s)", r, auth.RoleAgent, auth.RoleAdmin)}
		case !slices.Contains(roleList, r):
			roleList = append(roleList, r)
		}
	}

	cfg, err := gateway.Load(*config)
	if err != nil {
		return err
	}
	jwtCfg := cfg.HTTP.JWT
	life := jwtCfg.TTL
	if set["ttl"] {
		life = *ttl
	}
	m, err := auth.NewMinter(jwtCfg, *key, *kid)
	if err != nil {
		return err
	}
	tok, exp, err := m.Mint(*sub, roleList, life)
	if err != nil {
		return err
	}
	// The gateway's own verifier has the last word, so no token is printed that it would
	// refuse. Under jwks_url that needs the identity provider's document: not fetched here.
	if m.Checked() {
		v, err := auth.NewVerifier(context.Background(), jwtCfg, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		if _, err := v.Verify(context.Background(), tok); err != nil {
			return fmt.Errorf("the minted token does not verify under this config: %w", err)
		}
	} else {
		fmt.Fprintf(stderr, "note: not checked against http.jwt.jwks_url; the gateway accepts it only if that document "+
			"holds this key's public half (kid %q)\n", m.Kid())
	}
	desc := m.Algorithm()
	if m.Kid() != "" {
		desc += " kid " + m.Kid()
	}
	fmt.Fprintf(stderr, "%s token for %q, roles [%s], expires %s\n", desc, *sub, strings.Join(roleList, ","),
		exp.UTC().Format(time.RFC3339))
	fmt.Fprintln(stdout, tok)
	return nil
}
