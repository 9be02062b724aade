using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Tests.Leasing;
using Potluck.Scheduler.Topics;

namespace Potluck.Scheduler.Tests.Providing;

/// <summary>
/// A real <see cref="ProviderService"/> on a real host (<see cref="TestHosts"/>: Noise and Yamux on a simulated network under
/// a <see cref="VirtualTimeDriver"/>), with a real in-memory provider <see cref="CreditLedger"/> on the driver's clock, a
/// scripted executor in place of the sandbox, and a requester that speaks the lease protocol itself (<see cref="LeaseStream"/>)
/// so that tests can lie, squat or flood. Cores held are read from <see cref="ProviderService.Capacity"/>, the accounting
/// every lease holds a core through from its offer to its end.
/// </summary>
internal sealed class ProviderHarness : IAsyncDisposable
{
    public const long Price = 10;

    private readonly TestHosts _hosts;

    private ProviderHarness(TestHosts hosts, TestHosts.TestNode provider, TestHosts.TestNode requester, PrivateKey providerKey,
        PrivateKey requesterKey, ProviderOptions options)
    {
        _hosts = hosts;
        ProviderNode = provider;
        RequesterNode = requester;
        ProviderKey = providerKey;
        RequesterKey = requesterKey;
        Options = options;
        Ledger = CreditLedger.Open("", providerKey.PeerId, options.Credits, hosts.Time, inMemory: true);
        Service = new ProviderService(provider.Host, providerKey, new InMemoryTopicHub().Join(providerKey.PeerId), Executor, Modules, Ledger,
            options, provider.Runtime, NullLogger<ProviderService>.Instance);
        Service.LeaseEnded += (_, id, outcome) => Ended[id] = (outcome, hosts.Time.GetUtcNow());
        Service.Start();
    }

    /// <summary>The provider's defaults here: 4 cores, all of them open to strangers, price <see cref="Price"/>.</summary>
    public static ProviderOptions Defaults { get; } = new()
    {
        Cores = 4,
        PricePerMegaFuel = Price,
        StrangerCoreShare = 1,
        MinRunTime = TimeSpan.FromMinutes(1),
        Credits = new CreditsOptions { InitialGrant = 0 },
    };

    public static async Task<ProviderHarness> StartAsync(VirtualTimeDriver driver, int seed, Func<ProviderOptions, ProviderOptions>? configure = null)
    {
        var hosts = new TestHosts(driver, seed);
        var random = new Random(seed);
        var providerKey = PrivateKey.FromRandom(random);
        var requesterKey = PrivateKey.FromRandom(random);
        var provider = await hosts.StartAsync(key: providerKey);
        var requester = await hosts.StartAsync(key: requesterKey);
        return new ProviderHarness(hosts, provider, requester, providerKey, requesterKey, configure?.Invoke(Defaults) ?? Defaults);
    }

    public TestHosts.TestNode ProviderNode { get; }

    public TestHosts.TestNode RequesterNode { get; }

    public PrivateKey ProviderKey { get; }

    public PrivateKey RequesterKey { get; }

    public PeerId Requester => RequesterKey.PeerId;

    public ProviderOptions Options { get; }

    public CreditLedger Ledger { get; }

    public ScriptedExecutor Executor { get; } = new();

    public FakeModuleCache Modules { get; } = new();

    public ProviderService Service { get; }

    public VirtualClock Time => _hosts.Time;

    /// <summary>Leases ended, by request id: the outcome and when.</summary>
    public ConcurrentDictionary<ulong, (LeaseOutcome Outcome, DateTimeOffset At)> Ended { get; } = new();

    /// <summary>Work the requester asks for: a small module and input, the given price ceiling.</summary>
    public LeaseWork Work(long maxPrice = Price, bool debitNotes = false) => new()
    {
        Module = Enumerable.Range(0, 1000).Select(i => (byte)(i * 7)).ToArray(),
        Input = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray(),
        FuelLimit = 5_000_000,
        MemoryLimitBytes = 64 << 20,
        Deadline = Time.GetUtcNow() + TimeSpan.FromMinutes(10),
        MaxPricePerMegaFuel = maxPrice,
        AcceptsDebitNotes = debitNotes,
    };

