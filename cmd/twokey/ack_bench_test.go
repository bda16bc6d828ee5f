package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// ackBurst is how many envelopes BenchmarkSlackAck pushes at once.
const ackBurst = 200

// burst pushes ackBurst `/tf help` envelopes at once and returns each
// one's time from being sent to its ack, as the local Slack saw them.
func (s *stack) burst(b *testing.B) []time.Duration {
	ids := make([]string, ackBurst)
	var wg sync.WaitGroup
	for i := range ackBurst {
		wg.Go(func() {
			id, err := s.slack.SlashCommand(alice, channel, "help")
			if err != nil {
				b.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	out := make([]time.Duration, 0, ackBurst)
	for _, id := range ids {
		if err := s.slack.WaitAcked(id, waitFor); err != nil {
			b.Fatal(err)
		}
		d, _ := s.slack.AckLatency(id)
		out = append(out, d)
	}
	return out
}

// percentile is the p-th percentile (0–100) of ds, nearest rank.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// BenchmarkSlackAck: ackBurst slash-command envelopes pushed at once over
// Socket Mode → each one's ack, for a real twokey serve and, as the floor,
// for a bare slack-go Socket Mode client that acks and does nothing else,
// on the same local Slack. Each iteration is one burst to each; it reports
// the worst batch's p99 and the medians of the batches' p50 and p99.
func BenchmarkSlackAck(b *testing.B) {
	s := newStack(b)
	api := slack.New(s.slack.Options().BotToken, slack.OptionAPIURL(s.slackURL), slack.OptionAppLevelToken(s.slack.Options().AppToken))

	// The floor, alone on the socket.
	bare := func() []time.Duration {
		before := s.slack.Connections()
		sm := socketmode.New(api)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for evt := range sm.Events {
				if evt.Request != nil {
					sm.Ack(*evt.Request)
				}
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		go func() { _ = sm.RunContext(ctx) }()
		if err := s.slack.WaitConnected(before+1, waitFor); err != nil {
			b.Fatal(err)
		}
		lat := s.burst(b)
		cancel()
		for deadline := time.Now().Add(5 * time.Second); s.slack.Connections() > before && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		return lat
	}

	var twP50, twP99, bareP50, bareP99 []time.Duration
	for b.Loop() {
		lat := bare()
		bareP50, bareP99 = append(bareP50, percentile(lat, 50)), append(bareP99, percentile(lat, 99))
		stop := s.startBot("--log-level", "warn")
		lat = s.burst(b)
		stop()
		twP50, twP99 = append(twP50, percentile(lat, 50)), append(twP99, percentile(lat, 99))
		b.Logf("burst %d of %d: twokey p50 %v p99 %v max %v; bare slack-go p50 %v p99 %v", len(twP99), ackBurst,
			percentile(lat, 50).Round(100*time.Microsecond), percentile(lat, 99).Round(100*time.Microsecond),
			percentile(lat, 100).Round(100*time.Microsecond), bareP50[len(bareP50)-1].Round(100*time.Microsecond),
			bareP99[len(bareP99)-1].Round(100*time.Microsecond))
	}
	_, m50, _ := spread(twP50)
	_, m99, worst := spread(twP99)
	_, b50, _ := spread(bareP50)
	_, b99, bworst := spread(bareP99)
	b.ReportMetric(ms(m50), "p50-ms")
	b.ReportMetric(ms(m99), "p99-ms")
	b.ReportMetric(ms(worst), "worst-p99-ms")
	b.ReportMetric(ms(b99), "bare-p99-ms")
	b.Logf("%d envelopes at once, %d bursts: twokey p50 %.1f ms, p99 %.1f ms (worst burst %.1f ms); bare slack-go p50 %.1f ms, p99 %.1f ms (worst %.1f ms)",
		ackBurst, len(twP99), ms(m50), ms(m99), ms(worst), ms(b50), ms(b99), ms(bworst))
}
