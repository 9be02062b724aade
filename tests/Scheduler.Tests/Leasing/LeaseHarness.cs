using System.Buffers;
using Potluck.Protocol;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

internal sealed class FakeModuleCache : IModuleCache
{
    public HashSet<string> Held { get; } = [];

    public bool Contains(ReadOnlySpan<byte> sha256) => Held.Contains(Convert.ToHexString(sha256));
}

/// <summary>
/// One requester and one provider wired together in memory. Every message goes through the frame codec;
/// <see cref="Drop"/> decides which are lost. Time only moves when a test says so.
/// </summary>
internal sealed class LeaseHarness
{
    public static readonly DateTimeOffset T0 = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);

    public LeaseHarness(LeaseOptions? options = null, ProviderPolicy? policy = null, int cores = 2, long memory = 1L << 30)
    {
        Options = options ?? new LeaseOptions();
        ProviderKey = PrivateKey.FromRandom(new Random(1));
        RequesterKey = PrivateKey.FromRandom(new Random(2));
        Capacity = new ProviderCapacity(cores, memory);
        Registry = new ProviderLeaseRegistry(ProviderKey, policy ?? new ProviderPolicy { PricePerMegaFuel = 10, RuntimeVersion = "wasmtime 50.0.1", MinRunTime = TimeSpan.FromHours(1) },
            Capacity, Modules, Options);
        Now = T0;
    }

    public LeaseOptions Options { get; }
    public PrivateKey ProviderKey { get; }
    public PrivateKey RequesterKey { get; }
    public ProviderCapacity Capacity { get; }
    public FakeModuleCache Modules { get; } = new();
    public ProviderLeaseRegistry Registry { get; }
    public DateTimeOffset Now { get; set; }

    public RequesterLease? Requester { get; private set; }
    public ProviderLease? Provider { get; private set; }
    public LeaseExecution? Execution { get; private set; }
    public bool Aborted { get; private set; }
    public LeaseOutcome? RequesterOutcome { get; private set; }
    public LeaseOutcome? ProviderOutcome { get; private set; }
    public DateTimeOffset? RequesterTimer { get; private set; }
    public DateTimeOffset? ProviderTimer { get; private set; }

    public List<LeaseMessage> ToProvider { get; } = [];
    public List<LeaseMessage> ToRequester { get; } = [];
    public List<LeaseMessage> SentByProvider { get; } = [];
    public List<LeaseMessage> SentByRequester { get; } = [];

    /// <summary>Returns true for a message that the network loses.</summary>
    public Func<LeaseMessage, bool> Drop { get; set; } = _ => false;

    public static LeaseWork Work(int moduleSize = 1000, int inputSize = 300, TimeSpan? deadline = null, long maxPrice = 20) => new()
    {
        Module = Enumerable.Range(0, moduleSize).Select(i => (byte)(i * 7)).ToArray(),
        Input = Enumerable.Range(0, inputSize).Select(i => (byte)i).ToArray(),
        FuelLimit = 5_000_000,
        MemoryLimitBytes = 64 << 20,
        Deadline = T0 + (deadline ?? TimeSpan.FromMinutes(10)),
        MaxPricePerMegaFuel = maxPrice,
    };

    public void StartRequester(LeaseWork work, ulong requestId = 77)
    {
        Requester = new RequesterLease(RequesterKey, ProviderKey.PublicKey, requestId, work, Options);
        ApplyRequester(Requester.Start(Now));
    }

    /// <summary>Delivers queued messages both ways until nothing is left in flight.</summary>
    public void Pump()
    {
        for (var rounds = 0; rounds < 10_000 && (ToProvider.Count > 0 || ToRequester.Count > 0); rounds++)
        {
            var toProvider = ToProvider.ToList();
            ToProvider.Clear();
            foreach (var m in toProvider)
            {
                DeliverToProvider(m);
            }
            var toRequester = ToRequester.ToList();
            ToRequester.Clear();
            foreach (var m in toRequester)
            {
                DeliverToRequester(m);
            }
        }
    }

    public void DeliverToProvider(LeaseMessage message)
    {
        var dispatch = Registry.Handle(RequesterKey.PublicKey, RoundTrip(message), Now);
        if (dispatch.Lease is not null)
        {
            Provider = dispatch.Lease;
        }
        ApplyProvider(dispatch.Step);
    }

    public void DeliverToRequester(LeaseMessage message) => ApplyRequester(Requester!.Handle(RoundTrip(message), Now));

    /// <summary>Advances time to <paramref name="to"/>, firing each side's timers when due, delivering as it goes.</summary>
    public void RunUntil(DateTimeOffset to, Action<DateTimeOffset>? each = null)
    {
        while (true)
        {
            Pump();
            var next = new[] { RequesterTimer, ProviderTimer }.Where(t => t is not null && t <= to).Min();
            if (next is null)
            {
                Now = to;
                return;
            }
            Now = next.Value > Now ? next.Value : Now;
            each?.Invoke(Now);
            if (RequesterTimer <= Now)
            {
                RequesterTimer = null;
                ApplyRequester(Requester!.OnTimer(Now));
            }
            if (ProviderTimer <= Now)
            {
                ProviderTimer = null;
                ApplyProvider(Provider!.OnTimer(Now));
            }
        }
    }

    public void CompleteExecution(ExecutionReport report) => ApplyProvider(Provider!.OnExecutionCompleted(report, Now));

    public void ApplyProvider(LeaseStep step)
    {
        foreach (var m in step.Send)
        {
            SentByProvider.Add(m);
            if (!Drop(m))
            {
                ToRequester.Add(m);
            }
        }
        ProviderTimer = step.NextTimer ?? (step.Outcome is null ? ProviderTimer : null);
        Execution = step.Execute ?? Execution;
        Aborted |= step.AbortExecution;
        if (step.Outcome is not null)
        {
            Assert.That(ProviderOutcome, Is.Null, "the provider reports its outcome once");
            ProviderOutcome = step.Outcome;
        }
    }

    public void ApplyRequester(LeaseStep step)
    {
        foreach (var m in step.Send)
        {
            SentByRequester.Add(m);
            if (!Drop(m))
            {
                ToProvider.Add(m);
            }
        }
        RequesterTimer = step.NextTimer ?? (step.Outcome is null ? RequesterTimer : null);
        if (step.Outcome is not null)
        {
            Assert.That(RequesterOutcome, Is.Null, "the requester reports its outcome once");
            RequesterOutcome = step.Outcome;
        }
    }

    private LeaseMessage RoundTrip(LeaseMessage message)
    {
        var sequence = new ReadOnlySequence<byte>(LeaseCodec.EncodeFrame(message));
        Assert.That(LeaseCodec.TryReadFrame(ref sequence, Options, out var decoded), Is.EqualTo(DecodeStatus.Done), message.GetType().Name);
        Assert.That(sequence.IsEmpty);
        return decoded!;
    }
}