    /// <summary>
    /// A lease stream to the provider from the requester, or, given <paramref name="requester"/>, from another requester on a
    /// node of its own.
    /// </summary>
    public async Task<LeaseStream> OpenAsync(PrivateKey? requester = null)
    {
        var node = requester is null ? RequesterNode : await _hosts.StartAsync(key: requester);
        await node.Host.ConnectAsync(ProviderNode.Address, CancellationToken.None);
        var stream = await node.Host.NewStreamAsync(ProviderKey.PeerId, [LeaseProtocol.IdWithReceipts], CancellationToken.None);
        return new LeaseStream(this, stream, requester ?? RequesterKey);
    }

    public async ValueTask DisposeAsync()
    {
        await Service.DisposeAsync();
        Ledger.Dispose();
        await _hosts.DisposeAsync();
    }
}

/// <summary>
/// The requester's end of a lease stream, driven by the test: each lease's <see cref="RequesterLease"/> (the real requester
/// core) answers what the provider sends, except what <see cref="Drop"/> keeps back; debit notes are paid when
/// <see cref="PayNotes"/> says so (the receipt is kept in <see cref="Receipts"/>); everything the provider sent is in
/// <see cref="Received"/>.
/// </summary>
internal sealed class LeaseStream
{
    private readonly ProviderHarness _h;
    private readonly IStream _stream;
    private readonly Dictionary<ulong, RequesterLease> _leases = [];
    private ulong _forged;

    public LeaseStream(ProviderHarness harness, IStream stream, PrivateKey requester)
    {
        _h = harness;
        _stream = stream;
        Key = requester;
        Reading = ReadAsync();
    }

    /// <summary>The requester's key: it signs the leases and receipts sent on this stream.</summary>
    public PrivateKey Key { get; }

    /// <summary>Messages the requester does not send (a squatter keeps its data back).</summary>
    public Func<LeaseMessage, bool> Drop { get; set; } = _ => false;

    /// <summary>Whether the requester pays a debit note it receives.</summary>
    public Func<SignedDebitNote, bool> PayNotes { get; set; } = _ => true;

    /// <summary>Copies of the last receipt sent again before each note after the first is paid (a flood of replays).</summary>
    public int ReplaysBeforeEachPayment { get; set; }

    /// <summary>
    /// Receipts sent before each note is paid (after the replays) that the requester signed for leases that never existed
    /// (<see cref="Forged"/>): each costs the provider a ledger look-up and must be refused with no write.
    /// </summary>
    public int ForgedBeforeEachPayment { get; set; }

    public List<LeaseMessage> Received { get; } = [];

    /// <summary>Receipts sent for debit notes, in order.</summary>
    public List<byte[]> Receipts { get; } = [];

    public Task Reading { get; }

    public IEnumerable<ReceiptAck> Acks => Received.OfType<LeaseReceiptAck>().Select(a => ReceiptProtocol.TryDecodeAck(a.Ack, out var ack) ? ack : throw new InvalidDataException("ack"));

    public RequesterLease Lease(ulong requestId) => _leases[requestId];

    /// <summary>Asks for a lease; the requester core answers the offer (accept) and sends the module and input.</summary>
    public Task RequestAsync(ulong requestId, LeaseWork work)
    {
        var lease = new RequesterLease(Key, _h.ProviderKey.PublicKey, requestId, work, _h.Options.Lease);
        _leases[requestId] = lease;
        return SendAsync(lease.Start(_h.Time.GetUtcNow()).Send);
    }

    public async Task SendAsync(IEnumerable<LeaseMessage> messages)
    {
        foreach (var message in messages)
        {
            if (!Drop(message))
            {
                await _stream.Output.WriteAsync(LeaseCodec.EncodeFrame(message));
            }
        }
    }

    /// <summary>A receipt (a replay, or one the test made) on the lease stream.</summary>
    public Task SendReceiptAsync(ulong requestId, byte[] envelope) => SendAsync([new LeaseReceipt { RequestId = requestId, Envelope = envelope }]);

