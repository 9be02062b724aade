using System.Buffers;
using Potluck.Protocol.Runtime;
using Potluck.Protocol;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Tests.Leasing;

namespace Potluck.Scheduler.Tests.Cores;

/// <summary>
/// Requesting and Providing through the one shell: a requester's <see cref="RequesterLease"/> and a provider's
/// <see cref="ProviderLease"/> (admitted by its <see cref="ProviderLeaseRegistry"/>) each in a <see cref="CoreShell{TStep}"/>,
/// with fake effects that carry every message through the frame codec into the other side's shell, and timers on a
/// <see cref="VirtualClock"/>: time moves only when a test advances it.
/// </summary>
public class LeaseShellTests
{
    private static readonly DateTimeOffset T0 = LeaseHarness.T0;

    [Test]
    public void Requesting_ProviderBusy_LeaseEndsRejectedBusyAtOnce_NoTimerLeft()
    {
        var h = new ShellHarness();
        h.Capacity.Pause("paused by the operator");
        h.Start();

        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Rejected));
        Assert.That(h.RequesterOutcome.RejectReason, Is.EqualTo(LeaseRejectReason.Busy), "busy is 'wait and retry' for the job, never a failure");
        Assert.That(h.RequesterEndedAt, Is.EqualTo(T0));
        Assert.That(h.RequesterShell.IsEnded, Is.True);
        Assert.That(h.Time.GetUtcNow(), Is.EqualTo(T0));
    }

    [Test]
    public void Requesting_ProviderLost_RequestRetriedEachIntervalOnVirtualTime_ThenExpired()
    {
        var h = new ShellHarness { Drop = m => m is LeaseRequest };
        h.Start();

        h.Time.Advance(h.Options.RetryInterval - TimeSpan.FromTicks(1));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(1), "not retried a tick early");
        h.Time.Advance(TimeSpan.FromTicks(1));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(2), "retried after the interval");

        var expiry = T0 + h.Options.RetryInterval * h.Options.MaxAttempts;
        h.Time.Advance(expiry - h.Time.GetUtcNow() - TimeSpan.FromTicks(1));
        Assert.That(h.RequesterOutcome, Is.Null);
        h.Time.Advance(TimeSpan.FromTicks(1));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.RequesterOutcome.Detail, Is.EqualTo($"no answer after {h.Options.MaxAttempts} requests"));
        Assert.That(h.RequesterEndedAt, Is.EqualTo(expiry));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(h.Options.MaxAttempts));
    }

    [Test]
    public void Requesting_StreamLost_RequestRepeatedAfterTheLostStreamWait_NotTheRetryInterval()
    {
        // The connection the request went out on was closed as it arrived (README, "Slow leases in the simulation"): the
        // request never reached the provider and no answer can come on that stream.
        var first = true;
        var h = new ShellHarness { Drop = m => m is LeaseRequest && first && !(first = false) };
        h.Start();
        h.Time.Advance(TimeSpan.FromMilliseconds(30));
        h.RequesterShell.Post(now => h.Requester.OnStreamLost(now));

        h.Time.Advance(h.Options.LostStreamRetry - TimeSpan.FromTicks(1));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(1), "not repeated a tick early");
        Assert.That(h.SentByRequester.OfType<LeaseAccept>(), Is.Empty);
        h.Time.Advance(TimeSpan.FromTicks(1));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(2), "repeated once the lost stream's wait is over");
        Assert.That(h.SentByRequester.OfType<LeaseAccept>().Count(), Is.EqualTo(1), "the provider offered at once: the lease goes on");
        Assert.That(h.Time.GetUtcNow() - T0, Is.LessThan(h.Options.RetryInterval / 10));
    }

    [Test]
    public void Requesting_StreamLostAgainAndAgain_StillAtMostMaxAttemptsRequests_ThenExpired()
    {
        var h = new ShellHarness { Drop = m => m is LeaseRequest };
        h.Start();
        for (var i = 0; i < 10 && h.RequesterOutcome is null; i++)
        {
            h.RequesterShell.Post(now => h.Requester.OnStreamLost(now));
            h.Time.Advance(h.Options.LostStreamRetry);
        }

        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(h.Options.MaxAttempts), "a stream that keeps breaking costs no more requests");
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.RequesterOutcome.Detail, Is.EqualTo($"no answer after {h.Options.MaxAttempts} requests"));
        Assert.That(h.RequesterEndedAt, Is.EqualTo(T0 + (h.Options.LostStreamRetry * h.Options.MaxAttempts)));
    }

    [Test]
    public void Requesting_ProviderUnreachable_LeaseEndsUnreachableAtOnce_NotAfterTheRetryInterval()
    {
        // The dial failed (partitioned, refused): the request never left; repeating it would fail the same way.
        var h = new ShellHarness { Drop = m => m is LeaseRequest };
        h.Start();
        h.RequesterShell.Post(now => h.Requester.OnUnreachable(now));

        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Unreachable));
        Assert.That(h.RequesterOutcome.Detail, Is.EqualTo("provider unreachable after 1 request"));
        Assert.That(h.RequesterEndedAt, Is.EqualTo(T0), "ended at once: the job moves on to another provider");
        Assert.That(h.RequesterShell.IsEnded, Is.True);
        Assert.That(h.SentByRequester.OfType<LeaseCancel>(), Is.Empty, "nothing to cancel at a provider that never heard of it");
    }

    [Test]
    public void Running_ProviderUnreachable_ChangesNothing()
    {
        var h = new ShellHarness();
        h.Start();
        var sent = h.SentByRequester.Count;
        h.RequesterShell.Post(now => h.Requester.OnUnreachable(now));
        h.Time.Advance(h.Options.LostStreamRetry);

        Assert.That(h.RequesterOutcome?.Kind, Is.Not.EqualTo(LeaseOutcomeKind.Unreachable), "an agreed lease keeps its own timers");
        Assert.That(h.SentByRequester.Count, Is.EqualTo(sent));
    }

    [Test]
    public void Running_StreamLost_ChangesNothing()
    {
        var h = new ShellHarness();
        h.Start();
        var sent = h.SentByRequester.Count;
        h.RequesterShell.Post(now => h.Requester.OnStreamLost(now));
        h.Time.Advance(h.Options.LostStreamRetry);
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(1));
        Assert.That(h.SentByRequester.OfType<LeaseAccept>().Count(), Is.EqualTo(1), "accepted and acknowledged: nothing to repeat");
        Assert.That(h.SentByRequester.Count, Is.EqualTo(sent));
    }

    [Test]
    public void Requesting_ProviderFallsSilentWhileRunning_LeaseExpiresAfterMissedHeartbeats()
    {
        var h = new ShellHarness();
        h.Start();
        Assert.That(h.Execution, Is.Not.Null);
        var lastHeard = h.Time.GetUtcNow();
        h.DropToRequester = m => m is LeaseHeartbeat;

        var silence = h.Options.HeartbeatInterval * h.Options.MissedHeartbeatsBeforeExpiry;
        h.Time.Advance(silence - TimeSpan.FromTicks(1));
        Assert.That(h.RequesterOutcome, Is.Null);
        h.Time.Advance(TimeSpan.FromTicks(1));

        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.RequesterOutcome.Detail, Is.EqualTo("provider fell silent"));
        Assert.That(h.RequesterEndedAt, Is.EqualTo(lastHeard + silence));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled), "the requester's cancel reached the provider");
        Assert.That(h.Aborted, Is.True, "the provider stopped the task");
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void Providing_InputNeverArrives_LeaseEndsAtTheInputDeadlineOnVirtualTime_CoreFreed()
    {
        var h = new ShellHarness { Drop = m => m is LeaseData };
        h.Start();
        Assert.That(h.ProviderShell, Is.Not.Null, "offered and accepted");
        Assert.That(h.Capacity.CoresInUse, Is.EqualTo(1), "the core is held from the offer");

        var content = h.Work.Module.Length + h.Work.Input.Length;
        var deadline = T0 + h.Options.InputGrace + TimeSpan.FromSeconds((double)content / h.Options.MinContentBytesPerSecond);
        h.Time.Advance(deadline - T0 - TimeSpan.FromTicks(1));
        Assert.That(h.ProviderOutcome, Is.Null, "heartbeats flowed; not a tick early");
        Assert.That(h.SentByProvider.OfType<LeaseHeartbeat>().Count(), Is.GreaterThanOrEqualTo(2));
        h.Time.Advance(TimeSpan.FromTicks(1));

        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.ProviderOutcome.Detail, Is.EqualTo("module and input did not arrive in time"));
        Assert.That(h.ProviderEndedAt, Is.EqualTo(deadline));
        Assert.That(h.Capacity.CoresInUse, Is.Zero, "the squatted core is free again");
        Assert.That(h.Execution, Is.Null, "nothing ran");
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled), "the requester was told");
        Assert.That(h.ProviderShell!.IsEnded && h.RequesterShell.IsEnded, Is.True);
    }

    [Test]
    public void Providing_RunCompletesAfterVirtualMinutes_BothSidesCompleteWithTheResult_HeartbeatsOnTheClock()
    {
        var h = new ShellHarness();
        h.Start();
        Assert.That(h.Execution, Is.Not.Null);

        h.Time.Advance(TimeSpan.FromMinutes(2));
        Assert.That(h.ProviderOutcome, Is.Null);
        Assert.That(h.SentByProvider.OfType<LeaseHeartbeat>().Count(), Is.EqualTo(1 + 120 / 5), "one on accept, then every 5 s of virtual time");
        var output = new byte[] { 1, 2, 3 };
        h.ProviderShell!.Post(now => h.Provider!.OnExecutionCompleted(new ExecutionReport(ExecutionStatus.Success, 42, 0, output), now));

        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(h.RequesterOutcome.Result!.Output, Is.EqualTo(output));
        Assert.That(h.RequesterOutcome.Result.FuelUsed, Is.EqualTo(42));
        Assert.That(h.RequesterEndedAt, Is.EqualTo(T0 + TimeSpan.FromMinutes(2)));
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void Providing_RequesterCancels_ProviderStopsTheTaskAndFreesTheCore()
    {
        var h = new ShellHarness();
        h.Start();
        h.Time.Advance(TimeSpan.FromSeconds(7));

        h.RequesterShell.Post(now => h.Requester.Cancel("requester gave up", now));

        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.ProviderOutcome.Detail, Does.StartWith("cancelled by requester"));
        Assert.That(h.Aborted, Is.True);
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void EffectFailure_OnTheRequesterSide_CancelsTheLeaseThroughTheCore()
    {
        var h = new ShellHarness();
        h.FailRequesterSendOnce = m => m is LeaseHeartbeat;
        h.Start();
        h.Time.Advance(h.Options.HeartbeatInterval);

        Assert.That(h.RequesterShell.EffectFailures, Is.EqualTo(1));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.RequesterOutcome.Detail, Does.Contain("could not send"));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled), "the core's cancel still reached the provider");
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    /// <summary>One requester lease and the provider's leases, each in its own shell, wired through fake effects.</summary>
    private sealed class ShellHarness
    {
        private readonly ProviderLeaseRegistry _registry;
        private readonly FakeModuleCache _modules = new();

        public ShellHarness()
        {
            Time = new VirtualClock(T0);
            var providerKey = PrivateKey.FromRandom(new Random(1));
            RequesterKey = PrivateKey.FromRandom(new Random(2));
            Capacity = new ProviderCapacity(2, 1L << 30);
            _registry = new ProviderLeaseRegistry(providerKey,
                new ProviderPolicy { PricePerMegaFuel = 10, RuntimeVersion = "wasmtime 50.0.1", MinRunTime = TimeSpan.FromHours(1) },
                Capacity, _modules, Options);
            Work = LeaseHarness.Work();
            Requester = new RequesterLease(RequesterKey, providerKey.PublicKey, 77, Work, Options);
            RequesterShell = new CoreShell<LeaseStep>(new RequesterEffects(this), Time);
        }

        public LeaseOptions Options { get; } = new();
        public VirtualClock Time { get; }
        public PrivateKey RequesterKey { get; }
        public ProviderCapacity Capacity { get; }
        public LeaseWork Work { get; }
        public RequesterLease Requester { get; }
        public CoreShell<LeaseStep> RequesterShell { get; }
        public ProviderLease? Provider { get; private set; }
        public CoreShell<LeaseStep>? ProviderShell { get; private set; }
        public Func<LeaseMessage, bool> Drop { get; set; } = _ => false;
        public Func<LeaseMessage, bool> DropToRequester { get; set; } = _ => false;
        public Func<LeaseMessage, bool>? FailRequesterSendOnce { get; set; }
        public List<LeaseMessage> SentByRequester { get; } = [];
        public List<LeaseMessage> SentByProvider { get; } = [];
        public LeaseOutcome? RequesterOutcome { get; private set; }
        public LeaseOutcome? ProviderOutcome { get; private set; }
        public DateTimeOffset? RequesterEndedAt { get; private set; }
        public DateTimeOffset? ProviderEndedAt { get; private set; }
        public LeaseExecution? Execution { get; private set; }
        public bool Aborted { get; private set; }

        public void Start() => RequesterShell.Post(now => Requester.Start(now));

        private void ToProvider(LeaseMessage message)
        {
            if (ProviderShell is { } shell)
            {
                shell.Post(now => _registry.Handle(RequesterKey.PublicKey, message, now).Step);
                return;
            }
            // Admission: the registry decides (the provider's shell does this under its lock), then the new lease's shell runs it.
            var dispatch = _registry.Handle(RequesterKey.PublicKey, message, Time.GetUtcNow());
            if (dispatch.Lease is { } lease)
            {
                Provider = lease;
                ProviderShell = new CoreShell<LeaseStep>(new ProviderEffects(this), Time);
                ProviderShell.TryEnqueue(dispatch.Step);
                ProviderShell.Pump();
                return;
            }
            foreach (var m in dispatch.Step.Send)
            {
                SentByProvider.Add(m);
                ToRequester(m);
            }
        }

        private void ToRequester(LeaseMessage message)
        {
            if (!Drop(message) && !DropToRequester(message))
            {
                RequesterShell.Post(now => Requester.Handle(RoundTrip(message), now));
            }
        }

        private LeaseMessage RoundTrip(LeaseMessage message)
        {
            var sequence = new ReadOnlySequence<byte>(LeaseCodec.EncodeFrame(message));
            Assert.That(LeaseCodec.TryReadFrame(ref sequence, Options, out var decoded), Is.EqualTo(DecodeStatus.Done));
            return decoded!;
        }

        private static CoreWake WakeOf(LeaseStep step) =>
            step.Outcome is not null ? CoreWake.Ended : step.NextTimer is { } due ? CoreWake.WakeAt(due) : CoreWake.Keep;

        private sealed class RequesterEffects(ShellHarness h) : ICoreEffects<LeaseStep>
        {
            public CoreWake WakeOf(LeaseStep step) => ShellHarness.WakeOf(step);

            public ValueTask PerformAsync(LeaseStep step, CancellationToken ct)
            {
                foreach (var m in step.Send)
                {
                    if (h.FailRequesterSendOnce?.Invoke(m) == true)
                    {
                        h.FailRequesterSendOnce = null;
                        throw new IOException("could not send");
                    }
                    h.SentByRequester.Add(m);
                    if (!h.Drop(m))
                    {
                        h.ToProvider(h.RoundTrip(m));
                    }
                }
                if (step.Outcome is { } outcome)
                {
                    Assert.That(h.RequesterOutcome, Is.Null, "the requester reports its outcome once");
                    h.RequesterOutcome = outcome;
                    h.RequesterEndedAt = h.Time.GetUtcNow();
                }
                return ValueTask.CompletedTask;
            }

            public LeaseStep OnTimer(DateTimeOffset now) => h.Requester.OnTimer(now);

            public LeaseStep OnEffectFailed(LeaseStep step, Exception error, DateTimeOffset now) => h.Requester.Cancel(error.Message, now);
        }

        private sealed class ProviderEffects(ShellHarness h) : ICoreEffects<LeaseStep>
        {
            public CoreWake WakeOf(LeaseStep step) => ShellHarness.WakeOf(step);

            public ValueTask PerformAsync(LeaseStep step, CancellationToken ct)
            {
                foreach (var m in step.Send)
                {
                    h.SentByProvider.Add(m);
                    h.ToRequester(m);
                }
                h.Execution = step.Execute ?? h.Execution;
                h.Aborted |= step.AbortExecution;
                if (step.Outcome is { } outcome)
                {
                    Assert.That(h.ProviderOutcome, Is.Null, "the provider reports its outcome once");
                    h.ProviderOutcome = outcome;
                    h.ProviderEndedAt = h.Time.GetUtcNow();
                }
                return ValueTask.CompletedTask;
            }

            public LeaseStep OnTimer(DateTimeOffset now) => h.Provider!.OnTimer(now);

            public LeaseStep OnEffectFailed(LeaseStep step, Exception error, DateTimeOffset now) => h.Provider!.Cancel(error.Message, now);
        }
    }
}
