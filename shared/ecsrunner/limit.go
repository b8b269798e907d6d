package ecsrunner

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// limiter is a token bucket: up to burst calls at once, then one call per
// interval. Waiters are served in the order they asked.
type limiter struct {
	interval time.Duration
	burst    int

	mu sync.Mutex // guards next
	// next is when the bucket would be full again had every reservation
	// so far been spent: each reservation moves it on by one interval.
	next time.Time
}

func newLimiter(perSecond float64) *limiter {
	if perSecond <= 0 {
		perSecond = DefaultRunTaskRate
	}
	return &limiter{
		interval: time.Duration(float64(time.Second) / perSecond),
		burst:    max(1, int(perSecond)),
	}
}

// wait reserves a call and blocks until its turn, or returns ctx's error.
// A reservation given up by a cancelled caller is not handed back: the
// next callers wait a little longer than they must, never less.
func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next.Add(-time.Duration(l.burst-1) * l.interval)
	l.next = l.next.Add(l.interval)
	l.mu.Unlock()

	return sleep(ctx, at.Sub(now))
}

// sleep waits for d, or returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Throttling retries: the runner, not the SDK, retries a throttled call, so
// that the number of attempts and the back-off are the ones written here.
const (
	throttleAttempts = 4
	backoffBase      = 200 * time.Millisecond
	backoffMax       = 2 * time.Second
)

// throttleCodes are the error codes by which AWS services say "slow down".
var throttleCodes = map[string]bool{
	"ThrottlingException":      true,
	"Throttling":               true,
	"TooManyRequestsException": true,
	"RequestLimitExceeded":     true,
}

func isThrottle(err error) bool { return throttleCodes[session.ErrorCode(err)] }

// backoff is how throttled calls are retried.
type backoff struct {
	attempts int
	base     time.Duration
	max      time.Duration
	// jitter picks the wait from the exponential step d; by default
	// between d/2 and d, so that throttled callers spread out.
	jitter func(d time.Duration) time.Duration
}

func defaultBackoff() backoff {
	return backoff{attempts: throttleAttempts, base: backoffBase, max: backoffMax,
		jitter: func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }}
}

// do calls op until it succeeds, fails other than by throttling, or has
// been throttled b.attempts times; it returns op's last error as it is.
func (b backoff) do(ctx context.Context, log *slog.Logger, op string, call func() error) error {
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil || !isThrottle(err) || attempt >= b.attempts {
			return err
		}
		d := min(b.base<<(attempt-1), b.max)
		d = b.jitter(d)
		log.LogAttrs(ctx, slog.LevelWarn, "throttled; retrying",
			slog.String(logging.KeyEvent, "aws_throttled"), slog.String("operation", op),
			slog.Int("attempt", attempt), slog.Int64("backoff_ms", d.Milliseconds()))
		if serr := sleep(ctx, d); serr != nil {
			return fmt.Errorf("%w (gave up waiting to retry: %w)", err, serr)
		}
	}
}

// noThrottleRetry keeps the SDK's retryer for transient faults (network,
// 5xx) but leaves throttling to backoff.do, so throttled attempts are not
// multiplied by the SDK's own.
type noThrottleRetry struct{ aws.Retryer }

func (r noThrottleRetry) IsErrorRetryable(err error) bool {
	return !isThrottle(err) && r.Retryer.IsErrorRetryable(err)
}

func (r noThrottleRetry) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return r.GetInitialToken(), nil
}

// withoutThrottleRetry wraps a client's retryer in noThrottleRetry.
func withoutThrottleRetry(retryer *aws.Retryer) {
	if *retryer != nil {
		*retryer = noThrottleRetry{*retryer}
	}
}