    /// <summary>
    /// A receipt signed by this requester, naming this provider, for a lease that never existed (its own id each time,
    /// counted down from the largest): well-formed and correctly signed, so only the ledger can refuse it.
    /// </summary>
    public byte[] Forged(DateTimeOffset now)
    {
        var leaseId = ExecutionMapping.LeaseId(ulong.MaxValue - _forged++);
        const ulong fuel = 1_000_000;
        Receipt.TryComputeAmount(fuel, ProviderHarness.Price, out var amount);
        var receipt = new Receipt
        {
            ReceiptId = Receipt.ComputeId(leaseId, _h.ProviderKey.PeerId, Key.PeerId),
            LeaseId = leaseId,
            Requester = Key.PeerId.ToBytes(),
            Provider = _h.ProviderKey.PeerId.ToBytes(),
            FuelUsed = fuel,
            PricePerMillionFuel = ProviderHarness.Price,
            Amount = amount,
            AttestationHash = new byte[32],
            TimestampUnixMs = now.ToUnixTimeMilliseconds(),
        };
        return SignedReceipt.Create(receipt, Key).EnvelopeBytes;
    }

    private async Task ReadAsync()
    {
        var reader = _stream.Input;
        while (true)
        {
            var result = await reader.ReadAsync();
            var buffer = result.Buffer;
            var messages = new List<LeaseMessage>();
            while (true)
            {
                var status = LeaseCodec.TryReadFrame(ref buffer, _h.Options.Lease, out var message);
                if (status == DecodeStatus.Invalid)
                {
                    throw new InvalidDataException("the provider sent a malformed frame");
                }
                if (status != DecodeStatus.Done)
                {
                    break;
                }
                messages.Add(message!);
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
            foreach (var message in messages)
            {
                await OnMessageAsync(message);
            }
            if (result.IsCompleted)
            {
                return;
            }
        }
    }

    private async Task OnMessageAsync(LeaseMessage message)
    {
        Received.Add(message);
        var now = _h.Time.GetUtcNow();
        switch (message)
        {
            case LeaseDebitNote debit:
                var note = SignedDebitNote.Decode(debit.Note, _h.Options.Credits);
                Assert.That(note.IsValid, Is.True, note.Status.ToString());
                if (PayNotes(note.Value!))
                {
                    for (var i = 0; i < ReplaysBeforeEachPayment && Receipts.Count > 0; i++)
                    {
                        await SendReceiptAsync(debit.RequestId, Receipts[^1]);
                    }
                    for (var i = 0; i < ForgedBeforeEachPayment; i++)
                    {
                        await SendReceiptAsync(debit.RequestId, Forged(now));
                    }
                    var receipt = SignedReceipt.Create(note.Value!.Payment(now), Key).EnvelopeBytes;
                    Receipts.Add(receipt);
                    await SendReceiptAsync(debit.RequestId, receipt);
                }
                return;
            case LeaseReceiptAck:
                return;
        }
        if (_leases.TryGetValue(message.RequestId, out var lease))
        {
            await SendAsync(lease.Handle(message, now).Send);
        }
    }
}

/// <summary>
/// Stands in for the sandbox: counts the runs it is handed, and for a lease paid as it goes asks for the notes at
/// <see cref="Slices"/> boundaries (as the sandbox does at each slice of fuel) and stops if one is not paid.
/// </summary>
internal sealed class ScriptedExecutor : ITaskExecutor
{
    private int _runs;

    /// <summary>Slice boundaries a run passes (each a debit note on a lease paid as it goes).</summary>
    public int Slices { get; set; }

    /// <summary>Fuel a completed run reports.</summary>
    public long Fuel { get; set; } = 1_000_000;

    public int Runs => Volatile.Read(ref _runs);

    public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        Interlocked.Increment(ref _runs);
        for (var index = 0; index < Slices && execution.DebitNoteDue is { } due; index++)
        {
            if (!await due(index))
            {
                return new ExecutionReport(ExecutionStatus.Trapped, (index + 1) * execution.Terms.DebitNoteFuel, 1, ReadOnlyMemory<byte>.Empty); // stopped: the lease has ended
            }
        }
        return new ExecutionReport(ExecutionStatus.Success, Fuel, 0, "done"u8.ToArray());
    }
}
