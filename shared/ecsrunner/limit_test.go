package ecsrunner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/smithy-go"

	"github.com/aishell/aishell/shared/session"
)

func TestLimiterSpacesCalls(t *testing.T) {
	tests := []struct {
		rate  float64
		calls int
		// want is when each call may go, from the first.
		want []time.Duration
	}{
		{rate: 1, calls: 3, want: []time.Duration{0, time.Second, 2 * time.Second}},
		{rate: 4, calls: 6, want: []time.Duration{0, 0, 0, 0, 250 * time.Millisecond, 500 * time.Millisecond}},
		{rate: 0.5, calls: 2, want: []time.Duration{0, 2 * time.Second}},
		// 0 means the default of 10 a second.
		{rate: 0, calls: 11, want: []time.Duration{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%v a second", tc.rate), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLimiter(tc.rate)
				t0 := time.Now()
				var got []time.Duration
				for range tc.calls {
					if err := l.wait(context.Background()); err != nil {
						t.Fatal(err)
					}
					got = append(got, time.Since(t0))
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("got %v; want %v", got, tc.want)
				}
			})
		})
	}
}

func TestLimiterRefillsWhileIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(2)
		ctx := context.Background()
		for range 2 {
			l.wait(ctx)
		}
		time.Sleep(time.Second)
		t0 := time.Now()
		for range 2 {
			l.wait(ctx)
		}
		if waited := time.Since(t0); waited != 0 {
			t.Errorf("after a second of rest: waited %v for 2 calls; want 0", waited)
		}
	})
}

func TestLimiterGivesUpWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(1)
		l.wait(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := l.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v; want the context's deadline", err)
		}
	})
}

// Many Runs of one Runner, as a refill starting warm tasks, share one rate.
func TestRunsShareTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := &fakeECS{}
		r := newRunner(fake, nil, Config{RunTaskRate: 5})
		t0 := time.Now()
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Go(func() {
				if _, err := r.Run(context.Background(), session.TaskSpec{
					TaskID: fmt.Sprintf("t_%d", i), Warm: true}); err != nil {
					t.Errorf("Run: %v", err)
				}
			})
		}
		wg.Wait()

		var got []time.Duration
		for _, at := range fake.runs() {
			got = append(got, at.Sub(t0))
		}
		slices.Sort(got)
		want := []time.Duration{0, 0, 0, 0, 0}
		for i := 1; i <= 7; i++ {
			want = append(want, time.Duration(i)*200*time.Millisecond)
		}
		if !slices.Equal(got, want) {
			t.Errorf("RunTask calls at %v; want %v", got, want)
		}
	})
}

func TestThrottledRunBacksOff(t *testing.T) {
	throttled := &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}
	denied := &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "no"}
	tests := []struct {
		name string
		// errs are the answers of the first calls; later calls start a task.
		errs     []error
		wantCode string
		// wantAt is when each call went, from the first.
		wantAt []time.Duration
	}{
		{"not throttled", nil, "", []time.Duration{0}},
		{"throttled twice", []error{throttled, throttled}, "",
			[]time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond}},
		{"throttled on every attempt", []error{throttled, throttled, throttled, throttled, throttled},
			"ThrottlingException", []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond,
				1400 * time.Millisecond}},
		{"denied: not retried", []error{denied}, "AccessDeniedException", []time.Duration{0}},
		{"throttled, then denied", []error{throttled, denied}, "AccessDeniedException",
			[]time.Duration{0, 200 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &fakeECS{runTask: func(n int, in *ecs.RunTaskInput) (*ecs.RunTaskOutput, error) {
					if n <= len(tc.errs) {
						return nil, tc.errs[n-1]
					}
					return started("t_1"), nil
				}}
				r := newRunner(fake, nil, Config{})
				r.backoff.jitter = func(d time.Duration) time.Duration { return d }
				t0 := time.Now()
				_, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_1", Warm: true})
				if got := session.ErrorCode(err); got != tc.wantCode {
					t.Errorf("got %v (code %q); want code %q", err, got, tc.wantCode)
				}
				var at []time.Duration
				for _, c := range fake.runs() {
					at = append(at, c.Sub(t0))
				}
				if !slices.Equal(at, tc.wantAt) {
					t.Errorf("calls at %v; want %v", at, tc.wantAt)
				}
			})
		})
	}
}

func TestBackoffGivesUpWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := &fakeECS{runTask: func(int, *ecs.RunTaskInput) (*ecs.RunTaskOutput, error) {
			return nil, &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}
		}}
		r := newRunner(fake, nil, Config{SharedAccessPoint: true})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", SessionID: "s_1"})
		if session.ErrorCode(err) != "ThrottlingException" || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v; want the throttling error and the context's deadline", err)
		}
		if !strings.HasPrefix(err.Error(), "run task t_1 for session s_1: ") {
			t.Errorf("got %q; want it to name the step", err)
		}
	})
}

func TestDefaultJitter(t *testing.T) {
	b := defaultBackoff()
	for _, d := range []time.Duration{0, time.Nanosecond, 200 * time.Millisecond, 2 * time.Second} {
		for range 100 {
			if got := b.jitter(d); got < d/2 || got > d {
				t.Fatalf("jitter(%v): got %v; want between %v and %v", d, got, d/2, d)
			}
		}
	}
}
