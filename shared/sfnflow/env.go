package sfnflow

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// SessionConfigFromEnv reads the session rules' configuration of the
// control plane's Lambdas: ENABLE_WARM_POOL (true unless false), and either
// RELAY_ID with RELAY_CLIENT_URL and RELAY_TASK_URL for one fixed relay, or
// without RELAY_ID each new session assigned to a healthy relay from the
// store, a relay being healthy while its heartbeat is younger than
// RELAY_MAX_AGE (90s). Its error names every variable that is wrong.
func SessionConfigFromEnv() (session.Config, error) {
	e := env{get: os.Getenv}
	cfg := e.session()
	return cfg, e.err()
}

// StepsConfigFromEnv reads the steps Lambdas' configuration: the session
// configuration of SessionConfigFromEnv, and for the refill WARM_POOL_SIZE
// (2 per relay), WARM_MAX_AGE (30m), WARM_CLAIM_TTL (2m),
// WARM_START_TIMEOUT (1m) and REAP_GRACE (2m).
func StepsConfigFromEnv() (StepsConfig, error) {
	return stepsConfigFrom(os.Getenv)
}

func stepsConfigFrom(getenv func(string) string) (StepsConfig, error) {
	e := env{get: getenv}
	var cfg StepsConfig
	cfg.Session = e.session()
	cfg.Pool.Target = e.integer("WARM_POOL_SIZE", 2, 0, 64)
	cfg.Pool.MaxAge = e.duration("WARM_MAX_AGE")
	cfg.Pool.ClaimTTL = e.duration("WARM_CLAIM_TTL")
	cfg.Pool.StartTimeout = e.duration("WARM_START_TIMEOUT")
	cfg.ReapGrace = e.duration("REAP_GRACE")
	return cfg, e.err()
}

// env reads variables and gathers what is wrong with them.
type env struct {
	get  func(string) string
	errs []error
}

func (e *env) err() error { return errors.Join(e.errs...) }

func (e *env) value(name string) string { return strings.TrimSpace(e.get(name)) }

func (e *env) session() session.Config {
	cfg := session.Config{
		RelayID:        e.value("RELAY_ID"),
		ClientRelayURL: e.value("RELAY_CLIENT_URL"),
		TaskRelayURL:   e.value("RELAY_TASK_URL"),
		WarmPool:       e.boolean("ENABLE_WARM_POOL", true),
		RelayMaxAge:    e.duration("RELAY_MAX_AGE"),
	}
	cfg.AssignRelays = cfg.RelayID == ""
	if !cfg.AssignRelays && (cfg.ClientRelayURL == "" || cfg.TaskRelayURL == "") {
		e.errs = append(e.errs, errors.New("RELAY_ID is set: RELAY_CLIENT_URL and RELAY_TASK_URL are required with it"))
	}
	return cfg
}

func (e *env) boolean(name string, def bool) bool {
	v := e.value(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q is not true or false", name, v))
	}
	return b
}

func (e *env) integer(name string, def, lo, hi int) int {
	v := e.value(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		e.errs = append(e.errs, fmt.Errorf("%s=%q is not a number from %d to %d", name, v, lo, hi))
	}
	return n
}

// duration reads a positive duration such as 90s; unset means the default
// (zero, filled in later).
func (e *env) duration(name string) time.Duration {
	v := e.value(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.errs = append(e.errs, fmt.Errorf("%s=%q is not a positive duration such as 90s", name, v))
		return 0
	}
	return d
}
