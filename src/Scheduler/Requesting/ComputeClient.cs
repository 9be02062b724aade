using System.Buffers.Binary;
using System.Security.Cryptography;
using Potluck.Protocol.Framing;
using Microsoft.Extensions.Logging;
using Potluck.Protocol;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Matching;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// The requester's API: <see cref="SubmitAsync"/> runs a task somewhere on the network and returns its output.
/// <list type="bullet">
/// <item>Choosing: advertisements heard on <see cref="AdvertisementProtocol.Topic"/> are kept in an
/// <see cref="AdvertisementBook"/>; <see cref="ProviderSelector"/> filters (price, memory, runtime version, refused
/// providers, those already tried) and ranks with a seeded random term, and a <see cref="NoMatch"/> explanation
/// ends a submission no provider fits.</item>
/// <item>Leasing: one <see cref="RequesterLease"/> per attempt over <see cref="LeaseProtocol.Id"/>, on one stream per
/// provider that its leases share (<see cref="LeaseChannel"/>); a rejected,
/// failed, expired or fraudulent lease is retried on another provider, up to
/// <see cref="ComputeClientOptions.MaxAttempts"/>.</item>
/// <item>Checking: the provider's attestation must be signed by it and name this lease, module, input and output.
/// A sample of results (<see cref="VerificationPolicy"/>: always for strangers, decaying to a floor) is re-run
/// locally, or with no local sandbox, on a second provider; <see cref="TaskSubmission.Replicas"/> &gt; 1 runs the
/// task on that many providers at once. A result a deterministic re-run contradicts is fraud: the provider is
/// refused and not paid, a <see cref="FraudProof"/> is published, and the task runs again elsewhere.</item>
/// <item>Paying: the ledger reserves the most a lease can cost before it starts, settles the signed receipt
/// (fuel × agreed price) before sending it (on the lease stream when the provider speaks
/// <see cref="LeaseProtocol.IdWithReceipts"/>, else on <see cref="ReceiptProtocol.Id"/>) in the background, so the
/// result does not wait for the provider's acknowledgement, and marks it delivered once acknowledged; a lease not paid for is released. Receipts settled but not acknowledged (a crash, a provider
/// away) are sent again by <see cref="RedeliverReceiptsAsync"/>; the ledger counts each receipt id once.</item>
/// </list>
/// Thread-safe: submissions may run concurrently.
/// </summary>
public sealed partial class ComputeClient : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly PrivateKey _key;
    private readonly ITopicBus _bus;
    private readonly CreditLedger _ledger;
    private readonly ReputationStore _reputation;
    private readonly FraudService _fraud;
    private readonly SandboxTaskExecutor? _verifier;
    private readonly ComputeClientOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<ComputeClient> _log;
    private readonly VerificationPolicy _policy;
    private readonly RequesterJobSettings _jobSettings;
    private readonly Func<PeerId, int> _consecutiveVerified;
    private readonly ProviderSelector _selector;
    private readonly Lock _gate = new();
    private readonly AdvertisementBook _book;
    private readonly BackgroundWork _work;
    private readonly BackgroundWork _deliveryWork;
    private readonly ISecureRandom _secure;

    /// <summary>The SHA-256 of modules submitted here, so that a lease does not hash its module again (each lease did).</summary>
    private readonly ModuleDigests _moduleDigests = new();

    /// <summary>Modules hashed for leases so far (tests).</summary>
    internal long ModulesHashed => _moduleDigests.Hashed;
    private readonly Dictionary<PeerId, LeaseChannel> _channels = [];
    /// <summary>The leases held with each provider and how many it allows this node (under <see cref="_gate"/>).</summary>
    private readonly LeaseWindows _windows;
    /// <summary>
    /// Jobs waiting only because every provider that fits has a full window, oldest first (under <see cref="_gate"/>): each
    /// reopened window wakes one of them, not all (a cancelled entry is a job that has since looked again, skipped).
    /// </summary>
    private readonly Queue<TaskCompletionSource> _windowWaiters = new();
    /// <summary>Completed at each reopened window: what the slots of a job (replicas, checks) waiting on full windows watch.</summary>
    private TaskCompletionSource _windowReopened = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _adsChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ComputeInstruments _instruments;
    private IDisposable? _subscription;
    private readonly ReceiptRedelivery _redelivery;
    private readonly Random _sampleRandom;
    /// <summary>When each sample answer was asked for, within <see cref="AdvertisementOptions.SampleWindow"/> (under <see cref="_gate"/>).</summary>
    private readonly Queue<DateTimeOffset> _samplesAsked = new();
    private int _samplesInFlight;
    private SampleFigures _sampleFigures;

    /// <param name="verifier">The local sandbox for re-running sampled results; null verifies on a second provider instead.</param>
    /// <param name="runtime">
    /// The clock; security randomness for request ids and the decision to re-run (a provider must not predict it);
    /// protocol randomness for ranking equal providers.
    /// </param>
    /// <param name="instruments">The node's metrics; null counts into instruments of the client's own.</param>
    public ComputeClient(IHost host, PrivateKey key, ITopicBus bus, CreditLedger ledger, ReputationStore reputation, FraudService fraud,
        SandboxTaskExecutor? verifier, ComputeClientOptions options, NodeRuntime runtime, ILogger<ComputeClient> log,
        ComputeInstruments? instruments = null)
    {
        _instruments = instruments ?? ComputeInstruments.Detached();
        _host = host;
        _key = key;
        _bus = bus;
        _ledger = ledger;
        _reputation = reputation;
        _fraud = fraud;
        _verifier = verifier;
        _options = options;
        _time = runtime.Time;
        _secure = runtime.SecureRandom;
        _log = log;
        _work = runtime.CreateBackgroundWork("requester", log);
        _deliveryWork = runtime.CreateBackgroundWork("receipt delivery", log);
        _policy = new VerificationPolicy(options.Verification);
        _jobSettings = RequesterJobSettings.From(options);
        _windows = new LeaseWindows(options.BusyRetryInterval);
        _consecutiveVerified = p => reputation.Get(p).ConsecutiveVerified;
        _book = new AdvertisementBook(options.Advertising, p => reputation.Get(p) switch
        {
            { IsRefused: true } => ProviderStanding.Refused,
            { Verified: > 0 } => ProviderStanding.Good,
            _ => ProviderStanding.Stranger,
        }, runtime.CreateRandom("advertisement book"), runtime.SharedValues);
        // A stranger's advertisement is not in the peer store (AddAdvertisement): a dial by its provider's id finds the
        // advertised addresses here, wherever on this host it starts (a lease, a receipt, the chain, a test's own client).
        host.AddAddressSource(AdvertisedAddresses);
        _selector = new ProviderSelector(options.Selector, reputation.Reputation, p => host.Peers.Get(p)?.Latency, runtime.CreateRandom("provider ranking"));
        _redelivery = new ReceiptRedelivery(ledger, DeliverAsync, _time, options.ReceiptRetryInterval);
        _sampleRandom = runtime.CreateRandom("advertisement sample");
    }

    public VerificationPolicy Policy => _policy;

    public ReputationStore Reputation => _reputation;

    /// <summary>Raised when a provider has acknowledged a receipt (its exact bytes): the accounting chain links the payment then.</summary>
    public event Action<PeerId, byte[]>? ReceiptDelivered;

    /// <summary>Raised when a lease attempt ends (tests wait on it; it runs on the submitting task).</summary>
    public event Action<AttemptRecord>? AttemptEnded;

    /// <summary>
    /// Subscribes to advertisements and recovers payments left by a previous run: reservations never settled are
    /// released (no receipt left this node), settled ones are sent again in the background.
    /// </summary>
    public void Start()
    {
        _subscription ??= _bus.Subscribe<VerifiedAdvertisement>(AdvertisementProtocol.Topic, ValidateAdvertisement, OnAdvertisementAsync);
        _host.SetStreamHandler(AdvertisementProtocol.SampleProtocolId, HandleSampleAsync);
        _host.Connected += OnConnected;
        foreach (var connection in _host.Connections)
        {
            OnConnected(connection);
        }
        foreach (var r in _ledger.Reservations(PaymentState.Reserved))
        {
            _ledger.Release(r.LeaseId);
        }
        _work.Run("redeliver receipts", _redelivery.RunAsync);
    }

    /// <summary>Advertisements held now, live or expired but not yet evicted (a read: evicts nothing).</summary>
    public int HeldAdvertisements
    {
        get
        {
            lock (_gate)
            {
                return _book.Count;
            }
        }
    }

    /// <summary>Live advertisements held now, not counting those hidden as unreachable (a read: evicts nothing).</summary>
    public int LiveAdvertisements
    {
        get
        {
            lock (_gate)
            {
                return _book.LiveCount(_time.GetUtcNow());
            }
        }
    }

    /// <summary>Live advertisements held, ordered by provider.</summary>
    public IReadOnlyList<VerifiedAdvertisement> Providers()
    {
        lock (_gate)
        {
            return _book.Live(_time.GetUtcNow());
        }
    }

    /// <summary>
    /// Whether this node might use <paramref name="provider"/>: it holds a live advertisement from it or has a record of
    /// it (a proof against a provider nobody uses is not worth a re-run).
    /// </summary>
    public bool Knows(PeerId provider)
    {
        if (_reputation.Get(provider) != ProviderRecord.Empty)
        {
            return true;
        }
        lock (_gate)
        {
            return _book.Live(_time.GetUtcNow()).Any(a => a.Provider == provider);
        }
    }

    /// <summary>Completes once the book holds an advertisement from <paramref name="provider"/> newer than <paramref name="sequence"/>.</summary>
    public async Task WaitForAdvertisementAsync(PeerId provider, ulong sequence, CancellationToken ct)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (_book.Live(_time.GetUtcNow()).Any(a => a.Provider == provider && a.Ad.Sequence > sequence))
                {
                    return;
                }
                changed = _adsChanged.Task;
            }
            await LoopSafeWait.WaitAsync(changed, ct);
        }
    }

    /// <summary>Completes once at least <paramref name="count"/> providers are known (for harnesses that start nodes together).</summary>
    public async Task WaitForProvidersAsync(int count, CancellationToken ct)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (_book.Live(_time.GetUtcNow()).Count >= count)
                {
                    return;
                }
                changed = _adsChanged.Task;
            }
            await LoopSafeWait.WaitAsync(changed, ct);
        }
    }

    // ------------------------------------------------------------------ advertisements

    /// <summary>
    /// Opens the envelope (size, decoding, the provider's signature, the fields' limits) and hands the opened advertisement
    /// to <see cref="OnAdvertisementAsync"/>, which only stores it: the envelope is decoded and its signature checked once
    /// per advertisement heard, not twice (every node hears every provider's advertisement, so a second check was an
    /// Ed25519 verification per provider per publication on every node, a cost that grew with the mesh).
    /// </summary>
    private TopicVerdict ValidateAdvertisement(TopicMessage message, out VerifiedAdvertisement? opened)
    {
        var verdict = AdvertisementCodec.TryOpen(message.Data.Span, _options.Advertising, out opened);
        return verdict switch
        {
            AdVerdict.Accepted => TopicVerdict.Accept,
            AdVerdict.TooLarge or AdVerdict.Malformed or AdVerdict.BadSignature or AdVerdict.PeerMismatch => TopicVerdict.Reject,
            _ => TopicVerdict.Ignore,
        };
    }

    private void OnConnected(IConnection connection)
    {
        bool sample;
        lock (_gate)
        {
            _book.MarkReachable(connection.RemotePeer); // connected: whatever a lease found before, it is reachable now
            sample = ReserveSample();
        }
        _work.Run($"fetch ad from {connection.RemotePeer}", () => FetchAdvertisementAsync(connection));
        if (sample)
        {
            _work.Run($"sample ads from {connection.RemotePeer}", () => SampleAdvertisementsAsync(connection));
        }
    }

    /// <summary>How this node's book samples went (<see cref="AdvertisementProtocol.SampleProtocolId"/>), as asker and answerer.</summary>
    public SampleFigures Samples
    {
        get
        {
            lock (_gate)
            {
                return _sampleFigures;
            }
        }
    }

    /// <summary>
    /// Whether to ask a newly connected peer for a sample of its book: only while the book holds fewer live advertisements
    /// than <see cref="AdvertisementOptions.SampleBelow"/>, and no more than <see cref="AdvertisementOptions.SamplePeers"/>
    /// peers (asked or being asked) within <see cref="AdvertisementOptions.SampleWindow"/>. Called under <see cref="_gate"/>;
    /// a true answer takes an in-flight slot that <see cref="SampleAdvertisementsAsync"/> gives back.
    /// </summary>
    private bool ReserveSample()
    {
        var a = _options.Advertising;
        if (a.SamplePeers <= 0)
        {
            return false;
        }
        var now = _time.GetUtcNow();
        while (_samplesAsked.TryPeek(out var at) && at + a.SampleWindow <= now)
        {
            _samplesAsked.Dequeue();
        }
        if (_samplesAsked.Count + _samplesInFlight >= a.SamplePeers || _book.LiveCount(now) >= a.SampleBelow)
        {
            return false;
        }
        _samplesInFlight++;
        return true;
    }

    /// <summary>
    /// Asks <paramref name="connection"/>'s peer for a sample of its book and takes what checks out. Every envelope is
    /// bounded before it is read (<see cref="AdvertisementOptions.MaxEnvelopeBytes"/> and what is left of
    /// <see cref="AdvertisementOptions.SampleMaxBytes"/>), and counted against <see cref="AdvertisementOptions.SampleSize"/>;
    /// one whose provider's advertisement the book holds at that sequence or newer is skipped unverified (the book would
    /// refuse it whatever its signature); the rest are opened and checked as gossip's are. Expired or replayed envelopes are
    /// refused one by one (an honest peer's may have expired on the way, or be older than what gossip brought here);
    /// more envelopes or bytes than asked, or one that does not open (malformed, forged, another signer's), is garbage: the
    /// stream is reset, the peer's score lowered (<see cref="Misbehaviour.Malformed"/>) and nothing of its answer kept
    /// (the envelopes are stored only once the whole answer checked out). A peer that does not speak the protocol (an older
    /// node) costs one negotiation and no slot.
    /// </summary>
    private async Task SampleAdvertisementsAsync(IConnection connection)
    {
        var counted = false;
        var a = _options.Advertising;
        IStream? stream = null;
        try
        {
            using var timeout = new CancellationTokenSource(_options.AdvertisementFetchTimeout, _time);
            using var linked = _work.Link(timeout.Token);
            var opening = await connection.TryOpenStreamAsync([AdvertisementProtocol.SampleProtocolId], linked.Token);
            if (opening.Stream is not { } opened)
            {
                return; // an older node, or gone: another peer may be asked
            }
            stream = opened;
            lock (_gate)
            {
                _samplesAsked.Enqueue(_time.GetUtcNow());
                _sampleFigures = _sampleFigures with { Asked = _sampleFigures.Asked + 1 };
                _instruments.AdSamples("asked");
                counted = true;
            }
            var request = new byte[20];
            var length = Varint.Write(request, (ulong)a.SampleSize);
            length += Varint.Write(request.AsSpan(length), (ulong)a.SampleMaxBytes);
            await LengthPrefixed.WriteAsync(stream.Output, request.AsMemory(0, length), linked.Token);
            await stream.Output.CompleteAsync();
            var left = a.SampleMaxBytes;
            var count = 0;
            // Opened as they come, stored only once the whole answer checked out: garbage anywhere leaves the book as it was.
            var checkedAds = new List<VerifiedAdvertisement>();
            while (true)
            {
                var envelope = await LengthPrefixed.ReadAsync(stream.Input, Math.Min(a.MaxEnvelopeBytes, left), AdvertisementProtocol.SampleProtocolId, linked.Token);
                if (envelope is null)
                {
                    break;
                }
                if (++count > a.SampleSize)
                {
                    throw new ProtocolViolationException(AdvertisementProtocol.SampleProtocolId, "more advertisements than asked for", ViolationCode.TooLarge);
                }
                left -= envelope.Length;
                var verdict = OpenSampled(envelope, out var ad);
                if (verdict is AdVerdict.TooLarge or AdVerdict.Malformed or AdVerdict.BadSignature or AdVerdict.PeerMismatch)
                {
                    throw new ProtocolViolationException(AdvertisementProtocol.SampleProtocolId, $"an advertisement that does not open ({verdict})", ViolationCode.Malformed);
                }
                if (ad is not null)
                {
                    checkedAds.Add(ad);
                }
            }
            var accepted = 0;
            foreach (var ad in checkedAds)
            {
                accepted += AddAdvertisement(ad) == AdVerdict.Accepted ? 1 : 0;
            }
            lock (_gate)
            {
                _sampleFigures = _sampleFigures with { Accepted = _sampleFigures.Accepted + accepted, Refused = _sampleFigures.Refused + checkedAds.Count - accepted };
                _instruments.AdSamples("accepted", accepted);
                _instruments.AdSamples("refused", checkedAds.Count - accepted);
            }
        }
        catch (ProtocolViolationException e)
        {
            LogSampleViolation(_log, connection.RemotePeer, e.Message);
            lock (_gate)
            {
                _sampleFigures = _sampleFigures with { Garbage = _sampleFigures.Garbage + 1 };
                _instruments.AdSamples("garbage");
            }
            stream?.Reset();
            _host.Budgets.Penalise(connection.RemotePeer, Misbehaviour.Malformed);
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            // Gone or too slow: gossip still brings advertisements.
        }
        finally
        {
            if (stream is not null)
            {
                await stream.DisposeAsync();
            }
            lock (_gate)
            {
                _samplesInFlight--;
                if (!counted)
                {
                    _sampleFigures = _sampleFigures with { Unsupported = _sampleFigures.Unsupported + 1 };
                    _instruments.AdSamples("unsupported");
                }
            }
        }
    }

    /// <summary>
    /// One envelope of a sample answer: skipped unverified (<see cref="AdVerdict.OldSequence"/>, no advertisement) when the
    /// book holds its provider at that sequence or newer; else opened (signature, signer, fields) and checked against the
    /// clock as the book would, without storing it yet.
    /// </summary>
    private AdVerdict OpenSampled(byte[] envelope, out VerifiedAdvertisement? ad)
    {
        ad = null;
        if (AdvertisementCodec.TryPeek(envelope, _options.Advertising, out var provider, out var sequence))
        {
            lock (_gate)
            {
                // This node's own (an answerer that does not leave it out) is of no use here: skipped as held.
                if (provider == _key.PeerId || _book.HoldsAtLeast(provider, sequence))
                {
                    _sampleFigures = _sampleFigures with { Skipped = _sampleFigures.Skipped + 1 };
                    _instruments.AdSamples("skipped");
                    return AdVerdict.OldSequence;
                }
            }
        }
        var verdict = AdvertisementCodec.TryOpen(envelope, _options.Advertising, out var opened);
        if (verdict != AdVerdict.Accepted)
        {
            return verdict;
        }
        var now = _time.GetUtcNow();
        if (opened!.ExpiresAt <= now || opened.IssuedAt > now + _options.Advertising.ClockSkew)
        {
            lock (_gate)
            {
                _sampleFigures = _sampleFigures with { Refused = _sampleFigures.Refused + 1 };
                _instruments.AdSamples("refused");
            }
            return AdVerdict.Expired; // an honest peer's may have expired on the way: refused, not garbage
        }
        ad = opened;
        return verdict;
    }

    /// <summary>
    /// Answers <see cref="AdvertisementProtocol.SampleProtocolId"/>: up to the asked count (at most
    /// <see cref="AdvertisementOptions.SampleSize"/>) and bytes (at most <see cref="AdvertisementOptions.SampleMaxBytes"/>) of
    /// live advertisements this book holds, chosen with the node's seeded randomness, none found unreachable here and not
    /// the asker's own (it has that, and only a peer that does not speak the protocol fetches it). A
    /// malformed request is a violation (the router resets the stream and lowers the peer's score); the host's budget
    /// (<c>host:budgets:adSamples</c>) bounds how often one peer may ask.
    /// </summary>
    private async Task HandleSampleAsync(IStream stream, CancellationToken ct)
    {
        var request = await LengthPrefixed.ReadAsync(stream.Input, 20, AdvertisementProtocol.SampleProtocolId, ct);
        if (request is null || !TryReadSampleRequest(request, out var count, out var maxBytes))
        {
            throw new ProtocolViolationException(AdvertisementProtocol.SampleProtocolId, "malformed sample request", ViolationCode.Malformed);
        }
        var a = _options.Advertising;
        List<VerifiedAdvertisement> chosen;
        lock (_gate)
        {
            chosen = _book.Sample((int)Math.Min(count, (ulong)a.SampleSize), (int)Math.Min(maxBytes, (ulong)a.SampleMaxBytes), _sampleRandom, _time.GetUtcNow(),
                except: stream.RemotePeer);
            _sampleFigures = _sampleFigures with { Answered = _sampleFigures.Answered + 1 };
            _instruments.AdSamples("answered");
        }
        foreach (var ad in chosen)
        {
            await LengthPrefixed.WriteAsync(stream.Output, ad.Envelope(), ct);
        }
        await stream.Output.CompleteAsync();
    }

    private static bool TryReadSampleRequest(byte[] request, out ulong count, out ulong maxBytes)
    {
        maxBytes = 0;
        var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(request));
        return Varint.TryRead(ref reader, out count) == DecodeStatus.Done
            && Varint.TryRead(ref reader, out maxBytes) == DecodeStatus.Done
            && reader.End;
    }

    /// <summary>
    /// Asks a newly connected peer for its current advertisement (<see cref="AdvertisementProtocol.FetchProtocolId"/>),
    /// so providers are known at once rather than after their next gossip round. Peers that are no providers
    /// simply do not speak the protocol.
    /// </summary>
    private async Task FetchAdvertisementAsync(IConnection connection)
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.AdvertisementFetchTimeout, _time);
            using var linked = _work.Link(timeout.Token);
            var opening = await connection.TryOpenStreamAsync([AdvertisementProtocol.FetchProtocolId], linked.Token);
            if (opening.Stream is not { } opened)
            {
                return; // not a provider (it answered "na"), or gone: most peers, so a result rather than an exception
            }
            await using var stream = opened;
            await stream.Output.CompleteAsync();
            var envelope = await LengthPrefixed.ReadAsync(stream.Input, _options.Advertising.MaxEnvelopeBytes, AdvertisementProtocol.FetchProtocolId, linked.Token);
            if (envelope is not null)
            {
                AddAdvertisement(envelope);
            }
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            // Not a provider, or gone: gossip still brings its advertisement if it has one.
        }
    }

    private ValueTask OnAdvertisementAsync(TopicMessage message, VerifiedAdvertisement opened, CancellationToken ct)
    {
        _ = AddAdvertisement(opened);
        return ValueTask.CompletedTask;
    }

    /// <summary>An envelope fetched from a peer: opened (and its signature checked) here, then stored.</summary>
    private void AddAdvertisement(ReadOnlySpan<byte> envelope)
    {
        if (AdvertisementCodec.TryPeek(envelope, _options.Advertising, out var provider, out var sequence))
        {
            lock (_gate)
            {
                if (_book.HoldsAtLeast(provider, sequence))
                {
                    return; // held already (gossip brought it): the book would refuse it, so its signature is not checked
                }
            }
        }
        if (AdvertisementCodec.TryOpen(envelope, _options.Advertising, out var opened) == AdVerdict.Accepted && opened is not null)
        {
            AddAdvertisement(opened);
        }
    }

    /// <summary>Stores an opened advertisement (time, lifetime, sequence and room checked by the book).</summary>
    private AdVerdict AddAdvertisement(VerifiedAdvertisement ad)
    {
        lock (_gate)
        {
            var verdict = _book.Add(ad, _time.GetUtcNow());
            if (verdict != AdVerdict.Accepted)
            {
                return verdict;
            }
            // A stranger's advertisement stays in the book: its addresses enter the peer store when this node dials it
            // (ChannelTo, or the host's address source), not for every provider of the mesh (a peer-store entry each on every node:
            // ~0.3 KiB beyond the advertisement's own addresses, O(N²) in a mesh).
            // A provider the node already knows (in the peer store, a lease channel or a reputation record) gets its
            // signed addresses refreshed as before.
            if (ad.Provider != _key.PeerId && KnownHere(ad.Provider))
            {
                _host.Peers.AddAddresses(ad.Provider, ad.Addresses, AddressSource.Identify);
            }
            ProvidersChangedLocked();
            return verdict;
        }
    }

    /// <summary>Wakes every job waiting for a provider (a newer advertisement, a window reopened). Under <see cref="_gate"/>.</summary>
    private void ProvidersChangedLocked()
    {
        _adsChanged.TrySetResult();
        _adsChanged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        while (_windowWaiters.TryDequeue(out var waiter))
        {
            waiter.TrySetResult();
        }
    }

    /// <summary>A window has room again: wakes the oldest job waiting for one, and the slots waiting on windows. Under <see cref="_gate"/>.</summary>
    private void WindowReopenedLocked()
    {
        while (_windowWaiters.TryDequeue(out var waiter))
        {
            if (waiter.TrySetResult())
            {
                break;
            }
        }
        _windowReopened.TrySetResult();
        _windowReopened = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>The job looks again or has ended: its place among the window waiters (if any) is given up. Under <see cref="_gate"/>.</summary>
    private static void LeaveWindowQueueLocked(Job job)
    {
        job.WindowWaiter?.TrySetCanceled();
        job.WindowWaiter = null;
    }

    /// <summary>From the job's shell when it ends: its place among the window waiters is given up.</summary>
    private void LeaveWindowQueue(Job job)
    {
        lock (_gate)
        {
            LeaveWindowQueueLocked(job);
        }
    }

    // ------------------------------------------------------------------ submission

    /// <summary>Runs a task and returns its (checked) result.</summary>
    /// <exception cref="ArgumentException">The submission is malformed (no module, no fuel, too many replicas).</exception>
    /// <exception cref="SubmissionException">No provider fits, credits ran out, or every attempt failed.</exception>
    public async Task<SubmissionResult> SubmitAsync(TaskSubmission submission, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(submission);
        if (submission.Module.IsEmpty || submission.Fuel <= 0 || submission.MemoryBytes <= 0 || submission.MaxPricePerMegaFuel < 0)
        {
            throw new ArgumentException("a submission needs a module, positive fuel and memory, and a non-negative price", nameof(submission));
        }
        if (submission.Replicas < 1 || submission.Replicas > _policy.Options.MaxReplicas)
        {
            throw new ArgumentException($"replicas must be 1 to {_policy.Options.MaxReplicas}", nameof(submission));
        }
        var job = new Job(submission, new TaskPayload(submission.Args, submission.Input).Encode(),
            new RequesterJob(_jobSettings, _key.PeerId, submission.Replicas));
        // One provider at a time with a sample re-checked, or k replicas at once: the decisions are the job's (RequesterJob),
        // taken as a core (JobCore) on the shell both sides share (CoreShell); this client leases, re-runs, pays and publishes
        // as its steps say (ComputeClient.Job.cs).
        return await new JobRun(this, job).RunAsync(ct);
    }

    private bool CanRerunLocally(Job job) => _verifier is not null && _verifier.CanReproduce(job.Submission.Fuel, job.Submission.MemoryBytes);

    private async Task<TrustedRun> RerunLocallyAsync(Job job, CancellationToken ct)
    {
        var rerun = await _verifier!.RunAsync(job.Submission.Module, job.Payload, job.Submission.Fuel, job.Submission.MemoryBytes, ct);
        return new TrustedRun(RunSummary.Of(rerun), rerun.Stdout, ExecutionMapping.ToStatus(rerun.Outcome), rerun.ExitCode ?? 0,
            rerun.Error ?? rerun.Trap?.Description) { Stderr = rerun.Stderr };
    }

    /// <summary>Carries out a settlement: convict, or note the provider's record and pay or leave unpaid.</summary>
    /// <param name="refusedWhy">Why a convicted provider is refused (by default: a re-run contradicts it).</param>
    private async Task SettleAsync(Job job, LeaseResultInfo lease, SettleStep step, CancellationToken ct, string? refusedWhy = null)
    {
        if (step.Convict)
        {
            await ConvictAsync(job, lease, ct, refusedWhy);
            return;
        }
        Note(lease.Provider, step.Note);
        if (step.NotPaid is { } why)
        {
            _ledger.Release(lease.LeaseId);
            Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, why, 0));
            return;
        }
        await PayAsync(job, lease, ct, step.Compared);
    }

    private void Note(PeerId provider, ReputationNote note)
    {
        switch (note)
        {
            case ReputationNote.Verified:
                _reputation.RecordVerified(provider);
                break;
            case ReputationNote.Unchecked:
                _reputation.RecordUnchecked(provider);
                break;
            case ReputationNote.Inconclusive:
                _reputation.RecordInconclusive(provider);
                break;
            case ReputationNote.Failure:
                _reputation.RecordFailure(provider);
                break;
        }
    }

    /// <summary>
    /// Runs one lease with <paramref name="ad"/>'s provider: reserves the most it may cost, leases through a
    /// <see cref="LeaseRunner"/>, pays debit notes as they come, and checks what came back against the request. The
    /// decisions about it are the caller's (<see cref="RequesterJob.OnLeaseEnded"/>, <see cref="RequesterJob.InspectResult"/>).
    /// </summary>
    private async Task<LeaseAttempt> LeaseAsync(Job job, VerifiedAdvertisement ad, bool alwaysCompared, CancellationToken ct)
    {
        var provider = ad.Provider;
        ulong requestId;
        int ratePpm;
        // The audit secret: committed to in the terms, revealed with the receipt; from the cryptographic generator.
        var secret = new byte[LeaseAudit.SecretLength];
        int heldAtStart;
        lock (_gate)
        {
            // Counted in the provider's window from the moment it was chosen, not after the payment's reservation (a ledger
            // write): other jobs choosing meanwhile see it, so they do not send the provider requests past its limit.
            heldAtStart = _windows.Started(provider);
            _windows.TakeFreed(provider, ad.Ad.Sequence);
            // A job holding a result it trusts compares every later result with it for free: declared as rate one.
            ratePpm = job.Locked(() => job.Core.DeclaredRatePpm(_policy, _reputation.Get(provider).ConsecutiveVerified, job.Submission.VerifyRate, alwaysCompared));
            _secure.Fill(secret);
            // From the cryptographic generator: a request id must tell the provider nothing about what comes next.
            do
            {
                requestId = _secure.NextUInt64();
            }
            while (requestId == 0);
        }
        Metrics.LeaseTimeline.MarkAt(requestId, Metrics.LeaseMark.Submitted, job.SubmittedAt);
        Metrics.LeaseTimeline.Mark(requestId, Metrics.LeaseMark.Chosen);
        byte[] leaseId;
        long maxCost;
        RequesterLease lease;
        DebitNotePayer payer;
        LedgerResult reserved;
        try
        {
            var s = job.Submission;
            var work = new LeaseWork
            {
                Module = s.Module,
                ModuleHash = _moduleDigests.Of(s.Module.Span),
                Input = job.Payload,
                FuelLimit = s.Fuel,
                MemoryLimitBytes = s.MemoryBytes,
                Deadline = _time.GetUtcNow() + (s.Deadline ?? _options.LeaseDeadline),
                MaxPricePerMegaFuel = s.MaxPricePerMegaFuel,
                AdvertisedPricePerMegaFuel = ad.Ad.PricePerMegaFuel,
                AuditCommitment = LeaseAudit.Commit(secret),
                AuditRatePpm = ratePpm,
                AcceptsDebitNotes = true,
            };
            leaseId = ExecutionMapping.LeaseId(requestId);
            maxCost = new LeaseTerms { PricePerMegaFuel = s.MaxPricePerMegaFuel }.CostOf(s.Fuel);
            lease = new RequesterLease(_key, ad.Key, requestId, work, _options.Lease);
            payer = new DebitNotePayer(this, lease, provider, leaseId);
            reserved = _ledger.ReservePayment(leaseId, provider, maxCost);
        }
        catch
        {
            WindowEnded(provider, refusedBusy: false, null, heldAtStart, freedCore: false); // nothing was sent
            throw;
        }
        if (reserved is LedgerResult.InsufficientFunds)
        {
            WindowEnded(provider, refusedBusy: false, null, heldAtStart, freedCore: false);
            throw new SubmissionException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"insufficient credits: a lease may cost up to {maxCost / 1e6:0.000000} credits (--fuel × --max-price), {_ledger.Available() / 1e6:0.000000} available, and this node lets itself owe at most {_ledger.MaxDebt / 1e6:0.000000} ('compute:credits:maxDebt'); earn credits by providing (`potluck run`)"), job.Locked(() => job.Core.History.ToList()));
        }
        Metrics.LeaseTimeline.Mark(requestId, Metrics.LeaseMark.Reserved);
        LeaseOutcome outcome = null!;
        _instruments.LeaseStarted(LeaseRole.Requester);
        var ended = LeaseOutcomeKind.Cancelled;
        LeaseEnd window;
        try
        {
            await using (var runner = new LeaseRunner(ChannelTo(provider), lease, _time, _work) { OnDebitNote = payer.OnNote })
            {
                outcome = await runner.RunAsync(ct);
            }
            Metrics.LeaseTimeline.Mark(requestId, Metrics.LeaseMark.LeaseEnded);
            ended = outcome.Kind;
        }
        finally
        {
            window = WindowEnded(provider, ended == LeaseOutcomeKind.Rejected && outcome?.RejectReason == LeaseRejectReason.Busy,
                outcome?.RejectLeaseLimit, heldAtStart, freedCore: ended == LeaseOutcomeKind.Completed);
            _instruments.LeaseEnded(LeaseRole.Requester, ended);
            var notesPaid = payer.PaidAmount;
            lock (job.Gate)
            {
                job.Core.OnPaid(notesPaid); // debit notes paid as the lease ran, whatever came of it
            }
        }
        if (outcome.Kind == LeaseOutcomeKind.Unreachable)
        {
            lock (_gate)
            {
                // Not chosen by any submission once the grace has passed, nor handed on in a sample, until it is heard from.
                _book.MarkUnreachable(provider, ad.Ad.Sequence, _time.GetUtcNow());
            }
        }
        if (outcome.Kind != LeaseOutcomeKind.Completed || outcome.Result is not { } result || outcome.Terms is not { } terms)
        {
            return new LeaseAttempt(provider, ad.Ad.Sequence, leaseId, outcome, null, null) { HeldOthers = window.HeldOthers };
        }
        var output = result.Output ?? [];
        // The request already hashed module and input, and the lease checked the output against its hash.
        var expectation = new AttestationExpectation(leaseId, _key.PeerId, provider, lease.Request.ModuleHash, lease.Request.InputHash,
            result.Output is null ? SHA256.HashData(output) : result.OutputHash, output.Length);
        var attestation = SignedAttestation.Verify(result.Attestation, expectation, _options.Credits);
        Metrics.LeaseTimeline.Mark(requestId, Metrics.LeaseMark.Verified);
        var claimedStatus = attestation.IsValid ? ExecutionMapping.ToStatus(attestation.Value!.Attestation.Outcome, attestation.Value.Attestation.ExitCode) : default;
        var decodes = LeaseCodec.TryDecodeTerms(terms.Terms, _options.Lease, out var decodedTerms);
        var inspection = new ResultInspection(
            attestation.IsValid ? null : attestation.Status.ToString(),
            attestation.IsValid && attestation.Value!.Attestation.FuelUsed == (ulong)result.FuelUsed && result.Output is not null && claimedStatus == result.Status,
            claimedStatus, attestation.IsValid ? attestation.Value!.Attestation.FuelUsed : 0, payer.PaidFuel, decodes);
        var info = attestation.IsValid && decodes
            ? new LeaseResultInfo(provider, leaseId, terms, decodedTerms, result, output, attestation.Value!, secret, ratePpm, payer.PaidAmount)
            : null;
        return new LeaseAttempt(provider, ad.Ad.Sequence, leaseId, outcome, inspection, info);
    }

    /// <summary>
    /// How one lease went (<see cref="LeaseAsync"/>): without a result (<see cref="Inspection"/> null), or with one to inspect;
    /// <see cref="Result"/> is set when its attestation is valid and its terms decode.
    /// </summary>
    private sealed record LeaseAttempt(PeerId Provider, ulong AdSequence, byte[] LeaseId, LeaseOutcome Outcome, ResultInspection? Inspection,
        LeaseResultInfo? Result)
    {
        /// <summary>A busy refusal while this node held other leases with the provider (<see cref="LeaseWindows"/>): no backoff.</summary>
        public bool HeldOthers { get; init; }
    }

    /// <summary>Leases this node holds with <paramref name="provider"/> by its window's count (tests: none is left behind).</summary>
    internal int LeasesHeldWith(PeerId provider)
    {
        lock (_gate)
        {
            return _windows.Held(provider);
        }
    }

    /// <summary>
    /// A lease with <paramref name="provider"/> ended: its window is told, and a window it reopens wakes the jobs waiting for
    /// a provider (the end of this node's own lease is what such a job waits for, not a timer).
    /// </summary>
    private LeaseEnd WindowEnded(PeerId provider, bool refusedBusy, int? reportedLimit, int heldAtStart, bool freedCore)
    {
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            var freedBusy = false;
            if (freedCore && _book.Get(provider, now) is { } current)
            {
                // The provider finished it before answering: its core is free, whatever the newest advertisement says.
                _windows.Freed(provider, current.Ad.Sequence);
                freedBusy = current.IsBusy;
            }
            var end = _windows.Ended(provider, refusedBusy, now, reportedLimit, heldAtStart);
            if (freedBusy)
            {
                // Jobs that found it busy wait for a newer advertisement: this is news of the same kind.
                ProvidersChangedLocked();
            }
            if (end.Reopened)
            {
                WindowReopenedLocked();
            }
            return end;
        }
    }

    /// <summary>The addresses <paramref name="provider"/> advertised, if this node holds its live advertisement.</summary>
    private IReadOnlyList<Multiaddr>? AdvertisedAddresses(PeerId provider)
    {
        lock (_gate)
        {
            return _book.Get(provider, _time.GetUtcNow())?.Addresses;
        }
    }

    /// <summary>
    /// Whether <paramref name="provider"/> is more to this node than an advertisement: in the peer store (connected,
    /// met, found in the DHT), a lease channel, or a reputation record. Called under <see cref="_gate"/>.
    /// </summary>
    private bool KnownHere(PeerId provider) =>
        _channels.ContainsKey(provider) || _reputation.Get(provider) != ProviderRecord.Empty || _host.Peers.Get(provider) is not null;

    /// <summary>
    /// How long the addresses of one advertisement put into the peer store for a channel are not put there again: a tenth
    /// of the peer store's default 10 minutes for discovered addresses (kept without expiry while connected).
    /// </summary>
    private static readonly TimeSpan AddressRefresh = TimeSpan.FromMinutes(1);

    /// <summary>
    /// The lease stream shared by every lease with <paramref name="provider"/>. Puts the provider's advertised addresses
    /// into the peer store first (strangers' advertisements do not put them there on arrival; the host's address source
    /// would at the dial, this puts them there for the lease and receipt dials as before): once per advertisement and
    /// <see cref="AddressRefresh"/>, not on every lease and receipt (each parsed the addresses and took the store's lock).
    /// </summary>
    private LeaseChannel ChannelTo(PeerId provider)
    {
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            var ad = provider != _key.PeerId ? _book.Get(provider, now) : null;
            _channels.TryGetValue(provider, out var channel);
            var added = ad is not null
                && (channel is null || !ReferenceEquals(channel.AddressesFrom, ad) || now >= channel.AddressesAt + AddressRefresh);
            if (added)
            {
                _host.Peers.AddAddresses(provider, ad!.Addresses, AddressSource.Identify);
            }
            if (channel is null)
            {
                if (_channels.Count >= _options.MaxLeaseChannels)
                {
                    // Bounded: close the channels no lease is using (a later lease with that provider opens a new one).
                    foreach (var (peer, idle) in _channels.Where(kv => kv.Value.IsIdle).ToList())
                    {
                        _channels.Remove(peer);
                        _work.Track("close idle lease channel", idle.DisposeAsync());
                    }
                }
                _channels[provider] = channel = new LeaseChannel(_host, provider, _options.Lease, _time, _work);
            }
            if (added)
            {
                channel.AddressesFrom = ad;
                channel.AddressesAt = now;
            }
            return channel;
        }
    }

    /// <summary>Lease streams opened to <paramref name="provider"/> so far (tests check that leases share one).</summary>
    internal long LeaseStreamsOpened(PeerId provider)
    {
        lock (_gate)
        {
            return _channels.TryGetValue(provider, out var channel) ? channel.StreamsOpened : 0;
        }
    }

    /// <summary>
    /// One look at the providers for <paramref name="job"/> now: the best that fits, or what holds each back (the job's core
    /// then waits for a newer advertisement or a busy provider's retry time, or gives up with <see cref="Choice.Explain"/>:
    /// busy means "wait and retry", never "excluded"). During a tie-break or a second provider's check the choice is made
    /// among providers in good standing here when one fits; a third opinion only among them (<see cref="RequesterJob.Filter"/>).
    /// </summary>
    /// <returns><see cref="Choice.Changed"/> completes on the next advertisement after this look.</returns>
    /// <param name="slot">A slot's choice (replicas, checks): it shares the job's watch, so it waits on every reopened window, not in the queue.</param>
    private Choice TryChoose(Job job, bool slot = false)
    {
        Task changed;
        SelectionResult selection;
        ChoiceFilter filter;
        Dictionary<PeerId, string> excludedWhy;
        bool selfSeen;
        lock (_gate)
        lock (job.Gate)
        {
            var now = _time.GetUtcNow();
            LeaveWindowQueueLocked(job);
            var refused = _reputation.RefusedProviders();
            var live = _book.Live(now);
            selfSeen = live.Any(a => a.Provider == _key.PeerId);
            var unfiltered = job.Core.Filter(live, refused, now, _consecutiveVerified);
            filter = WithoutFullWindows(unfiltered, now);
            var requirements = new Requirements
            {
                MinMemoryBytes = job.Submission.MemoryBytes,
                MaxPricePerMegaFuel = job.Submission.MaxPricePerMegaFuel,
                ExcludedPeers = filter.Excluded,
                RuntimeVersion = ComputeRuntime.Version,
                RequiredPolicy = ProviderPolicyFlags.Attests,
                MaxResults = 1,
                FreedHere = FreedHereLocked(filter.Candidates),
            };
            selection = filter.Preferred.Count > 0 && _selector.Select(filter.Preferred, requirements, now) is Matched preferred
                ? preferred
                : _selector.Select(filter.Candidates, requirements, now);
            excludedWhy = [];
            foreach (var ad in filter.Candidates.Where(a => filter.Excluded.Contains(a.Provider)))
            {
                excludedWhy[ad.Provider] = ad.Provider == _key.PeerId ? "this node itself"
                    : refused.Contains(ad.Provider) ? $"refused by this node ({_reputation.Get(ad.Provider).RefusedReason})"
                    : job.Core.Why.GetValueOrDefault(ad.Provider, "tried already");
            }
            changed = _adsChanged.Task;
            if (selection is not Matched && filter.BusyHere > unfiltered.BusyHere)
            {
                // Waiting (also) for a full window: woken when one reopens, in turn, as well as by a newer advertisement.
                if (slot)
                {
                    changed = Task.WhenAny(changed, _windowReopened.Task);
                }
                else
                {
                    if (_windowWaiters.Count >= 1024)
                    {
                        // Bounded: drop the places given up (each waiting job holds one live place at most).
                        var waiting = _windowWaiters.Where(w => !w.Task.IsCompleted).ToList();
                        _windowWaiters.Clear();
                        waiting.ForEach(_windowWaiters.Enqueue);
                    }
                    var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _windowWaiters.Enqueue(waiter);
                    job.WindowWaiter = waiter;
                    changed = waiter.Task;
                }
            }
        }
        if (selection is Matched matched)
        {
            return new Choice(matched.Providers[0].Advertisement, 0, 0, null, changed, null!);
        }
        var noMatch = (NoMatch)selection;
        var busyHere = filter.BusyHere;
        var busy = busyHere + noMatch.Mismatches.GetValueOrDefault(MismatchReason.Busy);
        return new Choice(null, busy, noMatch.Seen + busyHere - (selfSeen ? 1 : 0), filter.RetryAt, changed, () =>
        {
            var explanation = Explain(noMatch, busyHere, filter.UnreachableHere, excludedWhy, job);
            if (busy > 0)
            {
                explanation += $" (waited {FormatSpan(_options.WaitForCapacity)} for a free core: compute:client:waitForCapacity)";
            }
            var tried = job.Locked(() => job.Core.History.ToList());
            return new SubmissionException(tried.Count == 0 ? $"no provider fits: {explanation}" : $"no provider fits: {explanation}; tried: {RequesterJob.Summarise(tried)}", tried)
            {
                Reasons = ReasonCounts(noMatch, busyHere, filter.UnreachableHere, excludedWhy),
            };
        });
    }

    /// <summary>
    /// The providers among <paramref name="candidates"/> that advertise every core taken while this node's own leases there
    /// have completed since that advertisement arrived (<see cref="LeaseWindows.Freed"/>); null when none. Under <see cref="_gate"/>.
    /// </summary>
    private HashSet<PeerId>? FreedHereLocked(IReadOnlyList<VerifiedAdvertisement> candidates)
    {
        HashSet<PeerId>? freed = null;
        foreach (var ad in candidates)
        {
            if (ad.IsBusy && _windows.FreedSince(ad.Provider, ad.Ad.Sequence) > 0)
            {
                (freed ??= []).Add(ad.Provider);
            }
        }
        return freed;
    }

    /// <summary>
    /// <paramref name="filter"/> less the providers whose window is full (<see cref="LeaseWindows"/>: this node holds as many
    /// leases with them as they allow it), counted as busy here; the job waits for one of those leases to end (which wakes it)
    /// or for the window's next probe. Under <see cref="_gate"/>.
    /// </summary>
    private ChoiceFilter WithoutFullWindows(ChoiceFilter filter, DateTimeOffset now)
    {
        if (_windows.Count == 0)
        {
            return filter;
        }
        List<PeerId>? full = null;
        foreach (var ad in filter.Candidates)
        {
            if (!filter.Excluded.Contains(ad.Provider) && _windows.IsFull(ad.Provider, now))
            {
                (full ??= []).Add(ad.Provider);
            }
        }
        if (full is null)
        {
            return filter;
        }
        var probe = _windows.NextProbe(full, now);
        return filter with
        {
            Candidates = filter.Candidates.Where(a => !full.Contains(a.Provider)).ToList(),
            Preferred = filter.Preferred.Where(a => !full.Contains(a.Provider)).ToList(),
            BusyHere = filter.BusyHere + full.Count,
            RetryAt = probe is { } p && (filter.RetryAt is not { } r || p < r) ? p : filter.RetryAt,
        };
    }

    /// <summary>What one look at the providers found (<see cref="TryChoose"/>): a provider, or the inputs of <see cref="RequesterJob.OnNoMatch"/> and the explanation should the job give up.</summary>
    private sealed record Choice(VerifiedAdvertisement? Ad, int Busy, int OthersSeen, DateTimeOffset? RetryAt, Task Changed, Func<SubmissionException> Explain);

    private static string FormatSpan(TimeSpan span) =>
        span.TotalHours >= 1 && span.TotalHours == Math.Floor(span.TotalHours) ? $"{span.TotalHours:0} h"
        : span.TotalMinutes >= 1 && span.TotalMinutes == Math.Floor(span.TotalMinutes) ? $"{span.TotalMinutes:0} min"
        : $"{span.TotalSeconds:0} s";

    /// <summary>
    /// Each reason a provider did not fit, with its count, the excluded ones by their own cause (refused and why, dead,
    /// already running a replica, this node itself) rather than as "excluded".
    /// </summary>
    /// <param name="unreachableHere">Of <paramref name="busyHere"/>, those skipped because they could not be reached.</param>
    private static IReadOnlyDictionary<string, int> ReasonCounts(NoMatch noMatch, int busyHere, int unreachableHere, Dictionary<PeerId, string> excludedWhy)
    {
        var counts = new Dictionary<string, int>();
        foreach (var (reason, count) in noMatch.Mismatches)
        {
            if (reason != MismatchReason.Excluded && count > 0)
            {
                counts[NoMatch.Describe(reason)] = count;
            }
        }
        if (busyHere > unreachableHere)
        {
            counts["busy"] = counts.GetValueOrDefault("busy") + busyHere - unreachableHere;
        }
        if (unreachableHere > 0)
        {
            counts["unreachable"] = counts.GetValueOrDefault("unreachable") + unreachableHere;
        }
        foreach (var why in excludedWhy.Values)
        {
            counts[why] = counts.GetValueOrDefault(why) + 1;
        }
        return counts;
    }

    private static string Explain(NoMatch noMatch, int busyHere, int unreachableHere, Dictionary<PeerId, string> excludedWhy, Job job)
    {
        var seen = noMatch.Seen + busyHere;
        if (seen == 0)
        {
            return "no providers seen";
        }
        var counts = ReasonCounts(noMatch, busyHere, unreachableHere, excludedWhy);
        var text = $"{seen} provider{(seen == 1 ? "" : "s")} seen: " +
            string.Join(", ", counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Value} {kv.Key}"));
        if (job.Submission.Replicas > 1 && excludedWhy.Values.Any(w => w is RequesterJob.RunningReplica or RequesterJob.RanAlready))
        {
            text += $"; too few providers for --replicas {job.Submission.Replicas}";
        }
        return text;
    }

    /// <summary>A result a deterministic re-run contradicts: refuse, do not pay, prove it to everyone.</summary>
    /// <param name="why">Why it is refused, for the reputation store (by default: a re-run contradicts it).</param>
    private async Task ConvictAsync(Job job, LeaseResultInfo lease, CancellationToken ct, string? why = null)
    {
        _ledger.Release(lease.LeaseId);
        _reputation.Refuse(lease.Provider, why ?? "its attested result differs from a deterministic re-run");
        Forfeiture.Apply(_ledger, _instruments, lease.Provider, lease.LeaseId); // what it still holds from us is lost too
        var proof = FraudProof.Create(lease.SignedTerms, lease.Attestation.EnvelopeBytes, job.Submission.Module, job.Payload, lease.AuditSecret);
        var published = await _fraud.PublishAsync(proof, ct);
        LogFraud(_log, lease.Provider, published);
        Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, "fraud: the attested result differs from a re-run; not paid, refused", 0));
    }

    // ------------------------------------------------------------------ payment

    /// <param name="compared">Whether this result was checked (re-run or compared), as the receipt tells the provider.</param>
    private async Task PayAsync(Job job, LeaseResultInfo lease, CancellationToken ct, bool compared)
    {
        var price = (ulong)Math.Max(0, lease.Terms.PricePerMegaFuel);
        var receipt = SignedReceipt.Create(Receipt.For(lease.Attestation, price, _time.GetUtcNow(), lease.AuditSecret, compared, lease.PaidBefore), _key);
        var settled = _ledger.Settle(receipt);
        if (lease.LeaseId.Length == 8)
        {
            Metrics.LeaseTimeline.Mark(BinaryPrimitives.ReadUInt64BigEndian(lease.LeaseId), Metrics.LeaseMark.Settled);
        }
        if (settled is not (LedgerResult.Recorded or LedgerResult.AlreadyRecorded))
        {
            LogPaymentFailed(_log, lease.Provider, settled.ToString());
            Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, $"result accepted; payment not settled ({settled})", 0));
            return;
        }
        if (settled is LedgerResult.Recorded)
        {
            _instruments.CreditsSpent(receipt.Receipt.Amount);
        }
        lock (job.Gate)
        {
            job.Core.OnPaid(receipt.Receipt.Amount);
        }
        Record(job, new AttemptRecord(lease.Provider, LeaseOutcomeKind.Completed, lease.Result.Status.ToString(), receipt.Receipt.Amount));
        // The payment is final once settled (durably) here; handing the receipt over is the provider's business and
        // need not hold up the result: it goes on in the background (see WhenReceiptsDeliveredAsync and DisposeAsync).
        StartDelivery(lease.Provider, lease.LeaseId, receipt.EnvelopeBytes);
    }

    /// <summary>
    /// Starts the hand-over here rather than queueing it: its synchronous part is short (a frame onto the provider's lease
    /// stream, or a wait for the stream's writer), and this thread is already off any read loop, so a thread-pool item per
    /// receipt bought nothing. Tracked, so <see cref="WhenReceiptsDeliveredAsync"/> and disposal wait for it; once the client is
    /// stopping nothing is started (the receipt stays Settled and is sent again at the next start).
    /// </summary>
    private void StartDelivery(PeerId provider, byte[] leaseId, byte[] receipt)
    {
        if (!_deliveryWork.IsStopping)
        {
            _deliveryWork.Track("deliver receipt", DeliverAsync(provider, leaseId, receipt, _deliveryWork.Stopping));
        }
    }

    /// <summary>
    /// Completes when every receipt handed over in the background so far has been acknowledged or has failed (a failed
    /// one stays Settled in the ledger and is sent again by <see cref="RedeliverReceiptsAsync"/>).
    /// </summary>
    public Task WhenReceiptsDeliveredAsync(CancellationToken ct)
    {
        return LoopSafeWait.WaitAsync(_deliveryWork.WhenIdleAsync(), ct);
    }

    /// <summary>
    /// Sends a settled receipt (on the provider's lease stream when it takes receipts there, else on
    /// <see cref="ReceiptProtocol.Id"/>); marks it delivered once acknowledged. False when it must be sent again later.
    /// </summary>
    private async Task<bool> DeliverAsync(PeerId provider, byte[] leaseId, byte[] receipt, CancellationToken ct)
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.ReceiptTimeout, _time);
            using var linked = _work.Link(timeout.Token, ct);
            if (leaseId.Length == 8
                && await ChannelTo(provider).ExchangeReceiptAsync(BinaryPrimitives.ReadUInt64BigEndian(leaseId), receipt, linked.Token) is { } answer)
            {
                return Acknowledged(provider, leaseId, ReceiptProtocol.TryDecodeAck(answer, out var lease)
                    ? lease
                    : throw new ProtocolViolationException(LeaseProtocol.IdWithReceipts, "malformed acknowledgement"), receipt);
            }
            using var dialReason = DialReason.Use(DialReason.Payment);
            await using var stream = await _host.NewStreamAsync(provider, [ReceiptProtocol.Id], linked.Token);
            return Acknowledged(provider, leaseId, await ReceiptProtocol.SendAsync(stream, receipt, linked.Token), receipt);
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            LogReceiptUndelivered(_log, provider, e.Message);
        }
        return false;
    }

    private bool Acknowledged(PeerId provider, byte[] leaseId, ReceiptAck ack, byte[] receipt)
    {
        if (ack.Delivered)
        {
            _ledger.MarkDelivered(leaseId);
            ReceiptDelivered?.Invoke(provider, receipt);
            return true;
        }
        LogReceiptRefused(_log, provider, ack.Detail);
        return false;
    }

    /// <summary>Sends every settled, unacknowledged receipt again; returns how many are now delivered.</summary>
    public Task<int> RedeliverReceiptsAsync(CancellationToken ct) => _redelivery.RedeliverAsync(ct);

    private void Record(Job job, AttemptRecord record)
    {
        lock (job.Gate)
        {
            job.Core.Record(record);
        }
        AttemptEnded?.Invoke(record);
    }

    public async ValueTask DisposeAsync()
    {
        _host.Connected -= OnConnected;
        _host.RemoveStreamHandler(AdvertisementProtocol.SampleProtocolId);
        _subscription?.Dispose();
        // Receipts still being handed over finish first (each is bounded by ReceiptTimeout), so a short-lived requester
        // such as `potluck submit` pays before it exits.
        await _deliveryWork.WhenIdleAsync();
        await _deliveryWork.StopAsync();
        // Close the lease streams first: their read loops are background work that ends when its stream does.
        LeaseChannel[] channels;
        lock (_gate)
        {
            channels = [.. _channels.Values];
            _channels.Clear();
        }
        foreach (var channel in channels)
        {
            await channel.DisposeAsync();
        }
        await _work.StopAsync();
    }

    /// <summary>A result this node computed itself.</summary>
    private sealed record TrustedRun(RunSummary Summary, ReadOnlyMemory<byte> Output, ExecutionStatus Status, int ExitCode, string? Error)
    {
        public ReadOnlyMemory<byte> Stderr { get; init; }
    }

    /// <summary>A completed lease whose attestation checked out.</summary>
    private sealed record LeaseResultInfo(PeerId Provider, byte[] LeaseId, SignedLeaseTerms SignedTerms, LeaseTerms Terms, LeaseResult Result,
        byte[] Output, SignedAttestation Attestation, byte[] AuditSecret, int AuditRatePpm, long PaidBefore = 0);

    /// <summary>One submission: what it asks for, its decisions (<see cref="RequesterJob"/>), and the run this node trusts.</summary>
    private sealed class Job(TaskSubmission submission, byte[] payload, RequesterJob core)
    {
        public TaskSubmission Submission { get; } = submission;

        public byte[] Payload { get; } = payload;

        public RequesterJob Core { get; } = core;

        /// <summary>Its place among the jobs waiting for a full window (under the client's lock); null when it has none.</summary>
        public TaskCompletionSource? WindowWaiter { get; set; }

        /// <summary>When the job was made (<see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>), for <see cref="Metrics.LeaseTimeline"/>.</summary>
        public long SubmittedAt { get; } = System.Diagnostics.Stopwatch.GetTimestamp();

        /// <summary>
        /// Guards <see cref="Core"/> (its replicas lease concurrently); taken alone or inside the client's own lock, never
        /// the other way round, so jobs do not contend with each other.
        /// </summary>
        public Lock Gate { get; } = new();

        public T Locked<T>(Func<T> f)
        {
            lock (Gate)
            {
                return f();
            }
        }

        /// <summary>This node's deterministic re-run (the job's <see cref="RequesterJob.Trusted"/> summary, with its output).</summary>
        public TrustedRun? Trusted { get; set; }

        private long Cost => Core.Cost;

        private List<AttemptRecord> History => Locked(() => Core.History.ToList());

        public SubmissionResult Finish(LeaseResultInfo lease, bool verified) => new()
        {
            Status = lease.Result.Status,
            ExitCode = lease.Result.ExitCode,
            Output = lease.Output,
            Stderr = lease.Result.Stderr ?? [],
            Provider = lease.Provider,
            Fuel = lease.Result.FuelUsed,
            Cost = Cost,
            Verified = verified,
            History = History,
            Error = Explain(lease.Result.Status, lease.Result.ExitCode, null),
        };

        public SubmissionResult Finish(TrustedRun run, PeerId self, bool verified) => new()
        {
            Status = run.Status,
            ExitCode = run.ExitCode,
            Output = run.Output,
            Stderr = run.Stderr,
            Provider = self,
            Fuel = run.Summary.FuelUsed,
            Cost = Cost,
            Verified = verified,
            History = History,
            Error = Explain(run.Status, run.ExitCode, run.Error),
        };

        private string? Explain(ExecutionStatus status, int exitCode, string? detail) => status switch
        {
            ExecutionStatus.Success => null,
            ExecutionStatus.Trapped when exitCode != 0 => $"the task exited with code {exitCode}",
            ExecutionStatus.Trapped => "the task trapped (a WebAssembly runtime error such as unreachable, division by zero or stack overflow)" + Suffix(detail),
            ExecutionStatus.OutOfFuel => $"the task ran out of fuel (limit {Submission.Fuel}); it may loop forever or need a larger --fuel",
            ExecutionStatus.OutOfMemory => $"the task hit the memory limit of {Submission.MemoryBytes} bytes",
            ExecutionStatus.OutputTooLarge => $"the task wrote more than {ComputeRuntime.MaxOutputBytes} bytes of output",
            ExecutionStatus.InvalidModule => "the module is not a valid WASI preview 1 command (not WebAssembly, unsupported imports, or no _start/memory)" + Suffix(detail),
            ExecutionStatus.TimedOut => "the task hit the provider's wall-clock limit",
            _ => status.ToString(),
        };

        private static string Suffix(string? detail) => detail is null ? "" : $": {detail}";
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Provider {Provider} returned a result a re-run contradicts: refused, not paid (proof published: {Published})")]
    private static partial void LogFraud(ILogger logger, PeerId provider, bool published);

    [LoggerMessage(Level = LogLevel.Error, Message = "Payment to {Provider} could not be settled: {Result}")]
    private static partial void LogPaymentFailed(ILogger logger, PeerId provider, string result);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Provider {Provider} refused a receipt: {Detail}")]
    private static partial void LogReceiptRefused(ILogger logger, PeerId provider, string detail);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Receipt to {Provider} not delivered yet: {Reason}")]
    private static partial void LogReceiptUndelivered(ILogger logger, PeerId provider, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Advertisement sample from {Peer} refused: {Reason}")]
    private static partial void LogSampleViolation(ILogger logger, PeerId peer, string reason);
}

/// <summary>
/// A node's book samples so far (<see cref="AdvertisementProtocol.SampleProtocolId"/>): as asker, peers asked (they spoke
/// the protocol), peers that did not, answers refused as garbage, and envelopes accepted, refused (expired, replayed, no
/// room) or skipped unverified (held already); as answerer, samples answered.
/// </summary>
public readonly record struct SampleFigures(long Asked, long Unsupported, long Garbage, long Accepted, long Refused, long Skipped, long Answered);
